# Sourced by scripts/bench-sync.sh and scripts/bench-vs-seed.sh (after scripts/postgres.sh):
# a fresh database and sandbox per measurement, the 1 % churn both apply, and CPU accounting.

psql_admin() { su postgres -c "psql -p $PGPORT -qAt $*"; }

# CPU seconds the whole machine spent busy so far (all processes), and those of one process.
machine_cpu() { awk '/^cpu /{printf "%.2f", ($2+$3+$4+$7+$8)/100}' /proc/stat; }
process_cpu() { awk '{printf "%.2f", ($14+$15)/100}' "/proc/$1/stat"; }

# fresh_world DB BIN: database DB created anew and migrated, a meta-sandbox from BIN started;
# exports DATABASE_URL and META_GRAPH_URL and sets $sandbox to the sandbox's pid. BENCH_SSLMODE
# (e.g. disable) goes into DATABASE_URL as its sslmode, for every client alike; unset, each
# client's default (prefer: TLS whenever the server offers it, as Debian's does).
fresh_world() {
    local db=$1 bin=$2 port
    psql_admin -c "'DROP DATABASE IF EXISTS $db'" >/dev/null 2>&1
    psql_admin -c "'CREATE DATABASE $db OWNER cdp'" >/dev/null
    export DATABASE_URL="postgres://cdp:cdp@127.0.0.1:$PGPORT/$db${BENCH_SSLMODE:+?sslmode=$BENCH_SSLMODE}"
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    "$bin/meta-sandbox" --port "$port" >/dev/null 2>&1 &
    sandbox=$!
    for _ in $(seq 1 50); do curl -fs "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
    export META_GRAPH_URL="http://127.0.0.1:$port"
    "$bin/cdp-meta-sync" migrate >/dev/null
}

stop_sandbox() {
    kill "$sandbox" 2>/dev/null || true
    wait "$sandbox" 2>/dev/null || true
}

# 1 % churn: 0.4 % leave (Lost), 0.3 % change email, 0.3 % new customers; every system due.
churn() {
    psql "$DATABASE_URL" -qAt >/dev/null <<'SQL'
UPDATE cdp_rfm_analysis SET rfm_segment = 'Lost' WHERE customer_id % 250 = 7;
UPDATE customers_master SET email = 'changed.' || id || '@example.org' WHERE id % 333 = 11;
INSERT INTO customers_master (id, tenant_id, email, phone, firstname, lastname)
SELECT id + 100000000, tenant_id, 'new.' || id || '@example.net', phone, firstname, lastname
  FROM customers_master WHERE id % 333 = 5;
INSERT INTO cdp_rfm_analysis (customer_id, rfm_segment)
SELECT id + 100000000, 'Champions' FROM customers_master WHERE id % 333 = 5 AND id < 100000000;
UPDATE cdp.facebook_configurations SET next_sync = now();
SQL
}

# Statistics fresh, and the load's dirty pages and WAL flushed now, not by checkpoints during the
# timed run.
settle() {
    psql "$DATABASE_URL" -qAt -c "VACUUM ANALYZE" >/dev/null 2>&1 || true
    psql_admin -c "'CHECKPOINT'" >/dev/null
}
