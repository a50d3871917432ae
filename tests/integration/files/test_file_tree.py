# -*- coding: utf-8 -*-
"""trustroot.spire_tpm.file_tree through ansible-playbook: check mode, then for real, then again (nothing changes);
what is on disk is read back with os.stat / the bytes themselves, not with the module's code. Bad input changes
nothing."""

import os
import pwd
import stat

import pytest

NOBODY = pwd.getpwnam("nobody")

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="owner changes need root")


def _task(directories=(), files=(), name="tree"):
    return {"name": name, "trustroot.spire_tpm.file_tree": {"directories": list(directories), "files": list(files)},
            "register": "out"}


def _mode(p):
    return stat.S_IMODE(os.stat(str(p)).st_mode)


def _tree(tmp_path):
    src = tmp_path / "blob.priv"
    src.write_bytes(b"\x00\x01TPM-wrapped key blob\xff")
    dirs = [{"path": str(tmp_path / "opt"), "owner": "root", "group": "root", "mode": "0755"},
            {"path": str(tmp_path / "opt" / "data"), "owner": "nobody", "group": str(NOBODY.pw_gid), "mode": "0700"},
            # the same directory twice, alike (a socket directory that is the run directory): once
            {"path": str(tmp_path / "opt" / "data"), "owner": "nobody", "group": str(NOBODY.pw_gid), "mode": "0700"}]
    files = [{"path": str(tmp_path / "opt" / "facts.json"), "content": '{"a": 1}\n', "owner": "root",
              "group": "root", "mode": "0644"},
             {"path": str(tmp_path / "opt" / "data" / "blob.priv.previous"), "copy_from": str(src),
              "owner": "nobody", "group": str(NOBODY.pw_gid), "mode": "0600"}]
    return dirs, files, src


def test_check_then_real_then_nothing_changes(tmp_path, run_playbook):
    dirs, files, src = _tree(tmp_path)
    r = run_playbook(tasks=[_task(dirs, files)], check=True, diff=True, expect_rc=0)
    res = r.task("tree")
    assert res["changed"] is True and not (tmp_path / "opt").exists()
    assert [c["path"] for c in res["changes"]] == [d["path"] for d in dirs[:2]] + [f["path"] for f in files]
    assert "TPM-wrapped" not in res["diff"]["after"] + res["diff"]["before"]  # never contents

    r = run_playbook(tasks=[_task(dirs, files)], diff=True, expect_rc=0)
    res = r.task("tree")
    assert res["changed"] is True and res["checked"] == 4
    assert all(c["changes"] == ["created"] for c in res["changes"])
    data = tmp_path / "opt" / "data"
    assert _mode(tmp_path / "opt") == 0o755 and _mode(data) == 0o700
    assert os.stat(str(data)).st_uid == NOBODY.pw_uid and os.stat(str(data)).st_gid == NOBODY.pw_gid
    assert (tmp_path / "opt" / "facts.json").read_text() == '{"a": 1}\n'
    assert _mode(tmp_path / "opt" / "facts.json") == 0o644
    copy = data / "blob.priv.previous"
    assert copy.read_bytes() == src.read_bytes() and _mode(copy) == 0o600
    assert os.stat(str(copy)).st_uid == NOBODY.pw_uid
    assert sorted(os.listdir(str(data))) == ["blob.priv.previous"]  # no temporary file left

    r = run_playbook(tasks=[_task(dirs, files)], diff=True, expect_rc=0)
    assert r.task("tree")["changed"] is False and r.task("tree")["changes"] == []


def test_only_what_differs_is_touched(tmp_path, run_playbook):
    dirs, files, src = _tree(tmp_path)
    run_playbook(tasks=[_task(dirs, files)], expect_rc=0)
    facts = tmp_path / "opt" / "facts.json"
    os.chmod(str(facts), 0o600)
    ino = os.stat(str(facts)).st_ino
    src.write_bytes(b"a renewed blob")
    r = run_playbook(tasks=[_task(dirs, files)], diff=True, expect_rc=0)
    res = r.task("tree")
    assert {c["path"]: c["changes"] for c in res["changes"]} == {
        str(facts): ["mode"], files[1]["path"]: ["content"]}
    assert _mode(facts) == 0o644 and os.stat(str(facts)).st_ino == ino  # attributes only: same file
    assert (tmp_path / "opt" / "data" / "blob.priv.previous").read_bytes() == b"a renewed blob"
    assert "0600" in res["diff"]["before"] and "mode" in res["diff"]["after"]


