#!/usr/bin/env bash
# Quick start, part one: the whole worker on a fresh machine, against the local Meta sandbox.
#   Postgres up → build → migrate → demo data (+ two audience definitions per system, one
#   value-based) → meta-sandbox → run --once → status + audience sizes → the status page
# Usage: scripts/demo.sh [--minimal-schema | --location-schema] [CUSTOMERS]   (default 50000)
#   --minimal-schema   customers_master with only the original design's six columns, the systems
#                      inserted with the original INSERT (no default_country)
#   --location-schema  the same plus city, state, zip, country
set -euo pipefail
cd "$(dirname "$0")/.."
schema=rich
customers=50000
for arg in "$@"; do
    case "$arg" in
        --minimal-schema) schema=original ;;
        --location-schema) schema=original-location ;;
        ''|*[!0-9]*) echo "demo.sh: unknown argument '$arg' (expected --minimal-schema, --location-schema or a number)" >&2; exit 2 ;;
        *) customers="$arg" ;;
    esac
done
source scripts/postgres.sh
ensure_postgres
ensure_tools curl:curl time:/usr/bin/time python3:python3

# A database of its own, made anew each time: the sandbox forgets its audiences when it stops.
su postgres -c "psql -p $PGPORT -qc 'DROP DATABASE IF EXISTS cdp_demo'" >/dev/null 2>&1
su postgres -c "psql -p $PGPORT -qc 'CREATE DATABASE cdp_demo OWNER cdp'" >/dev/null
export DATABASE_URL="postgres://cdp:cdp@127.0.0.1:$PGPORT/cdp_demo"
export LOG_FORMAT="${LOG_FORMAT:-pretty}" RUST_LOG="${RUST_LOG:-warn}"

cargo build --release --locked -p cdp-meta-sync -p meta-sandbox
bin="${CARGO_TARGET_DIR:-target}/release"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$bin/meta-sandbox" --port "$port" --seed 42 >/tmp/meta-sandbox-demo.log 2>&1 &
sandbox=$!
trap 'kill $sandbox 2>/dev/null || true' EXIT
for _ in $(seq 1 50); do curl -fs "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done

export META_GRAPH_URL="http://127.0.0.1:$port" FACEBOOK_ACCESS_TOKEN="sandbox-token"
"$bin/cdp-meta-sync" migrate
"$bin/cdp-meta-sync" demo-data --customers "$customers" --schema "$schema"
# Besides its own audience, each system gets two more, as an operator adds them: one INSERT each.
su postgres -c "psql -p $PGPORT -d cdp_demo -qv ON_ERROR_STOP=1" <<'SQL'
INSERT INTO cdp.facebook_audiences (configuration_id, name, included_segments)
SELECT id, 'CDP - Win-back', ARRAY['At Risk', 'Can''t Lose Them']
  FROM cdp.facebook_configurations;
INSERT INTO cdp.facebook_audiences (configuration_id, name, included_segments, value_based)
SELECT id, 'CDP - Best customers by value', ARRAY['Champions', 'Loyal Customers'], true
  FROM cdp.facebook_configurations;
SQL
# run --once exits 1 when a system failed: show the status anyway, then pass the code on.
outcome=0
/usr/bin/time -f "run --once: %e s wall, %M KB peak RSS" "$bin/cdp-meta-sync" run --once || outcome=$?
echo
"$bin/cdp-meta-sync" status
echo
echo "Audiences in the Meta sandbox:"
curl -fs "http://127.0.0.1:$port/_sandbox/audiences" | python3 -c '
import json, sys
for a in json.load(sys.stdin):
    name, ident, count, account = a["name"], a["id"], a["member_count"], a["ad_account_id"]
    print(f"  {name:<36} id {ident:<18} {count:>8} members  (ad account {account})")
'
# The status page: the worker serving it (the scheduler, with nothing due for 48 hours).
http_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
PORT="$http_port" "$bin/cdp-meta-sync" run >/tmp/cdp-meta-sync-demo.log 2>&1 &
worker=$!
trap 'kill $worker $sandbox 2>/dev/null || true' EXIT
for _ in $(seq 1 50); do curl -fs "http://127.0.0.1:$http_port/healthz" >/dev/null && break; sleep 0.1; done
echo
if rows=$(curl -fs "http://127.0.0.1:$http_port/" | grep -c '<tr class='); then
    echo "Status page: http://127.0.0.1:$http_port/  ($rows table rows)"
else
    echo "Status page: not served (see /tmp/cdp-meta-sync-demo.log)" >&2
    outcome=1
fi
if [ -t 0 ]; then
    read -rp "Serving the status page; press Enter to stop. " _ || true
fi
exit "$outcome"
