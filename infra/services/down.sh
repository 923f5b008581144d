#!/usr/bin/env bash
# `make services-down`: stop the servers that `make services` started for this checkout. Their data stays under
# .lfz/services/ (delete that folder for a clean slate).
#
# Usage: down.sh [--purge] [kafka|postgres|s3]...  (all three when none is named). --purge also deletes their
# data, and is refused unless SERVICES_DIR names a private set (see common.sh): a test's servers, not the checkout's.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
. "$here/common.sh"  # and, through it, each service's script

purge=0
if [[ "${1:-}" == "--purge" ]]; then
    purge=1
    shift
    [[ "$SERVICES_PRIVATE" == 1 ]] ||
        die "--purge deletes data: it is only for a private SERVICES_DIR, never for $SERVICES_DIR"
fi
wanted="$(chosen_services "$@")"
has() { [[ " $wanted " == *" $1 "* ]]; }

take_lock
if has kafka; then kafka_stop; fi
if has s3; then s3_stop; fi
if has postgres; then pg_stop; fi
if [[ "$purge" == 1 ]]; then
    if has kafka; then rm -rf "$KAFKA_DIR" "$KAFKA_LOG" "$KAFKA_PIDFILE"; fi
    if has s3; then rm -rf "$S3_DIR" "$S3_LOG" "$S3_PIDFILE"; fi
    if has postgres; then pg_purge; fi
    say "stopped and deleted: $wanted"
else
    say "stopped: $wanted"
fi
