#!/usr/bin/env bash
# `make services`: start Apache Kafka (KRaft), PostgreSQL and an S3 server on loopback, and write
# .lfz/services.env with the LFZ_* settings that point at them. Idempotent: servers already running are checked
# and left alone. Data lives under .lfz/services/ of this checkout; `make services-down` stops them.
#
# Knobs (environment): SERVICES_KAFKA_PORT (9092), SERVICES_KAFKA_CONTROLLER_PORT (9093), SERVICES_PG_PORT (5432),
# SERVICES_S3_PORT (9000) to run beside another checkout's servers; SERVICES_KAFKA_HEAP (-Xms256m -Xmx512m);
# SERVICES_PYTHON (.venv/bin/python, for the readiness checks). Logs: .lfz/services/*.log and the PostgreSQL log
# named at start.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
. "$here/common.sh"
. "$here/kafka.sh"
. "$here/postgres.sh"
. "$here/objectstore.sh"

[[ -x "$PYTHON" ]] || die "no Python at $PYTHON (its readiness checks need the project's venv): run \`make install\`"
take_lock

kafka_preflight
s3_preflight
pg_preflight
# Kafka's JVM and the S3 gateway start in the background while PostgreSQL starts; then wait for both.
kafka_start
s3_start
pg_start
kafka_wait
s3_wait

tmp="$SERVICES_ENV.tmp.$$"
cat >"$tmp" <<ENV
# Written by \`make services\` (infra/services/up.sh): the settings that point at its servers.
# Use: set -a; . .lfz/services.env; set +a
LFZ_KAFKA_URL=kafka://127.0.0.1:$KAFKA_PORT
LFZ_DATABASE_URL=postgresql+asyncpg://$PG_USER:$PG_PASSWORD@127.0.0.1:$PG_PORT/lfz
LFZ_OBJECT_STORE_URL=http://127.0.0.1:$S3_PORT
LFZ_S3_ACCESS_KEY=$S3_ACCESS_KEY
LFZ_S3_SECRET_KEY=$S3_SECRET_KEY
LFZ_BUCKET=$S3_BUCKET
# For tests that create and drop tables freely (read by tests/integration/conftest.py, not by Settings).
LFZ_TEST_DATABASE_URL=postgresql+asyncpg://$PG_USER:$PG_PASSWORD@127.0.0.1:$PG_PORT/lfz_test
ENV
mv "$tmp" "$SERVICES_ENV"
say "all running; settings in ${SERVICES_ENV#"$REPO_ROOT/"} (set -a; . ${SERVICES_ENV#"$REPO_ROOT/"}; set +a)"
