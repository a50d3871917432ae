# -*- coding: utf-8 -*-
"""trustroot.spire_tpm.converged through ansible-playbook on real files in a tmp dir and real accounts: check (no
record), record in check mode (nothing written), for real, again (unchanged), then check says converged. Each kind of
drift made on the host is named in the reasons; a corrupted or unreadable record is "not converged" with a reason,
never a traceback. What is on disk is read back with os/json, not with the module's code. Certificates are made here
with cryptography."""

import datetime
import json
import os
import pwd
import shutil
import stat
import subprocess
import uuid

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the record is root:root; accounts need root")

NOBODY = pwd.getpwnam("nobody")


def _cert_pem(days_left, lifetime_days=90):
    now = datetime.datetime.now(datetime.timezone.utc)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "devid")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now + datetime.timedelta(days=days_left - lifetime_days))
            .not_valid_after(now + datetime.timedelta(days=days_left)).sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture
def accounts():
    tag = uuid.uuid4().hex[:8]
    n = {"user": "trcu%s" % tag, "group": "trcg%s" % tag}
    subprocess.run(["groupadd", "--system", n["group"]], check=True)
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "--groups", n["group"],
                    n["user"]], check=True)
    yield n
    subprocess.run(["userdel", n["user"]], capture_output=True)
    for g in (n["group"], n["user"]):
        subprocess.run(["groupdel", g], capture_output=True)


@pytest.fixture
def host(tmp_path, accounts):
    """A small agent tree: a config file, two versions and the `current` link, an optional file left missing, a
    DevID certificate with 60 of 90 days left; the record under two missing directories."""
    root = tmp_path / "host"
    (root / "etc").mkdir(parents=True)
    (root / "opt" / "versions" / "1.13.3").mkdir(parents=True)
    (root / "opt" / "versions" / "1.15.3").mkdir()
    conf = root / "etc" / "agent.conf"
    conf.write_text("agent { trust_domain = \"example.org\" }\n")
    os.chmod(conf, 0o640)
    os.symlink("versions/1.13.3", root / "opt" / "current")
    cert = root / "etc" / "devid.crt"
    cert.write_bytes(_cert_pem(60))
    paths = [str(conf), str(root / "opt" / "current"), str(root / "opt" / "versions"), str(root / "etc" / "opt.conf")]
    args = {"path": str(tmp_path / "state" / "converged" / "spire_agent.json"), "inputs_digest": "sha256:abc",
            "paths": paths, "users": [accounts["user"]], "groups": [accounts["group"]]}
    checks = {"certificates": [{"path": str(cert), "renew_before": "720h"}],
              "commands": [{"name": "agent health", "argv": ["sh", "-c", "exit 0"]}]}
    return {"root": root, "conf": conf, "cert": cert, "args": args, "checks": checks, "accounts": accounts}


def _task(name="conv", **args):
    return {"name": name, "trustroot.spire_tpm.converged": args, "register": "out"}


def _record(run_playbook, host, **more):
    args = dict(host["args"], state="record", **more)
    return run_playbook(tasks=[_task(**args)], expect_rc=0).task("conv")


def _check(run_playbook, host, check=False, **more):
    args = dict(host["args"], **host["checks"])
    args.update(more)
    return run_playbook(tasks=[_task(**args)], check=check, expect_rc=0).task("conv")


def test_check_then_record_check_mode_then_real_then_unchanged(host, run_playbook, tmp_path):
    record_path = host["args"]["path"]
    res = _check(run_playbook, host)
    assert res["converged"] is False and res["reasons"] == [
        "no record yet", "commands not run ('agent health'): the state already differs from the record"]
    assert res["changed"] is False

    rec_args = dict(host["args"], state="record")
    r = run_playbook(tasks=[_task(**rec_args)], check=True, diff=True, expect_rc=0)
    res = r.task("conv")
    assert res["changed"] is True and res["diff"]["before"] == ""
    assert json.loads(res["diff"]["after"]) == res["record"]
    assert not os.path.exists(tmp_path / "state")      # nothing written, no directory made

    r = run_playbook(tasks=[_task(**rec_args)], diff=True, expect_rc=0)
    res = r.task("conv")
    assert res["changed"] is True
    for d in (tmp_path / "state", tmp_path / "state" / "converged"):
        st = os.stat(d)
        assert stat.S_IMODE(st.st_mode) == 0o700 and (st.st_uid, st.st_gid) == (0, 0)
    st = os.stat(record_path)
    assert stat.S_IMODE(st.st_mode) == 0o600 and (st.st_uid, st.st_gid) == (0, 0)
    with open(record_path) as f:
        on_disk = json.load(f)
    assert on_disk == res["record"]
    assert sorted(on_disk) == ["groups", "inputs_digest", "paths", "schema", "users"]
    conf_st = os.lstat(host["conf"])
    assert on_disk["paths"][str(host["conf"])] == {
        "type": "file", "mode": "0640", "uid": conf_st.st_uid, "gid": conf_st.st_gid,
        "sha256": subprocess.run(["sha256sum", str(host["conf"])], capture_output=True, text=True,
                                 check=True).stdout.split()[0]}
    assert on_disk["paths"][str(host["root"] / "opt" / "current")]["target"] == "versions/1.13.3"
    assert on_disk["paths"][str(host["root"] / "etc" / "opt.conf")] == {"type": "missing"}
    user = host["accounts"]["user"]
    pw = pwd.getpwnam(user)
    id_groups = sorted(subprocess.run(["id", "-nG", user], capture_output=True, text=True,
                                      check=True).stdout.split())
    assert on_disk["users"][user] == {"uid": pw.pw_uid, "gid": pw.pw_gid, "groups": id_groups}
    group = host["accounts"]["group"]
    getent = subprocess.run(["getent", "group", group], capture_output=True, text=True, check=True).stdout.strip()
    assert on_disk["groups"][group] == {"gid": int(getent.split(":")[2]), "members": [user]}
    assert "example.org" not in open(record_path).read()    # never file contents

    # the same state again: nothing changes (the paths in another order, one twice)
    again = dict(rec_args, paths=list(reversed(host["args"]["paths"])) + [host["args"]["paths"][0]])
    r = run_playbook(tasks=[_task(**again)], diff=True, expect_rc=0)
    assert r.task("conv")["changed"] is False and "diff" not in r.task("conv")

    for check_mode in (False, True):
        res = _check(run_playbook, host, check=check_mode)
        assert res["converged"] is True and res["reasons"] == [] and res["changed"] is False