@pytest.mark.parametrize("bad, words", [
    ({"files": [{"path": "relative/x", "content": "x", "mode": "0644"}]}, "absolute path"),
    ({"directories": [{"path": "/PLACEHOLDER/d"}]}, "has no mode"),
    ({"files": [{"path": "/PLACEHOLDER/f", "mode": "0644"}]}, "exactly one of content and copy_from"),
    ({"directories": [{"path": "/PLACEHOLDER/d", "mode": "0755", "owner": "no-such-user-xyz"}]}, "does not exist"),
    ({"directories": [{"path": "/PLACEHOLDER/d", "mode": "0755"}, {"path": "/PLACEHOLDER/d", "mode": "0700"}]},
     "listed twice with different settings"),
    ({"files": [{"path": "/PLACEHOLDER/f", "copy_from": "/PLACEHOLDER/missing", "mode": "0600"}]}, "does not exist"),
    ({"directories": [{"path": "/PLACEHOLDER/file-here", "mode": "0755"}]}, "is not a directory"),
    ({"directories": [{"path": "/PLACEHOLDER/d", "mode": "rwx"}]}, "not an octal file mode"),
])
def test_bad_input_is_a_clear_error_and_changes_nothing(tmp_path, run_playbook, bad, words):
    tmp_path = tmp_path / "work"  # the playbook itself is written beside it
    tmp_path.mkdir()
    (tmp_path / "file-here").write_text("x")
    args = {k: [{kk: (vv.replace("/PLACEHOLDER", str(tmp_path)) if isinstance(vv, str) else vv)
                 for kk, vv in e.items()} for e in v] for k, v in bad.items()}
    # a first, valid directory in the same call must not be created either
    args.setdefault("directories", []).insert(0, {"path": str(tmp_path / "first"), "mode": "0755"})
    before = sorted(os.listdir(str(tmp_path)))
    r = run_playbook(tasks=[{"name": "tree", "trustroot.spire_tpm.file_tree": args}], expect_rc=2)
    res = r.task("tree")
    assert res.get("failed") is True and words in res["msg"], res
    assert "Traceback" not in res["msg"]
    assert sorted(os.listdir(str(tmp_path))) == before


def test_show_diff_puts_text_in_the_diff_only_when_asked(tmp_path, run_playbook):
    unit = {"path": str(tmp_path / "x.service"), "content": "[Service]\nExecStart=/bin/true\n", "mode": "0644",
            "show_diff": True}
    env = {"path": str(tmp_path / "x.env"), "content": "TOKEN=s3cret-never-shown\n", "mode": "0600"}
    r = run_playbook(tasks=[_task(files=[unit, env])], diff=True, expect_rc=0)
    d = r.task("tree")["diff"]
    assert "ExecStart=/bin/true" in d["after"] and "s3cret-never-shown" not in d["after"] + d["before"]
    unit["content"] = "[Service]\nExecStart=/bin/false\n"
    r = run_playbook(tasks=[_task(files=[unit, env])], diff=True, expect_rc=0)
    d = r.task("tree")["diff"]
    assert "/bin/true" in d["before"] and "/bin/false" in d["after"]
    assert [c["path"] for c in r.task("tree")["changes"]] == [unit["path"]]


def _links(tmp_path):
    return [{"path": str(tmp_path / "opt" / "current"), "src": "versions/1.2.3", "owner": "root", "group": "root"},
            {"path": str(tmp_path / "opt" / "bin"), "src": "current/bin", "owner": "root", "group": "root"}]


def _link_task(dirs, links, name="tree"):
    return {"name": name, "trustroot.spire_tpm.file_tree": {"directories": dirs, "links": links}, "register": "out"}


