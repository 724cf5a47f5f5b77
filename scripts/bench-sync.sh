#!/usr/bin/env bash
# Benchmark: generate N customers, full sync of the demo systems against the sandbox, then an
# incremental sync after 1 % churn (customers moved to Lost, emails changed, customers added).
# Prints rows/s (customers extracted per second of wall time), the worker's peak RSS, and where the
# CPU went: the worker, the sandbox, and everything else (Postgres, plus a little background).
# Usage: scripts/bench-sync.sh [N ...]   (default: 100000 1000000)
#   BENCH_SCHEMA=original|original-location|rich (default rich): the demo CDP's columns
#   BENCH_BIN_DIR=DIR: use the cdp-meta-sync and meta-sandbox in DIR (another version, for an A/B
#   run in alternation) instead of building this checkout
#   BENCH_SSLMODE=disable: talk to Postgres without TLS (default: the worker's sslmode=prefer)
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
    cargo build --release --locked -p cdp-meta-sync -p meta-sandbox >&2
    bin="${CARGO_TARGET_DIR:-target}/release"
fi
export LOG_FORMAT=json RUST_LOG=warn FACEBOOK_ACCESS_TOKEN=bench-token
source scripts/bench-lib.sh

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
    fresh_world cdp_bench "$bin"
    if [ "$schema" = rich ]; then
        "$bin/cdp-meta-sync" demo-data --customers "$n" >/dev/null
    else
        "$bin/cdp-meta-sync" demo-data --customers "$n" --schema "$schema" >/dev/null
    fi
    sql() { psql "$DATABASE_URL" -qAt -c "$1"; }

    for phase in full churn_1pct; do
        [ "$phase" = churn_1pct ] && churn
        settle
        last_run=$(sql "SELECT coalesce(max(id), 0) FROM cdp.facebook_sync_runs")
        read -r wall rss worker_cpu sandbox_cpu other_cpu < <(measure "$bin/cdp-meta-sync" run --once)
        extracted=$(sql "SELECT coalesce(sum(extracted),0) FROM cdp.facebook_sync_runs WHERE id > $last_run")
        changes=$(sql "SELECT coalesce(sum(added + removed),0) FROM cdp.facebook_sync_runs WHERE id > $last_run")
        rate=$(python3 -c "print(int($extracted / max($wall, 0.001)))")
        printf '%-10s %-12s %8s %11s %7s %9s %11s %12s %10s\n' "$n" "$phase" "$wall" "$rate" "$((rss / 1024))" \
            "$changes" "$worker_cpu" "$sandbox_cpu" "$other_cpu"
    done
    stop_sandbox
done
