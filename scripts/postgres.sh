# Sourced by scripts/test.sh, scripts/demo.sh and scripts/bench-*.sh: makes a local PostgreSQL
# available on a fresh Debian machine and exports DATABASE_URL / TEST_DATABASE_URL.
#   - installs postgresql with apt-get when no server is installed
#   - starts the first cluster (creates one when there is none)
#   - creates the role cdp (password cdp) and the database cdp
# Override with PGPORT, or skip all of it by exporting DATABASE_URL yourself.

ensure_postgres() {
    if [ -n "${DATABASE_URL:-}" ] && [ -n "${CDP_EXTERNAL_DATABASE:-}" ]; then
        export TEST_DATABASE_URL="${TEST_DATABASE_URL:-$DATABASE_URL}"
        return 0
    fi
    if ! command -v pg_lsclusters >/dev/null 2>&1 || [ -z "$(ls /usr/lib/postgresql 2>/dev/null)" ]; then
        echo "postgres: installing postgresql (apt-get)" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >/dev/null
        apt-get install -y -qq postgresql >/dev/null
    fi
    local cluster
    cluster=$(pg_lsclusters --no-header 2>/dev/null | head -n 1)
    if [ -z "$cluster" ]; then
        local version
        version=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
        pg_createcluster "$version" main >/dev/null
        cluster=$(pg_lsclusters --no-header | head -n 1)
    fi
    local version name port status
    read -r version name port status _ <<<"$cluster"
    if [ "$status" != "online" ]; then
        pg_ctlcluster "$version" "$name" start
    fi
    export PGPORT="${PGPORT:-$port}"
    for _ in $(seq 1 50); do
        su postgres -c "psql -p $PGPORT -qAtc 'SELECT 1'" >/dev/null 2>&1 && break
        sleep 0.2
    done
    su postgres -c "psql -p $PGPORT -v ON_ERROR_STOP=1 -q" <<'SQL'
DO $$BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'cdp') THEN
    CREATE ROLE cdp LOGIN CREATEDB PASSWORD 'cdp';
  END IF;
END$$;
SELECT 'CREATE DATABASE cdp OWNER cdp' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'cdp')\gexec
SQL
    export DATABASE_URL="${DATABASE_URL:-postgres://cdp:cdp@127.0.0.1:$PGPORT/cdp}"
    export TEST_DATABASE_URL="${TEST_DATABASE_URL:-postgres://cdp:cdp@127.0.0.1:$PGPORT/cdp}"
}

# Drops databases left by earlier test runs (each test makes its own, named test_<uuid>).
drop_test_databases() {
    su postgres -c "psql -p $PGPORT -qAt" <<'SQL' | while read -r db; do su postgres -c "psql -p $PGPORT -qc 'DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)'" >/dev/null; done
SELECT datname FROM pg_database WHERE datname LIKE 'test\_%'
SQL
}

# Installs the Debian packages that provide the given commands when they are missing
# (e.g. `ensure_tools curl:curl time:/usr/bin/time`).
ensure_tools() {
    local missing=()
    for pair in "$@"; do
        local package=${pair%%:*} command=${pair#*:}
        command -v "$command" >/dev/null 2>&1 || missing+=("$package")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "installing ${missing[*]} (apt-get)" >&2
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}
