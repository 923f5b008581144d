# Shared by up.sh, down.sh and the per-service scripts: paths, pinned versions, pid files and port checks.
# Sourced, never run. Every path is per checkout, under the git-ignored .lfz/ folder.

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
LFZ_DIR="$REPO_ROOT/.lfz"
KAFKA_HOME="$REPO_ROOT/infra/kafka"

# Where the servers keep data, logs and pid files. SERVICES_DIR pointing elsewhere (with ports of its own) makes a
# private set, for a test that must stop and start its servers without touching the ones others use: its settings
# are written beside it, never over the checkout's .lfz/services.env.
SERVICES_DIR="$(realpath -m "${SERVICES_DIR:-$LFZ_DIR/services}")"
if [[ "$SERVICES_DIR" == "$LFZ_DIR/services" ]]; then
    SERVICES_PRIVATE=0
    SERVICES_ENV="$LFZ_DIR/services.env"
    # Names folders outside the checkout (see pg_root) that belong to it.
    SERVICES_HASH="$(printf '%s' "$REPO_ROOT" | sha256sum | cut -c1-12)"
else
    SERVICES_PRIVATE=1
    SERVICES_ENV="$SERVICES_DIR/services.env"
    SERVICES_HASH="$(printf '%s' "$SERVICES_DIR" | sha256sum | cut -c1-12)"
fi

# Pinned versions (Kafka and Log4j are pinned in infra/kafka/pom.xml; PostgreSQL is Debian's package).
VERSITYGW_MODULE="github.com/versity/versitygw/cmd/versitygw"
VERSITYGW_VERSION="v1.7.0"

# Loopback ports of the three servers (override them to run a second checkout's servers beside the first) and the
# credentials written to .lfz/services.env.
KAFKA_PORT="${SERVICES_KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${SERVICES_KAFKA_CONTROLLER_PORT:-9093}"
PG_PORT="${SERVICES_PG_PORT:-5432}"
S3_PORT="${SERVICES_S3_PORT:-9000}"
S3_ACCESS_KEY="lfzaccess"
S3_SECRET_KEY="lfzsecret123"
S3_BUCKET="lfz"
PG_USER="lfz"
PG_PASSWORD="lfz"
# SERVICES_KAFKA_SASL=1: the broker takes only SCRAM-SHA-512 clients, with ACLs (infra/kafka/sasl.properties).
KAFKA_SASL="${SERVICES_KAFKA_SASL:-0}"
# SERVICES_KAFKA_TLS=1: the broker's client port speaks TLS (SSL; SASL_SSL with SASL too), with a certificate signed
# by a CA made at first start (infra/kafka/tls.properties); clients trust that CA's ca.pem.
KAFKA_TLS="${SERVICES_KAFKA_TLS:-0}"
KAFKA_ADMIN_PASSWORD="lfz-admin-secret"
KAFKA_USER="lfz"
KAFKA_USER_PASSWORD="lfz-kafka-secret"
KAFKA_GUEST_PASSWORD="guest-secret"

# The project venv: the readiness checks use its aiokafka and minio.
PYTHON="${SERVICES_PYTHON:-$REPO_ROOT/.venv/bin/python}"

say() { printf 'services: %s\n' "$*"; }

die() {
    printf 'services: ERROR: %s\n' "$*" >&2
    exit 1
}

# A service that failed to start: name it and the log to read, show the log's tail, exit non-zero.
fail_service() {
    local name="$1" log="$2" why="$3"
    printf '\nservices: ERROR: %s could not start: %s\n' "$name" "$why" >&2
    if [[ -n "$log" && -f "$log" ]]; then
        printf 'services: read the log: %s (last lines below)\n' "$log" >&2
        tail -n 20 "$log" | sed 's/^/    /' >&2
    fi
    exit 1
}

# True when something accepts TCP connections on 127.0.0.1:PORT.
port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Who listens on PORT, for error messages.
port_owner() {
    if command -v ss >/dev/null 2>&1; then
        ss -Hltnp "sport = :$1" 2>/dev/null | sed 's/^/    /'
    fi
}

# Fail with a clear message when PORT is taken by a process that is not the one we are about to start.
require_free_port() {
    local name="$1" port="$2"
    if port_open "$port"; then
        printf 'services: ERROR: %s cannot start: port 127.0.0.1:%s is already in use by another process:\n' \
            "$name" "$port" >&2
        port_owner "$port" >&2
        # shellcheck disable=SC2016  # the backquotes are text
        printf 'services: stop that process (or its `make services-down` in another checkout) and run again.\n' >&2
        exit 1
    fi
}

