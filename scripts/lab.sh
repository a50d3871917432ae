#!/usr/bin/env bash
# The main job: bring up the local lab of swtpm-backed hosts (network namespaces with sshd, one swtpm each,
# the real step-ca, SPIRE stood in by the CLI simulator) and run `ansible-playbook playbooks/site.yml` on it.
#   bash scripts/lab.sh          # up + site.yml (prints the per-host summary)
#   bash scripts/lab.sh down     # tear the lab down
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/bootstrap.sh
source "$ROOT/scripts/bootstrap.sh"
cd "$ROOT"
if [ "${1:-up}" = "down" ]; then exec python lab/lab.py down; fi
python lab/lab.py up
inventory="$(python lab/lab.py inventory)"
export PATH="$ROOT/tests/simulators/bin:$PATH"
start=$SECONDS
ansible-playbook -i "$inventory" playbooks/site.yml "${@:2}"
echo "site.yml finished in $((SECONDS - start)) s on the lab (inventory: $inventory); 'bash scripts/lab.sh down' removes it."
