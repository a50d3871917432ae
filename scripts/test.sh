#!/usr/bin/env bash
# Run every test of trustroot.spire_tpm on a fresh Debian bookworm machine: installs what it needs first.
#   bash scripts/test.sh            # everything (what CI runs)
#   bash scripts/test.sh pytest     # only the pytest suites (unit + integration through ansible-playbook)
#   stages: pytest molecule sanity lint
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/bootstrap.sh
source "$ROOT/scripts/bootstrap.sh"
cd "$ROOT"
stages=("$@")
[ "${#stages[@]}" -gt 0 ] || stages=(pytest molecule sanity lint)
t0=$SECONDS
declare -A took

# Real SPIRE for every stage: every pinned version built from the Go module proxy (cached under .build/spire;
# a second run reuses it). The build time is printed, and counted as a stage of its own.
start=$SECONDS
echo "=== stage: build (SPIRE from the Go module proxy)"
python "$ROOT/lab/spire_build.py" --all
took[build]=$((SECONDS - start))

run_pytest() {
  # -n 2: the suites start their own swtpm / step-ca / spire-server / spire-agent instances on free ports and
  # their own sockets, so they parallelise; --dist loadgroup keeps an xdist_group (tests that build on one lab) on one
  # worker.
  python -m pytest -n 2 --dist loadgroup -p no:cacheprovider tests
}

run_molecule() {
  if [ ! -d molecule ] || [ -z "$(ls -A molecule 2>/dev/null)" ]; then echo "molecule: no scenarios yet"; return 0; fi
  # MOLECULE_SCENARIOS="a b" restricts the run (default: every scenario under molecule/, the longest first).
  # MOLECULE_JOBS scenarios run at once (default 2): each brings its own lab (own name, subnet, step-ca, SPIRE), so
  # they are independent. Each scenario's output goes to .build/molecule-logs/<scenario>.log; a line is printed when
  # one ends, and every log in full once all have ended.
  local scenarios="${MOLECULE_SCENARIOS:-boot_state migration default decommission spire_roles migration_newest ha audit tpm_host}"
  local extra s
  for s in $(cd molecule && ls -d */ | tr -d /); do
    case " $scenarios " in *" $s "*) ;; *) [ -n "${MOLECULE_SCENARIOS:-}" ] || extra="${extra:-} $s" ;; esac
  done
  scenarios="$scenarios ${extra:-}"
  local jobs="${MOLECULE_JOBS:-2}" logs="$ROOT/.build/molecule-logs"
  rm -rf "$logs"; mkdir -p "$logs"
  for s in $scenarios; do
    while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n || true; done
    echo "== molecule test -s $s (started at $((SECONDS - t0)) s)"
    ( begin=$SECONDS; rc=0
      molecule test -s "$s" >"$logs/$s.log" 2>&1 || rc=$?
      echo "$s $rc $((SECONDS - begin))" >>"$logs/results"
      echo "== molecule $s: rc=$rc in $((SECONDS - begin)) s" ) &
  done
  wait
  for s in $scenarios; do
    echo "== molecule test -s $s: log"
    cat "$logs/$s.log"
  done
  local failed=0 name rc secs
  echo "== molecule summary"
  while read -r name rc secs; do
    printf '    %-18s rc=%s %5s s\n' "$name" "$rc" "$secs"
    [ "$rc" = 0 ] || failed=1
  done <"$logs/results"
  [ "$(wc -l <"$logs/results")" -eq "$(echo $scenarios | wc -w)" ] || failed=1
  return "$failed"
}

run_sanity() {
  # ansible-test checks what the collection ships (plugins/, roles/, playbooks/, meta/); the test harness,
  # lab and benchmarks are not part of the built collection and are left out of the copy.
  python "$ROOT/scripts/ansible_test_offline.py"
  local dest="$ROOT/.build/sanity/ansible_collections/trustroot/spire_tpm"
  rm -rf "$dest"; mkdir -p "$dest"
  git ls-files -z --cached --others --exclude-standard -- . ':!tests' ':!bench' ':!scripts' ':!lab' ':!molecule' ':!.ci' \
    | tar --null -T - -cf - | tar -xf - -C "$dest"
  (cd "$dest" && git init -q && git add -A && \
     ansible-test sanity --python 3.11 --requirements --color no)
}

run_lint() {
  ansible-lint --profile production --offline -q
}

for stage in "${stages[@]}"; do
  start=$SECONDS
  echo "=== stage: $stage"
  "run_$stage"
  took[$stage]=$((SECONDS - start))
done
echo "=== all stages passed in $((SECONDS - t0)) s:"
for stage in build "${stages[@]}"; do echo "    $stage: ${took[$stage]} s"; done
