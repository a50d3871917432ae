"""The boot_state_baseline lookup against boot_state_baseline state=query on the same store: equal results for an
enrolled host and for one without a baseline; a damaged store file fails the task, naming it."""

FQCN = "trustroot.spire_tpm."

BOOT_STATE = {
    "pcr_selection": [0, 7],
    "pcrs": {"sha256": {"0": "a" * 64, "7": "b" * 64}},
    "event_log": None,
}


def lookup_task(store, hosts):
    return {"name": "lookup", "ansible.builtin.set_fact": {
        "found": "{{ query('trustroot.spire_tpm.boot_state_baseline', *%r, store_dir=%r) }}" % (hosts, str(store))}}


def query_task(store, host):
    return {"name": "query-" + host, FQCN + "boot_state_baseline": {"store_dir": str(store), "host": host,
                                                                    "state": "query"},
            "register": "q_" + host.replace("-", "_")}


def test_lookup_equals_module_query(run_playbook, tmp_path):
    store = tmp_path / "store"
    enrol = {"name": "enrol", FQCN + "boot_state_baseline": {"store_dir": str(store), "host": "node1",
                                                             "boot_state": BOOT_STATE, "reason": "first"}}
    res = run_playbook(tasks=[enrol, query_task(store, "node1"), query_task(store, "node-2"),
                              lookup_task(store, ["node1", "node-2"])], expect_rc=0)
    found = res.task("lookup")["ansible_facts"]["found"]
    for got, host in zip(found, ["node1", "node-2"]):
        module = res.task("query-" + host)
        # the module's keys (Ansible adds the path's owner, mode ... to a module result with a 'path')
        keys = ("baseline_action", "baseline", "version", "history", "path", "enforcement")
        assert dict((k, got[k]) for k in keys) == dict((k, module[k]) for k in keys)
        assert got["changed"] is False
    assert found[0]["version"] == 1 and found[0]["baseline"]["reason"] == "first"
    assert found[1]["baseline"] is None and found[1]["history"] == []


def test_damaged_store_fails(run_playbook, tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    (store / "node1.json").write_text('{"schema": 1, "host": "node1", "cur')
    res = run_playbook(tasks=[lookup_task(store, ["node1"])], expect_rc=2)
    msg = res.task("lookup")["msg"]
    assert str(store / "node1.json") in msg and "not valid JSON" in msg and "Fix:" in msg
