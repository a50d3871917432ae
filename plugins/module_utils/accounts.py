# -*- coding: utf-8 -*-
# Copyright: trustroot.spire_tpm contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""System groups, a service user and its supplementary groups, checked and put right in one call: the
system_account module's backend.

The roles each needed a group, a look-up of the user, then a create-or-append step: three round trips on every run
for something that almost never changes. ``Accounts`` reads the account databases once (``grp``/``pwd``, i.e. NSS),
plans what differs and, unless in check mode, runs the distribution's own tools (``groupadd``, ``useradd``,
``usermod --append``) for just that. Rules an operator relies on:

* groups are created as system groups and never removed;
* an existing user is never modified except to be added to the supplementary groups asked for (a server and an
  agent on one host share the user; its shell, home and primary group are the operator's);
* a missing user is created (system user, no home directory made, a nologin shell; its primary group made with it
  as a system group when missing) only when ``create_user``; otherwise nothing is done for it and ``user_exists``
  says so;
* memberships are only ever added, never removed;
* every name is checked before anything changes: a malformed name, or a group that neither exists nor is created
  here, is an error that changes nothing.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import grp
import os
import pwd
import re

from ansible_collections.trustroot.spire_tpm.plugins.module_utils.errors import SpireTpmError

# What shadow-utils accepts by default (useradd/groupadd NAME_REGEX), without the trailing $ of machine accounts.
NAME_RE = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$")


def _group(name):
    try:
        return grp.getgrnam(name)
    except KeyError:
        return None


def _user(name):
    try:
        return pwd.getpwnam(name)
    except KeyError:
        return None


def user_groups(name):
    """Sorted names of the groups ``name`` is in (primary included), read from the group database."""
    pw = _user(name)
    if pw is None:
        return []
    out = set(g.gr_name for g in grp.getgrall() if name in g.gr_mem)
    try:
        out.add(grp.getgrgid(pw.pw_gid).gr_name)
    except KeyError:
        pass
    return sorted(out)


def _check_name(kind, name):
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise SpireTpmError("%s name %r is not a valid account name" % (kind, name),
                            "use lower-case letters, digits, '_', '.' and '-', starting with a letter or '_', "
                            "at most 32 characters")


class Accounts:
    """``groups``: system groups to ensure. ``user``: the service user (optional) with ``member_of`` supplementary
    groups; created with ``user_group``/``user_home``/``user_shell`` when missing and ``create_user``."""

    def __init__(self, groups=(), user=None, member_of=(), create_user=False, user_group=None,
                 user_home="/nonexistent", user_shell="/usr/sbin/nologin"):
        self.groups = list(dict.fromkeys(groups or []))
        self.user = user or None
        self.member_of = list(dict.fromkeys(member_of or []))
        self.create_user = bool(create_user)
        self.user_group = user_group or user
        self.user_home = user_home
        self.user_shell = user_shell
        for g in self.groups + self.member_of:
            _check_name("group", g)
        if self.user is not None:
            _check_name("user", self.user)
            if self.create_user:
                _check_name("group", self.user_group)
                for kind, path in (("user_home", self.user_home), ("user_shell", self.user_shell)):
                    if not isinstance(path, str) or not os.path.isabs(path):
                        raise SpireTpmError("%s %r is not an absolute path" % (kind, path),
                                            "give %s as an absolute path" % kind)
        elif self.member_of:
            raise SpireTpmError("member_of is given without a user", "name the user whose groups these are")

    def plan(self):
        """The steps that would bring the host to the requested state: [(description, argv)]. Raises before any
        step when a needed group would still be missing."""
        steps = []
        will_exist = set()
        for g in self.groups:
            if _group(g) is None:
                steps.append(("group %s created (system group)" % g, ["groupadd", "--system", g]))
            will_exist.add(g)
        if self.user is None:
            return steps
        pw = _user(self.user)
        if pw is None and not self.create_user:
            return steps  # nothing to do for a user that is not there and is not to be created
        if pw is None and self.user_group not in will_exist and _group(self.user_group) is None:
            # a new user's own primary group, made with it (as useradd's user groups would)
            steps.append(("group %s created (system group)" % self.user_group,
                          ["groupadd", "--system", self.user_group]))
            will_exist.add(self.user_group)
        needed = list(self.member_of) + ([self.user_group] if pw is None else [])
        missing = [g for g in needed if g not in will_exist and _group(g) is None]
        if missing:
            raise SpireTpmError("group(s) %s do not exist on the host" % ", ".join(sorted(set(missing))),
                                "create them first, or list them under 'groups' so that this module creates them")
        current = set(user_groups(self.user)) if pw is not None else set()
        if pw is None:
            current.add(self.user_group)
            steps.append(("user %s created (system user, primary group %s, home %s not created, shell %s)"
                          % (self.user, self.user_group, self.user_home, self.user_shell),
                          ["useradd", "--system", "--gid", self.user_group, "--home-dir", self.user_home,
                           "--no-create-home", "--shell", self.user_shell, self.user]))
        add = [g for g in self.member_of if g not in current]
        if add:
            steps.append(("user %s added to %s" % (self.user, ", ".join(add)),
                          ["usermod", "--append", "--groups", ",".join(add), self.user]))
        return steps

    def state(self):
        """What the host has now, for the result and the diff."""
        out = {"groups": {g: _group(g) is not None for g in self.groups}}
        if self.user is not None:
            pw = _user(self.user)
            out["user"] = None if pw is None else {
                "name": pw.pw_name, "uid": pw.pw_uid, "gid": pw.pw_gid, "home": pw.pw_dir, "shell": pw.pw_shell,
                "groups": user_groups(self.user)}
        return out

    def apply(self, run, check_mode=False):
        """Run the planned steps with ``run(argv) -> (rc, stdout, stderr)``; returns the descriptions of the steps
        (what changed, or would in check mode). A failing tool stops at that step with its message."""
        steps = self.plan()
        if check_mode:
            return [step[0] for step in steps]
        done = []
        for desc, argv in steps:
            rc, out, err = run(argv)
            if rc != 0:
                raise SpireTpmError("%s failed (rc %d): %s" % (" ".join(argv), rc, (err or out or "").strip()),
                                    "read the tool's message above; %s" % (
                                        "done before it: " + "; ".join(done) if done else "nothing was changed"))
            done.append(desc)
        return done
