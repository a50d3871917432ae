#!/usr/bin/env bash
# The main job: bring up the local lab of swtpm-backed hosts (network namespaces with sshd and one swtpm each on a
# unix socket), the REAL step-ca on the lab bridge and the REAL SPIRE (spire-server + spire-agent built from the Go
# module proxy by lab/spire_build.py, packed as a release archive that the roles install through their air-gapped
# path), then run `ansible-playbook playbooks/site.yml` on it. Prints site.yml's per-host summary, then what the
# REAL server itself lists as attested with tpm_devid (`spire-server agent list -attestationType tpm_devid`).
#   bash scripts/lab.sh              # up + site.yml (extra ansible-playbook arguments may follow: bash scripts/lab.sh up -v)
#   bash scripts/lab.sh down         # tear the lab down (step-ca, hosts, state)
# SPIRE version: $SPIRE_TPM_SPIRE_VERSION (default: lab/spire_build.py's DEFAULT_VERSION, 1.13.3).
# Fleet size: SPIRE_TPM_LAB_AGENTS=N gives spire-server-1 and N agent hosts agent-1..agent-N, each with its own swtpm
# and EK certificates (default: the lab's four hosts, agent-3 without EK certificate); use forks >= N+1
# (bash scripts/lab.sh up -f 20); take a lab of another size down first. bench/site_scale.py measures site.yml per
# fleet size.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/bootstrap.sh
source "$ROOT/scripts/bootstrap.sh"
cd "$ROOT"
NAME="${SPIRE_TPM_LAB_NAME:-main}"
SUBNET="${SPIRE_TPM_LAB_SUBNET:-10.213.0.0/24}"
LABENV="$ROOT/tests/integration/playbooks/labenv.py"
if [ "${1:-up}" = "down" ]; then exec python "$LABENV" down --name "$NAME"; fi
hosts=()
if [ -n "${SPIRE_TPM_LAB_AGENTS:-}" ]; then
  hosts=(--host spire-server-1:server)
  for i in $(seq 1 "$SPIRE_TPM_LAB_AGENTS"); do hosts+=(--host "agent-$i:agent"); done
fi
python "$LABENV" up --name "$NAME" --subnet "$SUBNET" --stepca --backend step_ca "${hosts[@]}"
inventory="$ROOT/.build/lab/$NAME/labenv-inventory.yml"
start=$SECONDS
rc=0
ansible-playbook -i "$inventory" playbooks/site.yml "${@:2}" || rc=$?
echo "site.yml finished (rc=$rc) in $((SECONDS - start)) s on the lab (inventory: $inventory)."
# The server's own word, not the playbook's: every agent the real spire-server lists as attested with tpm_devid.
server="$(python - "$inventory" <<'PY'
import sys, yaml
inv = yaml.safe_load(open(sys.argv[1]))
print(next(iter(inv["all"]["children"]["spire_servers"]["hosts"])))
PY
)"
echo "== spire-server agent list -attestationType tpm_devid (on $server, REAL SPIRE $(python lab/lab.py exec --name "$NAME" "$server" -- /opt/spire/bin/spire-server --version 2>&1 | tail -n 1)):"
python lab/lab.py exec --name "$NAME" "$server" -- /opt/spire/bin/spire-server agent list -attestationType tpm_devid \
  -socketPath /run/spire/server/private/api.sock || rc=$?
echo "'bash scripts/lab.sh down' removes the lab."
exit "$rc"
