#!/usr/bin/env bash
# meta-sandbox's contract with the real world: Meta's official Python SDK (facebook-business from
# PyPI, pinned below) drives a freshly started sandbox through every call the worker makes
# (scripts/sdk_contract.py). Prints "N passed, M failed"; exits 1 when a check failed.
# The venv lives outside the clone (SDK_VENV) and is created when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
SDK_VERSION="26.0.3"
venv="${SDK_VENV:-/var/tmp/cdp-meta-sync-sdk-venv}"
if ! "$venv/bin/python" -c "import facebook_business, sys; sys.exit(facebook_business.__version__ != '$SDK_VERSION')" 2>/dev/null; then
    echo "sdk-contract: installing facebook-business==$SDK_VERSION into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check "facebook-business==$SDK_VERSION"
fi
cargo build -q --locked -p meta-sandbox --bin meta-sandbox
bin="${CARGO_TARGET_DIR:-target}/debug/meta-sandbox"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$bin" --port "$port" --seed 7 >/tmp/meta-sandbox-sdk-contract.log 2>&1 &
sandbox=$!
trap 'kill $sandbox 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
    python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/healthz')" 2>/dev/null && break
    sleep 0.1
done
PYTHONWARNINGS=ignore "$venv/bin/python" scripts/sdk_contract.py "http://127.0.0.1:$port"
