# PostgreSQL from Debian's packages: a private cluster of this checkout, run as the `postgres` system user.
# Sourced by common.sh.

pg_install() {
    if [[ -n "$(pg_bindir)" ]] && id postgres >/dev/null 2>&1; then
        return 0
    fi
    command -v apt-get >/dev/null 2>&1 || die "PostgreSQL is missing and there is no apt-get to install it"
    say "PostgreSQL: installing Debian's postgresql package"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null || die "PostgreSQL: apt-get update failed"
    # Debian's package would create and start a cluster of its own on port 5432, the port ours needs: tell
    # postgresql-common not to create it before the server package is installed.
    apt-get install -y -q postgresql-common >/dev/null || die "PostgreSQL: apt-get install -y postgresql-common failed"
    sed -i 's/^#* *create_main_cluster *=.*/create_main_cluster = false/' /etc/postgresql-common/createcluster.conf
    grep -q '^create_main_cluster = false' /etc/postgresql-common/createcluster.conf ||
        echo 'create_main_cluster = false' >>/etc/postgresql-common/createcluster.conf
    apt-get install -y -q postgresql >/dev/null || die "PostgreSQL: apt-get install -y postgresql failed"
    [[ -n "$(pg_bindir)" ]] || die "PostgreSQL: installed, but no pg_ctl/initdb under /usr/lib/postgresql/*/bin"
}

# Paths of this checkout's cluster; pg_root (common.sh) decides where the `postgres` user can reach it.
pg_paths() {
    PG_BIN="$(pg_bindir)"
    PG_ROOT="$(pg_root)"
    PG_DATA="$PG_ROOT/data"
    PG_RUN="$PG_ROOT/run"
    PG_LOG="$PG_ROOT/postgres.log"
    # A Unix socket path has at most 107 bytes: a checkout deep in the tree gets its socket folder in /var/tmp.
    if ((${#PG_RUN} + 20 > 107)); then
        PG_RUN="/var/tmp/lfz-$SERVICES_HASH/run"
    fi
}

# From / so that a checkout the `postgres` user may not enter does not make every command complain.
as_postgres() {
    (cd / && runuser -u postgres -- "$@")
}

pg_preflight() {
    if [[ -n "$(pg_bindir)" ]] && id postgres >/dev/null 2>&1; then
        pg_paths
        [[ -n "$(live_pid "$PG_DATA/postmaster.pid" "$PG_DATA")" ]] && return 0
    fi
    require_free_port "PostgreSQL" "$PG_PORT"
}

pg_start() {
    pg_install
    # The `postgres` user must be able to pass through .lfz/ and .lfz/services/ (nothing more: no read bit).
    chmod go+x "$LFZ_DIR" "$SERVICES_DIR"
    pg_paths
    mkdir -p "$PG_ROOT"
    chmod go+x "$(dirname "$PG_ROOT")"
    chown postgres:postgres "$PG_ROOT"
    chmod 700 "$PG_ROOT"
    if [[ ! -d "$PG_RUN" ]]; then
        mkdir -p "$PG_RUN"
        chown postgres:postgres "$PG_RUN"
        [[ "$PG_RUN" == "$PG_ROOT"/* ]] || chmod go+x "$(dirname "$PG_RUN")"
    fi
    as_postgres touch "$PG_LOG"

    local pid
    pid="$(live_pid "$PG_DATA/postmaster.pid" "$PG_DATA")"
    if [[ -n "$pid" ]]; then
        if as_postgres "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -t 10; then
            pg_ensure_database
            say "PostgreSQL: already running (pid $pid)"
            return 0
        fi
        fail_service "PostgreSQL" "$PG_LOG" "it runs (pid $pid) but does not answer on 127.0.0.1:$PG_PORT"
    fi
    require_free_port "PostgreSQL" "$PG_PORT"

    if [[ ! -f "$PG_DATA/PG_VERSION" ]]; then
        say "PostgreSQL: creating a cluster in $PG_DATA"
        as_postgres rm -rf "$PG_DATA"
        if ! as_postgres "$PG_BIN/initdb" -D "$PG_DATA" -U postgres --auth-local=peer --auth-host=scram-sha-256 \
            --encoding=UTF8 --no-locale >>"$PG_LOG" 2>&1; then
            fail_service "PostgreSQL" "$PG_LOG" "initdb failed"
        fi
    fi
    say "PostgreSQL: starting on 127.0.0.1:$PG_PORT (log: $PG_LOG)"
    # Loopback only, a socket folder of our own; synchronous_commit=off because this cluster serves
    # development and tests, where a lost last commit after a crash costs nothing and speed matters.
    if ! as_postgres "$PG_BIN/pg_ctl" start -D "$PG_DATA" -l "$PG_LOG" -w -t 60 -s \
        -o "-c listen_addresses=127.0.0.1 -c port=$PG_PORT -c unix_socket_directories=$PG_RUN -c synchronous_commit=off" 9>&-; then
        fail_service "PostgreSQL" "$PG_LOG" "pg_ctl start failed"
    fi
    pg_ensure_database
    say "PostgreSQL: ready on 127.0.0.1:$PG_PORT (data: $PG_DATA)"
}

# The `lfz` role (may create databases, for tests) and the `lfz` and `lfz_test` databases, idempotently.
pg_ensure_database() {
    local sql
    sql="$(cat <<SQL
SELECT 'CREATE ROLE $PG_USER' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$PG_USER')\\gexec
ALTER ROLE $PG_USER LOGIN CREATEDB PASSWORD '$PG_PASSWORD';
SELECT 'CREATE DATABASE lfz OWNER $PG_USER' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'lfz')\\gexec
SELECT 'CREATE DATABASE lfz_test OWNER $PG_USER' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'lfz_test')\\gexec
SQL
)"
    if ! printf '%s\n' "$sql" | as_postgres "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$PG_RUN" -p "$PG_PORT" \
        -d postgres >/dev/null; then
        fail_service "PostgreSQL" "$PG_LOG" "creating the role and databases failed"
    fi
}

pg_stop() {
    if [[ -z "$(pg_bindir)" ]] || ! id postgres >/dev/null 2>&1; then
        say "PostgreSQL: not installed"
        return 0
    fi
    pg_paths
    local pid
    pid="$(live_pid "$PG_DATA/postmaster.pid" "$PG_DATA")"
    if [[ -z "$pid" ]]; then
        say "PostgreSQL: not running"
        return 0
    fi
    say "PostgreSQL: stopping (pid $pid)"
    as_postgres "$PG_BIN/pg_ctl" stop -D "$PG_DATA" -m fast -w -t 60 -s || stop_pid "$pid" 30
}

# Delete a stopped private cluster: its data folder, and the /var/tmp folder named after it when it used one.
pg_purge() {
    [[ -n "$(pg_bindir)" ]] || return 0
    pg_paths
    rm -rf "$PG_ROOT" "$PG_RUN"
    rmdir "/var/tmp/lfz-$SERVICES_HASH" 2>/dev/null || true
}
