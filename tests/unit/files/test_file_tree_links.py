# -*- coding: utf-8 -*-
"""FileTree's symbolic links (module_utils/file_tree.py) on a temporary directory: plan, apply, refusals, the atomic
replacement of a wrong link. What is on disk is read back with os.readlink / os.lstat, never with FileTree itself."""

import os
import pwd
import stat

import pytest

from ansible_collections.trustroot.spire_tpm.plugins.module_utils import file_tree as ft
from ansible_collections.trustroot.spire_tpm.plugins.module_utils.errors import SpireTpmError


def _tree(links, directories=(), files=()):
    return ft.FileTree(list(directories), list(files), links)


def test_missing_links_are_planned_then_made(tmp_path):
    (tmp_path / "versions" / "1.2.3" / "bin").mkdir(parents=True)
    links = [{"path": str(tmp_path / "current"), "src": "versions/1.2.3"},
             {"path": str(tmp_path / "bin"), "src": "current/bin"}]
    tree = _tree(links)
    planned = tree.apply(check_mode=True)
    assert planned == [{"path": str(tmp_path / "current"), "kind": "link", "changes": ["created"]},
                       {"path": str(tmp_path / "bin"), "kind": "link", "changes": ["created"]}]
    assert not os.path.lexists(str(tmp_path / "current"))  # check mode changes nothing
    assert _tree(links).apply() == planned
    assert os.readlink(str(tmp_path / "current")) == "versions/1.2.3"
    assert os.readlink(str(tmp_path / "bin")) == "current/bin"
    assert os.path.isdir(str(tmp_path / "bin"))  # resolves through current
    assert _tree(links).apply() == []  # again: nothing


def test_a_wrong_link_is_replaced_by_rename_and_nothing_is_left_behind(tmp_path):
    link = tmp_path / "current"
    os.symlink("versions/1.0.0", str(link))
    before = sorted(os.listdir(str(tmp_path)))
    tree = _tree([{"path": str(link), "src": "versions/2.0.0"}])
    diff = tree.diff()
    assert "link -> versions/1.0.0" in diff["before"] and "link -> versions/2.0.0 target" in diff["after"]
    assert tree.apply() == [{"path": str(link), "kind": "link", "changes": ["target"]}]
    assert os.readlink(str(link)) == "versions/2.0.0"  # dangling is fine: src need not exist
    assert sorted(os.listdir(str(tmp_path))) == before  # no temporary link left


def test_a_link_to_a_directory_is_replaced_not_followed(tmp_path):
    (tmp_path / "versions" / "a").mkdir(parents=True)
    (tmp_path / "versions" / "b").mkdir(parents=True)
    os.symlink("versions/a", str(tmp_path / "current"))
    _tree([{"path": str(tmp_path / "current"), "src": "versions/b"}]).apply()
    assert os.readlink(str(tmp_path / "current")) == "versions/b"
    assert os.listdir(str(tmp_path / "versions" / "a")) == []  # nothing was created inside the old target


@pytest.mark.parametrize("make, kind", [
    (lambda p: p.write_text("data"), "a regular file"),
    (lambda p: p.mkdir(), "a directory"),
])
def test_a_file_or_directory_in_the_way_is_refused_before_anything_changes(tmp_path, make, kind):
    in_the_way = tmp_path / "current"
    make(in_the_way)
    first = tmp_path / "first"
    tree = _tree([{"path": str(tmp_path / "bin"), "src": "current/bin"},
                  {"path": str(in_the_way), "src": "versions/1.2.3"}],
                 directories=[{"path": str(first), "mode": "0755"}])
    with pytest.raises(SpireTpmError) as err:
        tree.apply()
    assert "is not a symbolic link (it is %s)" % kind in str(err.value)
    assert "move it away" in str(err.value)
    assert not os.path.lexists(str(first)) and not os.path.lexists(str(tmp_path / "bin"))
    assert not os.path.islink(str(in_the_way))


