#!/usr/bin/env python3
# -*- coding: utf-8 -*-
# Copyright: trustroot.spire_tpm contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the scenario does to a lab host's "firmware" (run on the controller, as root, with the lab's paths).

    boot_events.py --root REPO --log LOG --tcti TCTI db-update
        A Secure Boot db update, as the firmware measures it: an EV_EFI_VARIABLE_DRIVER_CONFIG event for ``db`` holding
        one more certificate is appended to PCR 7's events in the host's log, and its digests are extended into the
        host's swtpm (PCR 7 changes in both banks; the log still replays).
    boot_events.py --root REPO --log LOG [--db-updated] alter-digest
        The sha256 digest of the SecureBoot variable event (PCR 7) is edited in the log, the TPM is NOT extended: the
        log no longer replays to the TPM's PCR 7.

The events are tests/support/eventlog_gen.py's default boot (what labenv.py --event-log wrote), plus the db update
when --db-updated. Prints one JSON line.
"""

import argparse
import json
import sys


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--root", required=True)
    p.add_argument("--log", required=True)
    p.add_argument("--tcti")
    p.add_argument("--db-updated", action="store_true")
    p.add_argument("action", choices=["db-update", "alter-digest"])
    args = p.parse_args()
    sys.path.insert(0, args.root + "/tests/support")
    import eventlog_gen as gen

    def db_update_event():
        db = gen.signature_list(gen.CERT_X509, [gen.fake_blob("db cert 1", 1000), gen.fake_blob("db cert 2", 1100),
                                                gen.fake_blob("db cert 3 (vendor update)", 1000)])
        return gen.variable_event("db", db)

    events = gen.default_boot_events()
    if args.action == "db-update":
        added = db_update_event()
        log = gen.build_log(gen.with_added_event(events, added))
        with open(args.log, "wb") as f:
            f.write(log)
        extends = gen.extend_tpm(args.tcti, [added])
        print(json.dumps({"action": args.action, "log": args.log, "events": len(log.events), "extends": extends}))
        return 0
    if args.db_updated:
        events = gen.with_added_event(events, db_update_event())
    position = [i for i, e in enumerate(events) if (e.get("variable") or (None, None))[1] == "SecureBoot"][0]
    altered = gen.with_altered_digest(events, position)
    # the log's banks only (the header declares sha1 and sha256)
    altered[position]["digests"] = dict((b, altered[position]["digests"][b]) for b in ("sha1", "sha256"))
    log = gen.build_log(altered)
    with open(args.log, "wb") as f:
        f.write(log)
    print(json.dumps({"action": args.action, "log": args.log, "altered_event": position}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
