#!/usr/bin/env bash
# Install everything the lab and the tests need on a fresh Debian bookworm machine (root), idempotently:
# Debian packages (swtpm, tpm2-tools, libtss2, Go + the step-ca library, sshd, chromium, PostgreSQL and HAProxy for
# the HA lab) and a venv with the pinned Python requirements. Sourced by scripts/lab.sh and scripts/test.sh; prints
# what it does. The caller's shell options are restored at the end (sourcing it by hand does not leave
# errexit/pipefail on in an interactive shell).
__bootstrap_flags="$-"
__bootstrap_pipefail=off
if shopt -qo pipefail; then __bootstrap_pipefail=on; fi
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${SPIRE_TPM_VENV:-$ROOT/.build/venv}"
APT_PKGS=(swtpm swtpm-tools tpm2-tools libtss2-dev pkg-config openssl iproute2 openssh-server socat gcc
          golang-go golang-github-smallstep-certificates-dev golang-github-hashicorp-hcl-dev chromium
          postgresql-15 postgresql-client-15 haproxy)

missing=()
for p in "${APT_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "bootstrap: apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

stamp="$VENV/.requirements.sha256"
want="$(sha256sum "$ROOT/requirements-dev.txt" | cut -d' ' -f1)"
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "bootstrap: creating venv $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
  "$VENV/bin/pip" install -q -r "$ROOT/requirements-dev.txt" 2>&1 | grep -v "^WARNING: Location" || true
  "$VENV/bin/python" -c "import tpm2_pytss, hcl, jwt, cryptography, ansible" 
  echo "$want" > "$stamp"
fi

# The collection must live at ansible_collections/trustroot/spire_tpm for Ansible to find it.
COLL_ROOT="$ROOT/.build/collections"
mkdir -p "$COLL_ROOT/ansible_collections/trustroot"
ln -sfn "$ROOT" "$COLL_ROOT/ansible_collections/trustroot/spire_tpm"

export PATH="$VENV/bin:$PATH"
export ANSIBLE_COLLECTIONS_PATH="$COLL_ROOT"
export TSS2_LOG="all+NONE"
export SPIRE_TPM_ROOT="$ROOT" SPIRE_TPM_VENV="$VENV"
case "$__bootstrap_flags" in *e*) ;; *) set +e ;; esac
case "$__bootstrap_flags" in *u*) ;; *) set +u ;; esac
[ "$__bootstrap_pipefail" = on ] || set +o pipefail
unset __bootstrap_flags __bootstrap_pipefail
