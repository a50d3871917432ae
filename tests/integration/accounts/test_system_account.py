# -*- coding: utf-8 -*-
"""trustroot.spire_tpm.system_account through ansible-playbook on this machine's real account database: check mode
(nothing created), then for real, then again (nothing changes); what exists is read back with getent and id (the
system's tools, not the module's code). Bad input changes nothing. Every account is uniquely named and removed."""

import os
import subprocess
import uuid

import pytest

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="creating accounts needs root")


def _getent(db, name):
    p = subprocess.run(["getent", db, name], capture_output=True, text=True)
    return p.stdout.strip() if p.returncode == 0 else None


def _id_groups(user):
    return sorted(subprocess.run(["id", "-nG", user], capture_output=True, text=True, check=True).stdout.split())


@pytest.fixture
def names():
    tag = uuid.uuid4().hex[:8]
    n = {"user": "trtu%s" % tag, "group": "trtg%s" % tag, "extra": "trtx%s" % tag}
    yield n
    subprocess.run(["userdel", n["user"]], capture_output=True)
    for g in ("group", "extra"):
        subprocess.run(["groupdel", n[g]], capture_output=True)


def _task(name="acct", **args):
    return {"name": name, "trustroot.spire_tpm.system_account": args, "register": "out"}


def test_check_then_real_then_nothing_changes(names, run_playbook):
    args = dict(groups=[names["group"], names["extra"]], user=names["user"], create_user=True,
                user_group=names["group"], user_home="/var/lib/%s" % names["user"], member_of=[names["extra"]])
    r = run_playbook(tasks=[_task(**args)], check=True, diff=True, expect_rc=0)
    res = r.task("acct")
    assert res["changed"] is True and res["user_exists"] is True
    assert len(res["changes"]) == 4  # two groups, the user, its supplementary group
    assert _getent("group", names["group"]) is None and _getent("passwd", names["user"]) is None

    r = run_playbook(tasks=[_task(**args)], diff=True, expect_rc=0)
    res = r.task("acct")
    assert res["changed"] is True
    pw = _getent("passwd", names["user"]).split(":")
    gr = _getent("group", names["group"]).split(":")
    assert pw[3] == gr[2]  # primary group
    assert pw[5] == "/var/lib/%s" % names["user"] and pw[6] == "/usr/sbin/nologin"
    assert int(pw[2]) < 1000  # a system user
    assert not os.path.exists(pw[5])  # no home directory made
    assert _id_groups(names["user"]) == sorted([names["group"], names["extra"]])
    assert res["user"]["groups"] == sorted([names["group"], names["extra"]])

    r = run_playbook(tasks=[_task(**args)], diff=True, expect_rc=0)
    assert r.task("acct")["changed"] is False and r.task("acct")["changes"] == []


def test_existing_user_only_gets_groups_added(names, run_playbook):
    subprocess.run(["groupadd", names["group"]], check=True)
    subprocess.run(["groupadd", names["extra"]], check=True)
    subprocess.run(["useradd", "--gid", names["group"], "--shell", "/bin/sh", "--no-create-home", names["user"]],
                   check=True)
    before = _getent("passwd", names["user"])
    # create_user with other attributes: an existing user keeps its shell, home and primary group
    r = run_playbook(tasks=[_task(groups=[names["extra"]], user=names["user"], create_user=True,
                                  user_group=names["extra"], user_shell="/usr/sbin/nologin",
                                  member_of=[names["extra"]])], expect_rc=0)
    assert r.task("acct")["changes"] == ["user %s added to %s" % (names["user"], names["extra"])]
    assert _getent("passwd", names["user"]) == before
    assert _id_groups(names["user"]) == sorted([names["group"], names["extra"]])


def test_missing_user_left_missing_without_create(names, run_playbook):
    r = run_playbook(tasks=[_task(groups=[names["extra"]], user=names["user"], member_of=[names["extra"]])],
                     expect_rc=0)
    res = r.task("acct")
    assert res["user_exists"] is False and res["user"] is None
    assert res["changes"] == ["group %s created (system group)" % names["extra"]]
    assert _getent("passwd", names["user"]) is None and _getent("group", names["extra"]) is not None


@pytest.mark.parametrize("bad, words", [
    ({"member_of": ["nosuchgroupzz"]}, "do not exist on the host"),
    ({"user": "root", "create_user": False, "member_of": ["nosuchgroupzz"]}, "do not exist on the host"),
    ({"groups": ["Bad Name"]}, "not a valid account name"),
    ({"user_home": "relative/home"}, "not an absolute path"),
])
def test_bad_input_changes_nothing(names, run_playbook, bad, words):
    args = dict(groups=[names["group"]], user=names["user"], create_user=True, user_group=names["group"])
    args.update(bad)
    r = run_playbook(tasks=[_task(**args)], expect_rc=2)
    res = r.task("acct")
    assert res["failed"] and words in res["msg"] and "Traceback" not in res["msg"]
    assert _getent("group", names["group"]) is None and _getent("passwd", names["user"]) is None


def test_new_user_gets_its_primary_group_made(names, run_playbook):
    r = run_playbook(tasks=[_task(groups=[names["extra"]], user=names["user"], create_user=True,
                                  user_group=names["group"], member_of=[names["extra"]])], expect_rc=0)
    assert r.task("acct")["changes"][1] == "group %s created (system group)" % names["group"]
    gr = _getent("group", names["group"]).split(":")
    assert int(gr[2]) < 1000 and _getent("passwd", names["user"]).split(":")[3] == gr[2]
    assert _id_groups(names["user"]) == sorted([names["group"], names["extra"]])