def _edit(h):
    h["conf"].write_text("agent { trust_domain = \"evil.org\" }\n")


def _rm_user_from_group(h):
    subprocess.run(["gpasswd", "-d", h["accounts"]["user"], h["accounts"]["group"]], check=True,
                   capture_output=True)


DRIFTS = [
    ("content edited", _edit, {}, ["{conf}: content differs from the record"]),
    ("mode changed", lambda h: os.chmod(h["conf"], 0o644), {}, ["{conf}: mode differs (recorded: 0640; now: 0644)"]),
    ("owner changed", lambda h: os.chown(h["conf"], NOBODY.pw_uid, -1), {},
     ["{conf}: owner differs (recorded: uid 0; now: uid %d)" % NOBODY.pw_uid]),
    ("link retargeted", lambda h: (os.unlink(h["root"] / "opt" / "current"),
                                   os.symlink("versions/1.15.3", h["root"] / "opt" / "current")), {},
     ["{root}/opt/current: link target differs (recorded: versions/1.13.3; now: versions/1.15.3)"]),
    ("file removed", lambda h: os.unlink(h["conf"]), {}, ["{conf}: was a file, now missing"]),
    ("optional file appeared", lambda h: (h["root"] / "etc" / "opt.conf").write_text("x"), {},
     ["{root}/etc/opt.conf: was missing, now a file"]),
    ("directory replaced by a file", lambda h: (shutil.rmtree(h["root"] / "opt" / "versions"),
                                                (h["root"] / "opt" / "versions").write_text("x")), {},
     ["{root}/opt/versions: was a directory, now a file"]),
    ("path list changed", None, {"paths": "+new"},
     ["paths asked differ from the record (not recorded: {root}/etc/new.conf)"]),
    ("inputs digest changed", None, {"inputs_digest": "sha256:def"}, ["inputs changed since the record"]),
    ("user removed from a group", _rm_user_from_group, {},
     ["user {user}: supplementary groups differ (recorded: {group},{user}; now: {user})",
      "group {group}: members differ (recorded: {user}; now: )"]),
    ("certificate due", lambda h: h["cert"].write_bytes(_cert_pem(20)), {}, ["certificate {cert}: due for renewal"]),
    ("certificate due by default", None, {"certificates": "default"}, ["certificate {cert}: due for renewal"]),
    ("certificate unreadable", lambda h: h["cert"].write_text("not a certificate"), {},
     ["certificate {cert}: is neither a PEM bundle nor a DER certificate"]),
    ("health command failing", None,
     {"commands": [{"name": "agent health", "argv": ["sh", "-c", "echo 'socket missing' >&2; exit 1"]}]},
     ["command 'agent health' exited 1: socket missing"]),
    ("health command timing out", None, {"commands": [{"name": "agent health", "argv": ["sleep", "30"],
                                                       "timeout": 1}]},
     ["command 'agent health' timed out after 1 s"]),
    ("health command missing", None, {"commands": [{"name": "agent health", "argv": ["/nonexistent/agent"]}]},
     ["command 'agent health' cannot be started (/nonexistent/agent: No such file or directory)"]),
]


