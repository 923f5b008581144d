#!/usr/bin/env bash
# `make services`: start Apache Kafka (KRaft), PostgreSQL and an S3 server on loopback, and write
# .lfz/services.env with the LFZ_* settings that point at them. Idempotent: servers already running are checked
# and left alone. Data lives under .lfz/services/ of this checkout; `make services-down` stops them.
#
# Usage: up.sh [kafka|postgres|s3]...  (all three when none is named; the settings file names every one running)
#
# Knobs (environment): SERVICES_KAFKA_PORT (9092), SERVICES_KAFKA_CONTROLLER_PORT (9093), SERVICES_PG_PORT (5432),
# SERVICES_S3_PORT (9000) to run beside another checkout's servers; SERVICES_DIR (.lfz/services) for a private set
# that writes its settings to $SERVICES_DIR/services.env; SERVICES_KAFKA_HEAP (-Xms256m -Xmx512m);
# SERVICES_PYTHON (.venv/bin/python, for the readiness checks); SERVICES_KAFKA_SASL=1 for a broker that takes only
# SCRAM-SHA-512 clients, with ACLs (user lfz; its settings go to the env file); SERVICES_KAFKA_TLS=1 for a client
# port that speaks TLS (SASL_SSL with SASL, SSL alone), its certificate signed by a CA made at first start (the env
# file names the protocol and the CA's ca.pem). Logs: $SERVICES_DIR/*.log and the PostgreSQL log named at start.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
. "$here/common.sh"  # and, through it, each service's script

wanted="$(chosen_services "$@")"
has() { [[ " $wanted " == *" $1 "* ]]; }

[[ -x "$PYTHON" ]] || die "no Python at $PYTHON (its readiness checks need the project's venv): run \`make install\`"
take_lock

if has kafka; then kafka_preflight; fi
if has s3; then s3_preflight; fi
if has postgres; then pg_preflight; fi
# Kafka's JVM and the S3 gateway start in the background while PostgreSQL starts; then wait for both.
if has kafka; then kafka_start; fi
if has s3; then s3_start; fi
if has postgres; then pg_start; fi
if has kafka; then kafka_wait; fi
if has s3; then s3_wait; fi

# The settings of every server of $SERVICES_DIR that runs now, so starting one service keeps the others' lines.
running() {
    case "$1" in
    kafka) [[ -n "$(live_pid "$KAFKA_PIDFILE" "$KAFKA_DIR/server.properties")" ]] ;;
    s3) [[ -n "$(live_pid "$S3_PIDFILE" "$S3_DIR/data")" ]] ;;
    postgres) [[ -n "$(pg_bindir)" ]] && pg_paths && [[ -n "$(live_pid "$PG_DATA/postmaster.pid" "$PG_DATA")" ]] ;;
    esac
}
tmp="$SERVICES_ENV.tmp.$$"
{
    echo "# Written by \`make services\` (infra/services/up.sh): the settings that point at its servers."
    echo "# Use: set -a; . ${SERVICES_ENV#"$REPO_ROOT/"}; set +a"
    if running kafka; then
        echo "LFZ_KAFKA_URL=kafka://127.0.0.1:$KAFKA_PORT"
        if kafka_is_sasl || kafka_is_tls; then echo "LFZ_KAFKA_SECURITY_PROTOCOL=$(kafka_formatted_protocol)"; fi
        if kafka_is_sasl; then
            echo "LFZ_KAFKA_SASL_MECHANISM=SCRAM-SHA-512"
            echo "LFZ_KAFKA_USERNAME=$KAFKA_USER"
            echo "LFZ_KAFKA_PASSWORD=$KAFKA_USER_PASSWORD"
        fi
        if kafka_is_tls; then echo "LFZ_KAFKA_SSL_CAFILE=$KAFKA_TLS_DIR/ca.pem"; fi
    fi
    if running postgres; then
        echo "LFZ_DATABASE_URL=postgresql+asyncpg://$PG_USER:$PG_PASSWORD@127.0.0.1:$PG_PORT/lfz"
    fi
    if running s3; then
        echo "LFZ_OBJECT_STORE_URL=http://127.0.0.1:$S3_PORT"
        echo "LFZ_S3_ACCESS_KEY=$S3_ACCESS_KEY"
        echo "LFZ_S3_SECRET_KEY=$S3_SECRET_KEY"
        echo "LFZ_BUCKET=$S3_BUCKET"
    fi
    if running postgres; then
        echo "# For tests that create and drop tables freely (read by tests/integration/conftest.py, not by Settings)."
        echo "LFZ_TEST_DATABASE_URL=postgresql+asyncpg://$PG_USER:$PG_PASSWORD@127.0.0.1:$PG_PORT/lfz_test"
    fi
} >"$tmp"
mv "$tmp" "$SERVICES_ENV"
say "running: $wanted; settings in ${SERVICES_ENV#"$REPO_ROOT/"} (set -a; . ${SERVICES_ENV#"$REPO_ROOT/"}; set +a)"
