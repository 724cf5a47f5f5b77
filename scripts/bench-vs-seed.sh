#!/usr/bin/env bash
# Side by side: this worker against the original design's algorithm (bench/seed_baseline.py, a
# faithful re-implementation of the seed worker: fetchall, hash row by row in Python, POST batches
# of 10,000 one after another).
#
# For each N: the same generated CDP (the original design's columns, `demo-data --schema
# original`, same seed), a fresh database and a fresh meta-sandbox for every run, both contenders,
# three runs each; the median of each figure is printed. Phases:
#   full       first sync of the three demo systems
#   churn_1pct the same run after 1 % churn (0.4 % leave, 0.3 % change email, 0.3 % new): this
#              worker syncs the difference; the original algorithm can only upload everything again
# Figures: wall seconds, CPU seconds of the worker, of Postgres (the machine's busy time minus the
# worker's and the sandbox's) and of the sandbox, and the worker's peak RSS.
# Usage: scripts/bench-vs-seed.sh [N ...]   (default: 1000000)
#   BENCH_RUNS=3     runs per contender
#   BENCH_BIN_DIR=DIR  the cdp-meta-sync and meta-sandbox in DIR (another build), not this tree's
#   BENCH_SSLMODE=disable  both contenders talk to Postgres without TLS (default: their own, TLS)
#   SEED_VENV=DIR    where the Python venv for the original algorithm lives (created when missing)
set -euo pipefail
cd "$(dirname "$0")/.."
sizes=("$@")
[ $# -eq 0 ] && sizes=(1000000)
runs="${BENCH_RUNS:-3}"
source scripts/postgres.sh
ensure_postgres
ensure_tools curl:curl time:/usr/bin/time python3:python3 python3-venv:true
venv="${SEED_VENV:-/var/tmp/cdp-meta-sync-seed-venv}"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import psycopg2, requests' 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q -r bench/seed_requirements.txt
fi
if [ -n "${BENCH_BIN_DIR:-}" ]; then
    bin="$BENCH_BIN_DIR"
else
    cargo build --release --locked -p cdp-meta-sync -p meta-sandbox >&2
    bin="${CARGO_TARGET_DIR:-target}/release"
fi
export LOG_FORMAT=json RUST_LOG=warn LOG_LEVEL=WARNING FACEBOOK_ACCESS_TOKEN=bench-token META_API_VERSION=v27.0
source scripts/bench-lib.sh
results=$(mktemp)
trap 'rm -f "$results"' EXIT

# One measured command: appends "contender n phase wall rss_mb worker_cpu pg_cpu sandbox_cpu".
measure() {
    local contender=$1 n=$2 phase=$3
    shift 3
    local m0 s0 m1 s1 wall rss user sys
    m0=$(machine_cpu); s0=$(process_cpu "$sandbox")
    /usr/bin/time -f "%e %M %U %S" -o /tmp/bench-vs-seed-time "$@" >/dev/null 2>/tmp/bench-vs-seed-stderr \
        || { echo "$contender failed:" >&2; tail -5 /tmp/bench-vs-seed-stderr >&2; exit 1; }
    m1=$(machine_cpu); s1=$(process_cpu "$sandbox")
    read -r wall rss user sys < /tmp/bench-vs-seed-time
    python3 -c "w=$user+$sys; s=$s1-$s0; print('$contender', $n, '$phase', $wall, $rss // 1024, f'{w:.2f}', f'{$m1-$m0-w-s:.2f}', f'{s:.2f}')" >> "$results"
}

for n in "${sizes[@]}"; do
    for run in $(seq 1 "$runs"); do
        for contender in seed worker; do
            echo "bench-vs-seed: $n customers, run $run, $contender" >&2
            fresh_world cdp_vs_seed "$bin"
            # The same data for both: the configuration table is a superset of the original one.
            "$bin/cdp-meta-sync" demo-data --customers "$n" --schema original >/dev/null
            if [ "$contender" = seed ]; then
                command=("$venv/bin/python" bench/seed_baseline.py run --once)
            else
                command=("$bin/cdp-meta-sync" run --once)
            fi
            settle
            measure "$contender" "$n" full "${command[@]}"
            churn
            settle
            measure "$contender" "$n" churn_1pct "${command[@]}"
            stop_sandbox
        done
    done
done
psql_admin -c "'DROP DATABASE IF EXISTS cdp_vs_seed'" >/dev/null 2>&1

# Every run's figures on stderr (contender, customers, phase, wall, RSS MB, CPU: own, Postgres,
# sandbox), then the medians per contender, size and phase, and the ratios (original / this worker).
cat "$results" >&2
python3 - "$results" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
figures = {}
for c, n, phase, *vals in rows:
    figures.setdefault((int(n), phase, c), []).append([float(v) for v in vals])
def median(key):
    runs = figures[key]
    return [statistics.median(col) for col in zip(*runs)]
print(f"{'customers':>10} {'phase':<11} {'contender':<9} {'wall_s':>7} {'rss_mb':>7} {'worker_cpu_s':>12} "
      f"{'postgres_cpu_s':>14} {'sandbox_cpu_s':>13} {'runs':>4}")
for n, phase in sorted({(k[0], k[1]) for k in figures}, key=lambda k: (k[0], k[1] != 'full')):
    m = {}
    for c in ('seed', 'worker'):
        if (n, phase, c) in figures:
            m[c] = median((n, phase, c))
            w, r, wc, pc, sc = m[c]
            print(f"{n:>10} {phase:<11} {c:<9} {w:>7.2f} {r:>7.0f} {wc:>12.2f} {pc:>14.2f} {sc:>13.2f} "
                  f"{len(figures[(n, phase, c)]):>4}")
    if len(m) == 2:
        s, w = m['seed'], m['worker']
        print(f"{n:>10} {phase:<11} {'ratio':<9} {s[0]/w[0]:>6.2f}x {s[1]/w[1]:>6.2f}x "
              f"{s[2]/max(w[2],0.01):>11.2f}x {s[3]/max(w[3],0.01):>13.2f}x")
PY