@pytest.mark.parametrize("label, drift, change, expected", DRIFTS, ids=[d[0] for d in DRIFTS])
def test_drift_is_detected(host, run_playbook, label, drift, change, expected):
    _record(run_playbook, host)
    assert _check(run_playbook, host)["converged"] is True
    if drift:
        drift(host)
    more = dict(change)
    if more.get("paths") == "+new":
        more["paths"] = host["args"]["paths"] + [str(host["root"] / "etc" / "new.conf")]
    if more.get("certificates") == "default":      # 60 of 90 days left, a third is 30: not due; 20 left: due
        host["cert"].write_bytes(_cert_pem(20))
        more["certificates"] = [{"path": str(host["cert"])}]
    res = _check(run_playbook, host, **more)
    assert res["converged"] is False and res["changed"] is False
    fmt = {"conf": host["conf"], "root": host["root"], "cert": host["cert"], **host["accounts"]}
    wanted = [e.format(**fmt) for e in expected]
    for w in wanted:
        assert any(r.startswith(w) for r in res["reasons"]), (w, res["reasons"])
    others = [r for r in res["reasons"] if not any(r.startswith(w) for w in wanted)]
    if any(w.startswith("command ") for w in wanted):
        assert others == []
    else:
        # the health command is not run once anything else differs, and the reasons say so
        assert others == ["commands not run ('agent health'): the state already differs from the record"]


def test_commands_run_only_when_the_rest_matches(host, run_playbook, tmp_path):
    marker = tmp_path / "ran"
    _record(run_playbook, host)
    _edit(host)
    res = _check(run_playbook, host, commands=[{"name": "probe", "argv": ["touch", str(marker)]}])
    assert res["converged"] is False and not marker.exists()


def test_many_reasons_are_capped(host, run_playbook):
    _record(run_playbook, host)
    extra = ["/nonexistent/p%02d" % i for i in range(30)]
    res = _check(run_playbook, host, paths=host["args"]["paths"] + extra, inputs_digest="other")
    assert res["reasons"][0] == "inputs changed since the record"
    assert len(res["reasons"]) <= 20


@pytest.mark.parametrize("damage, words", [
    (lambda p: open(p, "w").write("{ truncated"), "is not valid JSON"),
    (lambda p: open(p, "w").write(json.dumps({"schema": 99})), "has schema 99, this module reads schema 1"),
    (lambda p: os.chmod(p, 0o644), "is not root:root 0600"),
    (lambda p: (os.unlink(p), os.mkdir(p)), "is not a regular file"),
    (lambda p: (os.rename(p, p + ".real"), os.symlink(p + ".real", p)), "is a symbolic link, not a file"),
])
def test_damaged_record_is_not_converged(host, run_playbook, damage, words):
    _record(run_playbook, host)
    damage(host["args"]["path"])
    res = _check(run_playbook, host)
    assert res["converged"] is False and any(words in r for r in res["reasons"]), res["reasons"]
    assert not any("Traceback" in r for r in res["reasons"])
    if not os.path.isdir(host["args"]["path"]):
        # the role's full run records again, which puts a damaged record right
        assert _record(run_playbook, host)["changed"] is True
        assert _check(run_playbook, host)["converged"] is True


def test_record_over_a_directory_fails_clearly(host, run_playbook):
    os.makedirs(host["args"]["path"])
    r = run_playbook(tasks=[_task(**dict(host["args"], state="record"))], expect_rc=2)
    res = r.task("conv")
    assert res["failed"] and "cannot read" in res["msg"] and "Traceback" not in res.get("module_stderr", "")


def test_absent(host, run_playbook):
    _record(run_playbook, host)
    args = {"path": host["args"]["path"], "state": "absent"}
    r = run_playbook(tasks=[_task(**args)], check=True, diff=True, expect_rc=0)
    res = r.task("conv")
    assert res["changed"] is True and os.path.exists(args["path"]) and res["diff"]["after"] == ""
    assert json.loads(res["diff"]["before"])["inputs_digest"] == "sha256:abc"
    r = run_playbook(tasks=[_task(**args), _task(name="again", **args)], expect_rc=0)
    assert r.task("conv")["changed"] is True and r.task("again")["changed"] is False
    assert not os.path.exists(args["path"]) and os.path.isdir(os.path.dirname(args["path"]))
    assert _check(run_playbook, host)["reasons"][0] == "no record yet"


@pytest.mark.parametrize("bad, words", [
    ({"path": "relative/r.json"}, "record path 'relative/r.json' is not an absolute path"),
    ({"paths": ["etc/agent.conf"]}, "path 'etc/agent.conf' is not an absolute path"),
    ({"commands": [{"name": "h", "argv": []}]}, "command 'h' has an empty or non-string argv"),
    ({"certificates": [{"path": "/etc/x.crt", "renew_before": "a month"}]}, "'a month' is not a duration"),
    ({"inputs_digest": None}, "inputs_digest"),
])
def test_bad_input_changes_nothing(host, run_playbook, tmp_path, bad, words):
    args = dict(host["args"], state="record")
    args.update(bad)
    if args["inputs_digest"] is None:
        del args["inputs_digest"]
    r = run_playbook(tasks=[_task(**args)], expect_rc=2)
    res = r.task("conv")
    assert res["failed"] and words in res["msg"], res["msg"]
    assert not os.path.exists(tmp_path / "state")