# PID from FILE when that process is alive and its command line contains MARKER (a path of this checkout);
# otherwise the pid file is stale (the process is gone, or the pid was reused): remove it and print nothing.
live_pid() {
    local file="$1" marker="$2" pid
    [[ -f "$file" ]] || return 0
    pid="$(head -n 1 "$file" 2>/dev/null | tr -dc '0-9')"
    if [[ -n "$pid" && -r "/proc/$pid/cmdline" ]] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$marker"; then
        echo "$pid"
        return 0
    fi
    rm -f "$file"
}

# Stop PID's process group with TERM, then KILL after TIMEOUT seconds; wait until it is gone.
stop_pid() {
    local pid="$1" timeout="${2:-30}" i
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < timeout * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    say "pid $pid did not stop within ${timeout}s: killing it"
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
}

# Run CMD... detached in its own session (it outlives make), output to LOG, pid to PIDFILE. The server must not
# inherit the lock's descriptor (9), or it would hold the lock for as long as it runs.
spawn() {
    local pidfile="$1" log="$2"
    shift 2
    # Logs are appended across starts; past 10 MB the old part moves aside (one generation is kept).
    if [[ -f "$log" && $(stat -c %s "$log") -gt 10485760 ]]; then
        mv -f "$log" "$log.1"
    fi
    setsid nohup "$@" >>"$log" 2>&1 </dev/null 9>&- &
    echo $! >"$pidfile"
}

# One `make services` or `make services-down` at a time per checkout.
# wait_listening NAME PIDFILE LOG PORT SECONDS: until the spawned server listens on its loopback port, or fail with its
# log (the process exited, or nothing listens in time). Prints the server's pid.
wait_listening() {
    local name="$1" pidfile="$2" log="$3" port="$4" seconds="$5" pid i
    pid="$(cat "$pidfile" 2>/dev/null || true)"
    for ((i = 0; i < seconds * 10; i++)); do
        port_open "$port" && break
        kill -0 "$pid" 2>/dev/null || fail_service "$name" "$log" "the process exited"
        sleep 0.1
    done
    port_open "$port" || fail_service "$name" "$log" "nothing listens on 127.0.0.1:$port after $seconds s"
    echo "$pid"
}

# stop_service NAME PIDFILE MARKER TIMEOUT: stop the server whose pid file and command line (MARKER) name it.
stop_service() {
    local name="$1" pidfile="$2" marker="$3" timeout="$4" pid
    pid="$(live_pid "$pidfile" "$marker")"
    if [[ -z "$pid" ]]; then
        say "$name: not running"
        return 0
    fi
    say "$name: stopping (pid $pid)"
    stop_pid "$pid" "$timeout"
    rm -f "$pidfile"
}

take_lock() {
    mkdir -p "$SERVICES_DIR"
    exec 9>"$SERVICES_DIR/.lock"
    if ! flock -w 300 9; then
        die "another 'make services' or 'make services-down' holds $SERVICES_DIR/.lock"
    fi
}

# PostgreSQL refuses to run as root: it runs as the `postgres` system user, who must be able to reach its data
# folder. Under $SERVICES_DIR when every parent folder lets that user through, else a folder in /var/tmp named
# after a hash of this checkout's path (of SERVICES_DIR's, for a private set).
pg_root() {
    local fallback
    fallback="/var/tmp/lfz-$SERVICES_HASH/postgres"
    if [[ -d "$SERVICES_DIR/postgres" ]]; then
        echo "$SERVICES_DIR/postgres"
    elif [[ -d "$fallback" ]]; then
        echo "$fallback"
    elif id postgres >/dev/null 2>&1 && runuser -u postgres -- test -x "$SERVICES_DIR" 2>/dev/null; then
        echo "$SERVICES_DIR/postgres"
    else
        echo "$fallback"
    fi
}

pg_bindir() {
    local dir
    for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        if [[ -x "$dir/pg_ctl" && -x "$dir/initdb" ]]; then
            echo "$dir"
            return 0
        fi
    done
}

# The services named on a command line (kafka, postgres, s3), all three when none is; an unknown name is an error.
chosen_services() {
    (($#)) || set -- kafka postgres s3
    local name
    for name in "$@"; do
        case "$name" in
        kafka | postgres | s3) ;;
        *) die "unknown service '$name': expected kafka, postgres or s3" ;;
        esac
    done
    echo "$*"
}

# Each service's start, wait and stop, on the paths above.
. "$(dirname "${BASH_SOURCE[0]}")/kafka.sh"
. "$(dirname "${BASH_SOURCE[0]}")/postgres.sh"
. "$(dirname "${BASH_SOURCE[0]}")/objectstore.sh"
