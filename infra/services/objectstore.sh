# The S3 server: Versity S3 Gateway over a folder (posix backend), built from source with `go install` at a
# pinned version. Sourced by common.sh.

S3_DIR="$SERVICES_DIR/s3"
S3_LOG="$SERVICES_DIR/s3.log"
S3_PIDFILE="$SERVICES_DIR/s3.pid"
# Keyed by version: bumping VERSITYGW_VERSION builds a new binary; the Go module and build caches make a rebuild
# of the same version in a fresh clone a link step, with nothing downloaded.
VERSITYGW_BIN="$LFZ_DIR/bin/versitygw-$VERSITYGW_VERSION/versitygw"

s3_build() {
    [[ -x "$VERSITYGW_BIN" ]] && return 0
    # Go's own install folder may be missing from PATH in a bare environment (CI): look there too.
    local go
    go="$(command -v go || true)"
    [[ -n "$go" ]] || [[ ! -x /usr/local/go/bin/go ]] || go=/usr/local/go/bin/go
    [[ -n "$go" ]] || die "building the S3 server (versitygw) needs Go 1.25 or newer: apt-get install -y golang"
    say "S3: building versitygw $VERSITYGW_VERSION with go install (Go caches: $("$go" env GOMODCACHE), $("$go" env GOCACHE))"
    # CGO_ENABLED=0: a static binary that needs no C compiler on the machine.
    if ! GOBIN="$(dirname "$VERSITYGW_BIN")" CGO_ENABLED=0 GOFLAGS=-buildvcs=false \
        "$go" install "$VERSITYGW_MODULE@$VERSITYGW_VERSION"; then
        rm -rf "$(dirname "$VERSITYGW_BIN")"
        die "S3: \`go install $VERSITYGW_MODULE@$VERSITYGW_VERSION\` failed (see its output above)"
    fi
}

s3_preflight() {
    if [[ -z "$(live_pid "$S3_PIDFILE" "$S3_DIR/data")" ]]; then
        require_free_port "S3 (versitygw)" "$S3_PORT"
    fi
}

s3_start() {
    s3_build
    local pid
    pid="$(live_pid "$S3_PIDFILE" "$S3_DIR/data")"
    if [[ -n "$pid" ]]; then
        S3_WAS_RUNNING=1
        return 0
    fi
    S3_WAS_RUNNING=0
    require_free_port "S3 (versitygw)" "$S3_PORT"
    # The sidecar keeps object metadata out of extended attributes; it must not sit inside the data folder.
    mkdir -p "$S3_DIR/data" "$S3_DIR/meta"
    say "S3: starting versitygw on 127.0.0.1:$S3_PORT (log: $S3_LOG)"
    ROOT_ACCESS_KEY="$S3_ACCESS_KEY" ROOT_SECRET_KEY="$S3_SECRET_KEY" \
        spawn "$S3_PIDFILE" "$S3_LOG" "$VERSITYGW_BIN" --port "127.0.0.1:$S3_PORT" --quiet \
        posix --sidecar "$S3_DIR/meta" "$S3_DIR/data"
}

# Wait until the gateway answers S3 requests with our credentials, and create the bucket.
s3_wait() {
    local pid
    pid="$(wait_listening "S3 (versitygw)" "$S3_PIDFILE" "$S3_LOG" "$S3_PORT" 30)"
    if ! "$PYTHON" "$REPO_ROOT/infra/services/probe.py" s3 "http://127.0.0.1:$S3_PORT" \
        --access-key "$S3_ACCESS_KEY" --secret-key "$S3_SECRET_KEY" --bucket "$S3_BUCKET" --timeout 30; then
        fail_service "S3 (versitygw)" "$S3_LOG" "it does not answer S3 requests on 127.0.0.1:$S3_PORT"
    fi
    if [[ "$S3_WAS_RUNNING" == 1 ]]; then
        say "S3: already running (pid $pid), bucket '$S3_BUCKET'"
    else
        say "S3: ready on 127.0.0.1:$S3_PORT (pid $pid), bucket '$S3_BUCKET'"
    fi
}

s3_stop() {
    stop_service "S3" "$S3_PIDFILE" "$S3_DIR/data" 20
}