def test_links_check_then_real_then_nothing_changes(tmp_path, run_playbook):
    opt = tmp_path / "opt"
    dirs = [{"path": str(opt), "owner": "root", "group": "root", "mode": "0755"},
            {"path": str(opt / "versions" / "1.2.3" / "bin"), "owner": "root", "group": "root", "mode": "0755"}]
    links = _links(tmp_path)
    r = run_playbook(tasks=[_link_task(dirs, links)], check=True, diff=True, expect_rc=0)
    res = r.task("tree")
    assert res["changed"] is True and not opt.exists()
    assert [(c["path"], c["kind"]) for c in res["changes"]][-2:] == [(links[0]["path"], "link"),
                                                                     (links[1]["path"], "link")]
    assert "link -> versions/1.2.3 created" in res["diff"]["after"]

    r = run_playbook(tasks=[_link_task(dirs, links)], diff=True, expect_rc=0)
    res = r.task("tree")
    assert res["changed"] is True and res["checked"] == 4
    assert os.readlink(links[0]["path"]) == "versions/1.2.3" and os.readlink(links[1]["path"]) == "current/bin"
    st = os.lstat(links[0]["path"])
    assert stat.S_ISLNK(st.st_mode) and (st.st_uid, st.st_gid) == (0, 0)
    assert os.path.isdir(links[1]["path"])  # bin -> current/bin -> versions/1.2.3/bin resolves
    assert sorted(os.listdir(str(opt))) == ["bin", "current", "versions"]  # no temporary link left

    r = run_playbook(tasks=[_link_task(dirs, links)], diff=True, expect_rc=0)
    assert r.task("tree")["changed"] is False and r.task("tree")["changes"] == []


def test_a_wrong_link_is_put_right(tmp_path, run_playbook):
    opt = tmp_path / "opt"
    (opt / "versions" / "1.0.0").mkdir(parents=True)
    os.symlink("versions/1.0.0", str(opt / "current"))
    os.symlink("current/bin", str(opt / "bin"))
    os.lchown(str(opt / "bin"), NOBODY.pw_uid, -1)  # right target, wrong owner of the link itself
    links = _links(tmp_path)
    r = run_playbook(tasks=[_link_task([], links)], check=True, diff=True, expect_rc=0)
    res = r.task("tree")
    assert {c["path"]: c["changes"] for c in res["changes"]} == {links[0]["path"]: ["target"],
                                                                  links[1]["path"]: ["owner"]}
    assert os.readlink(links[0]["path"]) == "versions/1.0.0"  # check mode changed nothing
    assert "link -> versions/1.0.0" in res["diff"]["before"]

    r = run_playbook(tasks=[_link_task([], links)], expect_rc=0)
    assert r.task("tree")["changed"] is True
    assert os.readlink(links[0]["path"]) == "versions/1.2.3"
    assert os.lstat(links[1]["path"]).st_uid == 0 and os.readlink(links[1]["path"]) == "current/bin"
    assert sorted(os.listdir(str(opt))) == ["bin", "current", "versions"]
    r = run_playbook(tasks=[_link_task([], links)], expect_rc=0)
    assert r.task("tree")["changed"] is False


@pytest.mark.parametrize("in_the_way", ["file", "directory"])
def test_a_file_or_directory_where_a_link_belongs_is_refused(tmp_path, run_playbook, in_the_way):
    opt = tmp_path / "opt"
    opt.mkdir()
    current = opt / "current"
    if in_the_way == "file":
        current.write_text("not a link\n")
    else:
        current.mkdir()
        (current / "data").write_text("kept\n")
    links = _links(tmp_path)
    r = run_playbook(tasks=[_link_task([{"path": str(opt / "new"), "mode": "0755"}], links)], expect_rc=2)
    res = r.task("tree")
    assert res.get("failed") is True and "is not a symbolic link" in res["msg"] and "move it away" in res["msg"]
    assert "Traceback" not in res["msg"]
    st = os.lstat(str(current))
    assert not stat.S_ISLNK(st.st_mode)
    assert (current.read_text() == "not a link\n") if in_the_way == "file" else \
        ((current / "data").read_text() == "kept\n")
    assert sorted(os.listdir(str(opt))) == ["current"]  # nothing else was made, not even the directory before it


def test_a_missing_owner_is_returned_for_the_role_to_act_on(tmp_path, run_playbook):
    d = {"path": str(tmp_path / "d"), "mode": "0700", "owner": "no-such-user-xyz"}
    r = run_playbook(tasks=[{"name": "tree", "trustroot.spire_tpm.file_tree": {"directories": [d]}}], expect_rc=2)
    res = r.task("tree")
    assert res["failed"] is True and res["missing_owner"] == "no-such-user-xyz"
    assert not (tmp_path / "d").exists()
