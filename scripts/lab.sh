#!/usr/bin/env bash
# The main job: bring up the local lab of swtpm-backed hosts (network namespaces with sshd and one swtpm each,
# the REAL step-ca on the lab bridge, SPIRE stood in by the CLI simulator packed as a release archive) and run
# `ansible-playbook playbooks/site.yml` on it. Prints the per-host summary.
#   bash scripts/lab.sh              # up + site.yml (extra ansible-playbook arguments may follow: bash scripts/lab.sh up -v)
#   bash scripts/lab.sh down         # tear the lab down (step-ca, hosts, state)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/bootstrap.sh
source "$ROOT/scripts/bootstrap.sh"
cd "$ROOT"
NAME="${SPIRE_TPM_LAB_NAME:-main}"
SUBNET="${SPIRE_TPM_LAB_SUBNET:-10.213.0.0/24}"
LABENV="$ROOT/tests/integration/playbooks/labenv.py"
if [ "${1:-up}" = "down" ]; then exec python "$LABENV" down --name "$NAME"; fi
python "$LABENV" up --name "$NAME" --subnet "$SUBNET" --stepca --backend step_ca
inventory="$ROOT/.build/lab/$NAME/labenv-inventory.yml"
start=$SECONDS
ansible-playbook -i "$inventory" playbooks/site.yml "${@:2}"
echo "site.yml finished in $((SECONDS - start)) s on the lab (inventory: $inventory); 'bash scripts/lab.sh down' removes it."