@pytest.mark.parametrize("spec, words", [
    ({"path": "relative/current", "src": "x"}, "absolute path"),
    ({"path": "/PLACEHOLDER/current"}, "needs 'src'"),
    ({"path": "/PLACEHOLDER/current", "src": ""}, "needs 'src'"),
    ({"path": "/PLACEHOLDER/current", "src": "x", "mode": "0777"}, "has a mode"),
    ({"path": "/PLACEHOLDER/current", "src": "x", "content": "x"}, "has 'content'"),
    ({"path": "/PLACEHOLDER/current", "src": "x", "owner": "no-such-user-xyz"}, "does not exist"),
])
def test_bad_link_entries_are_refused(tmp_path, spec, words):
    spec = {k: v.replace("/PLACEHOLDER", str(tmp_path)) for k, v in spec.items()}
    with pytest.raises(SpireTpmError) as err:
        _tree([spec])
    assert words in str(err.value)


def test_a_missing_owner_is_named_in_the_error_details(tmp_path):
    with pytest.raises(SpireTpmError) as err:
        _tree([], directories=[{"path": str(tmp_path / "d"), "mode": "0700", "owner": "no-such-user-xyz"}])
    assert err.value.details == {"missing_owner": "no-such-user-xyz"}
    with pytest.raises(SpireTpmError) as err:
        _tree([], directories=[{"path": str(tmp_path / "d"), "mode": "0700", "group": "no-such-group-xyz"}])
    assert err.value.details == {"missing_group": "no-such-group-xyz"}


def test_a_file_entry_with_src_points_to_links(tmp_path):
    with pytest.raises(SpireTpmError) as err:
        _tree([], files=[{"path": str(tmp_path / "f"), "mode": "0644", "content": "x", "src": "y"}])
    assert "list symbolic links under 'links'" in str(err.value)


def test_the_same_path_as_link_and_directory_is_refused(tmp_path):
    with pytest.raises(SpireTpmError) as err:
        _tree([{"path": str(tmp_path / "x"), "src": "a"}], directories=[{"path": str(tmp_path / "x"), "mode": "0755"}])
    assert "listed twice with different settings" in str(err.value)
    # alike twice is once
    tree = _tree([{"path": str(tmp_path / "x"), "src": "a"}, {"path": str(tmp_path / "x"), "src": "a"}])
    assert len(tree.entries) == 1


def test_a_link_in_a_missing_directory_is_a_clear_error(tmp_path):
    with pytest.raises(SpireTpmError) as err:
        _tree([{"path": str(tmp_path / "no" / "current"), "src": "a"}]).apply()
    assert "does not exist" in str(err.value)


@pytest.mark.skipif(os.geteuid() != 0, reason="owner changes need root")
def test_the_links_own_owner_is_set_without_touching_the_target(tmp_path):
    nobody = pwd.getpwnam("nobody")
    target = tmp_path / "target"
    target.mkdir()
    link = tmp_path / "current"
    os.symlink("target", str(link))
    tree = _tree([{"path": str(link), "src": "target", "owner": "nobody", "group": str(nobody.pw_gid)}])
    assert tree.apply() == [{"path": str(link), "kind": "link", "changes": ["owner", "group"]}]
    st = os.lstat(str(link))
    assert stat.S_ISLNK(st.st_mode) and (st.st_uid, st.st_gid) == (nobody.pw_uid, nobody.pw_gid)
    assert os.stat(str(target)).st_uid == 0  # the target is not chowned
    # a new or replaced link gets its owner before it is visible
    tree = _tree([{"path": str(link), "src": "elsewhere", "owner": "nobody"}])
    assert tree.apply() == [{"path": str(link), "kind": "link", "changes": ["target"]}]
    assert os.lstat(str(link)).st_uid == nobody.pw_uid and os.readlink(str(link)) == "elsewhere"
