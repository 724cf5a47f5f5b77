#!/usr/bin/env bash
# The test command: Postgres up, then format, lint, every test target, and the sandbox's contract
# with Meta's official Python SDK (scripts/sdk-contract.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/postgres.sh
ensure_postgres
drop_test_databases
echo "test.sh: Postgres at 127.0.0.1:$PGPORT" >&2
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --all-targets --locked
bash scripts/sdk-contract.sh
