#!/usr/bin/env bash
# Benchmark: generate N customers, full sync of the demo systems against the sandbox, then an
# incremental sync after 1 % churn (customers moved to Lost, emails changed, customers added).
# Prints rows/s (customers extracted per second of wall time), the worker's peak RSS, and where the
# CPU went: the worker, the sandbox, and everything else (Postgres, plus a little background).
# Usage: scripts/bench-sync.sh [N ...]   (default: 100000 1000000)
#   BENCH_SCHEMA=original|original-location|rich (default rich): the demo CDP's columns
#   BENCH_BIN_DIR=DIR: use the cdp-meta-sync and meta-sandbox in DIR (another version, for an A/B
#   run in alternation) instead of building this checkout
set -euo pipefail
cd "$(dirname "$0")/.."
sizes=("${@:-100000 1000000}")
[ $# -eq 0 ] && sizes=(100000 1000000)
schema="${BENCH_SCHEMA:-rich}"
source scripts/postgres.sh
ensure_postgres
ensure_tools curl:curl time:/usr/bin/time python3:python3
if [ -n "${BENCH_BIN_DIR:-}" ]; then
    bin="$BENCH_BIN_DIR"
else
    cargo build --release --locked --bin cdp-meta-sync --bin meta-sandbox >&2
    bin="${CARGO_TARGET_DIR:-target}/release"
fi
export LOG_FORMAT=json RUST_LOG=warn FACEBOOK_ACCESS_TOKEN=bench-token
psql_admin() { su postgres -c "psql -p $PGPORT -qAt $*"; }

# CPU seconds the whole machine spent busy so far (all processes), and those of one process.
machine_cpu() { awk '/^cpu /{printf "%.2f", ($2+$3+$4+$7+$8)/100}' /proc/stat; }
process_cpu() { awk '{printf "%.2f", ($14+$15)/100}' "/proc/$1/stat"; }

measure() { # prints "wall_s peak_rss_kb worker_cpu_s sandbox_cpu_s other_cpu_s" of the command
    local m0 s0 m1 s1
    m0=$(machine_cpu); s0=$(process_cpu "$sandbox")
    /usr/bin/time -f "%e %M %U %S" -o /tmp/bench-sync-time "$@" >/dev/null 2>/tmp/bench-sync-stderr
    m1=$(machine_cpu); s1=$(process_cpu "$sandbox")
    read -r wall rss user sys < /tmp/bench-sync-time
    # "other" is everything else that ran meanwhile: Postgres, and a little background.
    python3 -c "w=$user+$sys; s=$s1-$s0; print($wall, $rss, f'{w:.2f}', f'{s:.2f}', f'{$m1-$m0-w-s:.2f}')"
}

printf '%-10s %-12s %8s %11s %7s %9s %11s %12s %10s\n' customers phase wall_s rows_per_s rss_mb changes worker_cpu_s sandbox_cpu_s other_cpu_s
for n in "${sizes[@]}"; do
    psql_admin -c "'DROP DATABASE IF EXISTS cdp_bench'" >/dev/null 2>&1
    psql_admin -c "'CREATE DATABASE cdp_bench OWNER cdp'" >/dev/null
    export DATABASE_URL="postgres://cdp:cdp@127.0.0.1:$PGPORT/cdp_bench"
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    "$bin/meta-sandbox" --port "$port" >/dev/null 2>&1 &
    sandbox=$!
    for _ in $(seq 1 50); do curl -fs "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
    export META_GRAPH_URL="http://127.0.0.1:$port"
    "$bin/cdp-meta-sync" migrate >/dev/null
    if [ "$schema" = rich ]; then
        "$bin/cdp-meta-sync" demo-data --customers "$n" >/dev/null
    else
        "$bin/cdp-meta-sync" demo-data --customers "$n" --schema "$schema" >/dev/null
    fi
    sql() { psql "$DATABASE_URL" -qAt -c "$1"; }

    for phase in full churn_1pct; do
        if [ "$phase" = churn_1pct ]; then
            # 1 % churn: 0.4 % leave (Lost), 0.3 % change email, 0.3 % new customers.
            sql "UPDATE cdp_rfm_analysis SET rfm_segment = 'Lost' WHERE customer_id % 250 = 7" >/dev/null
            sql "UPDATE customers_master SET email = 'changed.' || id || '@example.org' WHERE id % 333 = 11" >/dev/null
            sql "INSERT INTO customers_master (id, tenant_id, email, phone, firstname, lastname)
                 SELECT id + 100000000, tenant_id, 'new.' || id || '@example.net', phone, firstname, lastname
                   FROM customers_master WHERE id % 333 = 5;
                 INSERT INTO cdp_rfm_analysis (customer_id, rfm_segment)
                 SELECT id + 100000000, 'Champions' FROM customers_master WHERE id % 333 = 5 AND id < 100000000" >/dev/null
            sql "UPDATE cdp.facebook_configurations SET next_sync = now()" >/dev/null
        fi
        sql "VACUUM ANALYZE" >/dev/null 2>&1 || true
        # The load's dirty pages and WAL are flushed now, not by checkpoints during the timed run.
        psql_admin -c "'CHECKPOINT'" >/dev/null
        last_run=$(sql "SELECT coalesce(max(id), 0) FROM cdp.facebook_sync_runs")
        read -r wall rss worker_cpu sandbox_cpu other_cpu < <(measure "$bin/cdp-meta-sync" run --once)
        extracted=$(sql "SELECT coalesce(sum(extracted),0) FROM cdp.facebook_sync_runs WHERE id > $last_run")
        changes=$(sql "SELECT coalesce(sum(added + removed),0) FROM cdp.facebook_sync_runs WHERE id > $last_run")
        rate=$(python3 -c "print(int($extracted / max($wall, 0.001)))")
        printf '%-10s %-12s %8s %11s %7s %9s %11s %12s %10s\n' "$n" "$phase" "$wall" "$rate" "$((rss / 1024))" \
            "$changes" "$worker_cpu" "$sandbox_cpu" "$other_cpu"
    done
    kill "$sandbox" 2>/dev/null || true
    wait "$sandbox" 2>/dev/null || true
done
