#!/usr/bin/env bash
# Benchmark of the ledger writes of a first sync, in Postgres alone (issue #17): the CPU seconds
# the server spends taking N members of three configurations (the demo's shares: 47.5 %, 31.5 %,
# 21 %) in batches of 10,000, each batch sorted by member key and the configurations' batches
# interleaved, as three first syncs streaming at once write them. Rows have the ledger's columns
# and sizes (32-byte keys, four 32-byte cells). CPU is the backends' own (log_statement_stats), so
# it holds up better than wall time on a shared machine. Variants:
#   indexed   COPY per batch into the ledger's shape with its primary key (what the worker does)
#   unlogged  the same into an unlogged table
#   side      COPY per batch into an unindexed side table, then per configuration one
#             INSERT ... SELECT ... ORDER BY member_key into the indexed table and a DELETE
#   sorted    one COPY per configuration, fully sorted, into the indexed table (the best case of
#             sorted inserts into one key range; a worker could not send it without the whole set)
#   no_index  COPY per batch into a table without index (the floor)
#   build     no_index, then the primary key built (what a fresh table per audience would cost)
# Not run unless named: fillfactor (indexed, the key at fillfactor 70), no_dedup (indexed, the key
# without deduplication), key_first (indexed, the primary key led by member_key), key_first_cfg
# (key_first plus an index on the configuration).
# Usage: scripts/bench-ledger.sh [N] [VARIANT ...]   (default 740000, all variants)
#   BENCH_RUNS=2   runs per variant, in alternation
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-740000}"
shift || true
variants=("$@")
[ ${#variants[@]} -eq 0 ] && variants=(indexed unlogged side sorted no_index build)
runs="${BENCH_RUNS:-2}"
source scripts/postgres.sh
ensure_postgres
source scripts/bench-lib.sh
db=cdp_bench_ledger
work=$(mktemp -d)
chmod 777 "$work"
trap '[ -n "${BENCH_KEEP:-}" ] || rm -rf "$work"' EXIT
psql_admin -c "'DROP DATABASE IF EXISTS $db'" >/dev/null 2>&1
psql_admin -c "'CREATE DATABASE $db'" >/dev/null
sql() { su postgres -c "psql -p $PGPORT -d $db -qAt -v ON_ERROR_STOP=1 -f $1" 2>&1; }

columns="configuration_id INTEGER NOT NULL, definition_id INTEGER NOT NULL DEFAULT 0,
    audience_id VARCHAR(50) NOT NULL, member_key BYTEA NOT NULL, match_keys TEXT NOT NULL,
    cells BYTEA NOT NULL, added_run_id BIGINT, added_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    source_tenant_id INTEGER, source_customer_id BIGINT, source_digest BIGINT, filled SMALLINT,
    invalid_keys INTEGER NOT NULL DEFAULT 0, filled_keys INTEGER NOT NULL DEFAULT 0"
# One line: psql's \copy takes the rest of its line.
names="configuration_id, definition_id, audience_id, member_key, match_keys, cells, added_run_id, source_tenant_id, source_customer_id, source_digest, filled, invalid_keys, filled_keys"
pkey="PRIMARY KEY (configuration_id, definition_id, member_key)"

# The members, and their batches as binary COPY files (written once, read by every variant).
python3 - "$n" "$work" > "$work/gen.sql" <<'PY'
import sys
n, work = int(sys.argv[1]), sys.argv[2]
shares = {1: 0.475, 2: 0.315, 3: 0.21}
totals = {c: int(n * s) for c, s in shares.items()}
row = ("cfg, 0, 'aud-' || cfg, member_key, 'EMAIL,PHONE,FN,LN', cells, 1::bigint, 20, k::bigint, "
       "(k * 7)::bigint, 4::smallint, 0, 15")
print("CREATE TABLE g AS SELECT cfg, k, sha256(int8send(cfg * 100000000 + k)) AS member_key, "
      "('\\x01' || sha256(int8send(k)) || '\\x01' || sha256(int8send(k + 1)) || '\\x01' || "
      "sha256(int8send(k + 2)) || '\\x01' || sha256(int8send(k + 3)))::bytea AS cells "
      f"FROM (VALUES {', '.join(f'({c}, {t})' for c, t in totals.items())}) t(cfg, total), "
      "generate_series(1, total) k;")
print("CREATE INDEX ON g (cfg, k);")
done = {c: 0 for c in totals}
b = 0
while any(done[c] < totals[c] for c in totals):
    for c in totals:
        if done[c] >= totals[c]:
            continue
        hi = min(done[c] + 10000, totals[c])
        print(f"\\copy (SELECT {row} FROM g WHERE cfg = {c} AND k > {done[c]} AND k <= {hi} "
              f"ORDER BY member_key) TO '{work}/batch{b:05d}.bin' (FORMAT binary)")
        done[c], b = hi, b + 1
for c in totals:
    print(f"\\copy (SELECT {row} FROM g WHERE cfg = {c} ORDER BY member_key) "
          f"TO '{work}/sorted{c}.bin' (FORMAT binary)")
print("DROP TABLE g;")
PY
chmod -R a+rwX "$work"
echo "bench-ledger: writing the batches of $n members" >&2
sql "$work/gen.sql" >/dev/null

# One variant: prints "variant cpu_s".
run_variant() {
    local v=$1 f="$work/$1.sql" table=l
    {
        echo "SET synchronous_commit = off;"
        echo "DROP TABLE IF EXISTS l, side;"
        case $v in
            indexed | side | sorted) echo "CREATE TABLE l ($columns, $pkey);" ;;
            unlogged) echo "CREATE UNLOGGED TABLE l ($columns, $pkey);" ;;
            fillfactor) echo "CREATE TABLE l ($columns, $pkey WITH (fillfactor = 70));" ;;
            no_dedup) echo "CREATE TABLE l ($columns, $pkey WITH (deduplicate_items = off));" ;;
            key_first) echo "CREATE TABLE l ($columns, PRIMARY KEY (member_key, configuration_id, definition_id));" ;;
            key_first_cfg)
                echo "CREATE TABLE l ($columns, PRIMARY KEY (member_key, configuration_id, definition_id));"
                echo "CREATE INDEX ON l (configuration_id, definition_id);"
                ;;
            no_index | build) echo "CREATE TABLE l ($columns);" ;;
        esac
        [ "$v" = side ] && echo "CREATE TABLE side ($columns);" && table=side
        echo "CHECKPOINT;"
        echo "SET client_min_messages = log; SET log_statement_stats = on;"
        if [ "$v" = sorted ]; then
            for c in 1 2 3; do echo "\\copy l ($names) FROM '$work/sorted$c.bin' (FORMAT binary)"; done
        else
            for b in "$work"/batch*.bin; do
                echo "BEGIN;"
                echo "\\copy $table ($names) FROM '$b' (FORMAT binary)"
                echo "COMMIT;"
            done
        fi
        [ "$v" = build ] && echo "ALTER TABLE l ADD $pkey;"
        if [ "$v" = side ]; then
            for c in 1 2 3; do
                echo "INSERT INTO l SELECT * FROM side WHERE configuration_id = $c AND definition_id = 0 ORDER BY member_key;"
                echo "DELETE FROM side WHERE configuration_id = $c AND definition_id = 0;"
            done
        fi
        echo "SET log_statement_stats = off;"
    } > "$f"
    chmod a+r "$f"
    sql "$f" | tee "$work/$v.log" | awk -v v="$v" '/^![ \t]+[0-9.]+ s user/ {c += $2 + $5} END {printf "%s %.2f\n", v, c}'
}

results="$work/results"
for run in $(seq 1 "$runs"); do
    for v in "${variants[@]}"; do
        echo "bench-ledger: run $run, $v" >&2
        run_variant "$v" >> "$results"
    done
done
psql_admin -c "'DROP DATABASE IF EXISTS $db'" >/dev/null 2>&1
python3 - "$results" "$n" <<'PY'
import statistics, sys
figures = {}
for line in open(sys.argv[1]):
    v, cpu = line.split()
    figures.setdefault(v, []).append(float(cpu))
n = int(sys.argv[2])
print(f"{'variant':<14} {'postgres_cpu_s':>14} {'us_per_row':>10}  runs")
for v, cpus in figures.items():
    m = statistics.median(cpus)
    print(f"{v:<14} {m:>14.2f} {m / n * 1e6:>10.2f}  {' '.join(f'{c:.2f}' for c in cpus)}")
PY
