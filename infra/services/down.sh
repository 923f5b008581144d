#!/usr/bin/env bash
# `make services-down`: stop the servers that `make services` started for this checkout. Their data stays under
# .lfz/services/ (delete that folder for a clean slate).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
. "$here/common.sh"
. "$here/kafka.sh"
. "$here/postgres.sh"
. "$here/objectstore.sh"

take_lock
kafka_stop
s3_stop
pg_stop
say "stopped"
