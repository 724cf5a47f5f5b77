#!/usr/bin/env bash
# The test command: Postgres up, then format, lint, every test target of the workspace (the worker
# and meta-sandbox), and the sandbox's contract
# with Meta's official Python SDK (scripts/sdk-contract.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/postgres.sh
ensure_postgres

# The status page's browser test (tests/it/status_page.rs) drives Debian's chromium; it fails,
# rather than skips, without it.
ensure_chromium() {
    [ -x "${CHROMIUM:-/usr/bin/chromium}" ] && return
    echo "test.sh: installing chromium for the status page test" >&2
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    local install="$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium"
    $install >/dev/null || { $sudo apt-get update >/dev/null && $install >/dev/null; }
}
ensure_chromium
drop_test_databases
echo "test.sh: Postgres at 127.0.0.1:$PGPORT" >&2
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --all-targets --locked
bash scripts/sdk-contract.sh
