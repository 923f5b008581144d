# Apache Kafka: one KRaft node (broker + controller) from the jars that infra/kafka/pom.xml pins.
# Sourced by common.sh.

KAFKA_DIR="$SERVICES_DIR/kafka"
KAFKA_LOG="$SERVICES_DIR/kafka.log"
KAFKA_PIDFILE="$SERVICES_DIR/kafka.pid"
KAFKA_TLS_DIR="$KAFKA_DIR/tls"
KAFKA_LIB="$KAFKA_HOME/lib"
KAFKA_HEAP="${SERVICES_KAFKA_HEAP:--Xms256m -Xmx512m}"

kafka_check_java() {
    command -v java >/dev/null 2>&1 || die "Kafka needs Java 17 or newer: apt-get install -y openjdk-17-jre-headless"
    local major
    major="$(java -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java\.specification\.version = //p')"
    [[ "${major%%.*}" -ge 17 ]] 2>/dev/null || die "Kafka 4 needs Java 17 or newer; \`java\` is version ${major:-unknown}"
}

# Copy the pinned jars into infra/kafka/lib once; again only when pom.xml changes (Maven caches them in ~/.m2).
kafka_fetch() {
    local want stamp="$KAFKA_LIB/.pom.sha256"
    want="$(sha256sum "$KAFKA_HOME/pom.xml" | cut -c1-64)"
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
        return 0
    fi
    command -v mvn >/dev/null 2>&1 || die "fetching Kafka needs Maven: apt-get install -y maven"
    say "Kafka: copying the jars pinned in infra/kafka/pom.xml into infra/kafka/lib (Maven cache: ~/.m2)"
    rm -rf "$KAFKA_HOME/target/lib"
    mkdir -p "$SERVICES_DIR"
    local log="$SERVICES_DIR/maven.log"
    if ! (cd "$KAFKA_HOME" && mvn -B -Dstyle.color=never dependency:copy-dependencies -DoutputDirectory=target/lib) \
        >"$log" 2>&1; then
        fail_service "Kafka" "$log" "\`mvn dependency:copy-dependencies\` failed in infra/kafka"
    fi
    rm -rf "$KAFKA_LIB"
    mv "$KAFKA_HOME/target/lib" "$KAFKA_LIB"
    echo "$want" >"$stamp"
}

# The JVM command line, without the main class. -XX:+ExitOnOutOfMemoryError: a broker out of heap dies loudly
# instead of limping on.
kafka_java_cmd() {
    # shellcheck disable=SC2206  # KAFKA_HEAP holds several flags on purpose
    KAFKA_JAVA=(java $KAFKA_HEAP -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:+ExitOnOutOfMemoryError
        -Djava.awt.headless=true "-Dlog4j2.configurationFile=$KAFKA_HOME/log4j2.properties" -cp "$KAFKA_LIB/*")
}

# The client listener's protocol for a SASL and a TLS choice (0 or 1 each): PLAINTEXT, SASL_PLAINTEXT, SSL or SASL_SSL.
kafka_protocol() {
    local protocol=PLAINTEXT
    if [[ "$1" == 1 ]]; then protocol=SASL_PLAINTEXT; fi
    if [[ "$2" == 1 ]]; then protocol="${protocol/PLAINTEXT/SSL}"; fi
    echo "$protocol"
}

# The broker's TLS files, made once with openssl in $KAFKA_TLS_DIR: a CA (ca.key, and ca.pem that clients trust) and
# the broker's key and certificate for 127.0.0.1 and localhost, signed by it; broker.pem holds the key (unencrypted
# PKCS#8) and the certificate chain, as the broker's PEM keystore.
kafka_make_certificates() {
    local dir="$KAFKA_TLS_DIR"
    if [[ -f "$dir/ca.pem" && -f "$dir/broker.pem" ]]; then return 0; fi
    command -v openssl >/dev/null 2>&1 || die "Kafka with TLS needs openssl: apt-get install -y openssl"
    say "Kafka: making a CA and the broker's certificate in $dir"
    rm -rf "$dir"
    mkdir -p "$dir"
    chmod 700 "$dir"
    if ! { openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=lfz services CA" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -keyout "$dir/ca.key" -out "$dir/ca.pem" &&
        openssl req -new -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout "$dir/broker.key" \
            -out "$dir/broker.csr" &&
        openssl x509 -req -days 3650 -in "$dir/broker.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
            -CAcreateserial -out "$dir/broker.crt" -extfile <(printf '%s\n' \
                "subjectAltName=IP:127.0.0.1,DNS:localhost" "basicConstraints=CA:FALSE" \
                "keyUsage=critical,digitalSignature,keyEncipherment" "extendedKeyUsage=serverAuth" \
                "authorityKeyIdentifier=keyid,issuer"); } >>"$KAFKA_LOG" 2>&1; then
        fail_service "Kafka" "$KAFKA_LOG" "making its TLS certificates with openssl failed"
    fi
    (umask 077 && cat "$dir/broker.key" "$dir/broker.crt" "$dir/ca.pem" >"$dir/broker.pem")
    rm -f "$dir/broker.csr"
}

# Before anything starts: a port that something else holds is an error now, not after the other servers started.
kafka_preflight() {
    if [[ -z "$(live_pid "$KAFKA_PIDFILE" "$KAFKA_DIR/server.properties")" ]]; then
        require_free_port "Kafka" "$KAFKA_PORT"
        require_free_port "Kafka (controller listener)" "$KAFKA_CONTROLLER_PORT"
    fi
}

# Start Kafka in the background unless it already runs; kafka_wait checks that it serves clients.
kafka_start() {
    kafka_check_java
    kafka_fetch
    kafka_java_cmd
    local pid
    pid="$(live_pid "$KAFKA_PIDFILE" "$KAFKA_DIR/server.properties")"
    if [[ -n "$pid" ]]; then
        KAFKA_WAS_RUNNING=1
        return 0
    fi
    KAFKA_WAS_RUNNING=0
    require_free_port "Kafka" "$KAFKA_PORT"
    require_free_port "Kafka (controller listener)" "$KAFKA_CONTROLLER_PORT"

    mkdir -p "$KAFKA_DIR"
    # Rendered on every start, so an edit to the template takes effect on the next `make services`.
    local templates=("$KAFKA_HOME/server.properties") protocol
    protocol="$(kafka_protocol "$KAFKA_SASL" "$KAFKA_TLS")"
    if [[ "$KAFKA_SASL" == 1 ]]; then templates+=("$KAFKA_HOME/sasl.properties"); fi
    if [[ "$KAFKA_TLS" == 1 ]]; then templates+=("$KAFKA_HOME/tls.properties"); fi
    cat "${templates[@]}" | sed -e "s#@LOG_DIRS@#$KAFKA_DIR/data#" -e "s#@PORT@#$KAFKA_PORT#g" \
        -e "s#@CONTROLLER_PORT@#$KAFKA_CONTROLLER_PORT#g" -e "s#@ADMIN_PASSWORD@#$KAFKA_ADMIN_PASSWORD#g" \
        -e "s#@PROTOCOL@#$protocol#g" -e "s#@protocol@#${protocol,,}#g" -e "s#@TLS_DIR@#$KAFKA_TLS_DIR#g" \
        >"$KAFKA_DIR/server.properties"
    # The KRaft log records the controller's address (and the SCRAM users) when it is formatted: other ports, or
    # another SASL or TLS choice, need a fresh log (the TLS choice is kept here for the clients' settings).
    local ports="$KAFKA_PORT $KAFKA_CONTROLLER_PORT sasl=$KAFKA_SASL tls=$KAFKA_TLS" formatted
    formatted="$(cat "$KAFKA_DIR/ports" 2>/dev/null || echo unknown)"
    # A log formatted before the SASL (then the TLS) choice was recorded was formatted without it.
    if [[ "$formatted" =~ ^[0-9]+\ [0-9]+$ ]]; then formatted="$formatted sasl=0"; fi
    if [[ "$formatted" =~ ^[0-9]+\ [0-9]+\ sasl=[01]$ ]]; then formatted="$formatted tls=0"; fi
    if [[ -f "$KAFKA_DIR/data/meta.properties" && "$formatted" != "$ports" ]]; then
        die "Kafka: $KAFKA_DIR/data was formatted for other settings ($formatted, now $ports); \
delete $KAFKA_DIR to start afresh, or run with the same settings"
    fi
    if [[ "$KAFKA_TLS" == 1 ]]; then kafka_make_certificates; fi
    if [[ ! -f "$KAFKA_DIR/data/meta.properties" ]]; then
        say "Kafka: formatting a new KRaft log in $KAFKA_DIR/data"
        rm -rf "$KAFKA_DIR/data"
        local cluster_id
        cluster_id="$("${KAFKA_JAVA[@]}" kafka.tools.StorageTool random-uuid 2>>"$KAFKA_LOG" | tail -n 1)"
        local users=()
        if [[ "$KAFKA_SASL" == 1 ]]; then
            users=(--add-scram "SCRAM-SHA-512=[name=admin,password=$KAFKA_ADMIN_PASSWORD]"
                --add-scram "SCRAM-SHA-512=[name=$KAFKA_USER,password=$KAFKA_USER_PASSWORD]"
                --add-scram "SCRAM-SHA-512=[name=guest,password=$KAFKA_GUEST_PASSWORD]")
        fi
        if ! "${KAFKA_JAVA[@]}" kafka.tools.StorageTool format --standalone -t "$cluster_id" \
            -c "$KAFKA_DIR/server.properties" "${users[@]}" >>"$KAFKA_LOG" 2>&1; then
            fail_service "Kafka" "$KAFKA_LOG" "formatting the storage failed"
        fi
        echo "$ports" >"$KAFKA_DIR/ports"
    fi
    say "Kafka: starting on 127.0.0.1:$KAFKA_PORT (log: $KAFKA_LOG)"
    spawn "$KAFKA_PIDFILE" "$KAFKA_LOG" "${KAFKA_JAVA[@]}" kafka.Kafka "$KAFKA_DIR/server.properties"
}

# Whether the Kafka of $SERVICES_DIR was formatted for SASL, for TLS (what its clients need, whoever started it).
kafka_is_sasl() {
    [[ "$(cat "$KAFKA_DIR/ports" 2>/dev/null)" == *" sasl=1"* ]]
}

kafka_is_tls() {
    [[ "$(cat "$KAFKA_DIR/ports" 2>/dev/null)" == *" tls=1"* ]]
}

# The protocol its clients speak: PLAINTEXT, SASL_PLAINTEXT, SSL or SASL_SSL.
kafka_formatted_protocol() {
    local sasl=0 tls=0
    if kafka_is_sasl; then sasl=1; fi
    if kafka_is_tls; then tls=1; fi
    kafka_protocol "$sasl" "$tls"
}

# Wait until Kafka answers a metadata request and can coordinate a consumer group (asked in its protocol, trusting its
# CA with TLS); with SASL, then give the system's user its ACLs: everything on the topics and consumer groups named
# lfz.*, and idempotent writes.
kafka_wait() {
    local pid
    pid="$(wait_listening "Kafka" "$KAFKA_PIDFILE" "$KAFKA_LOG" "$KAFKA_PORT" 90)"
    local options=()
    if kafka_is_sasl; then options+=(--sasl-username admin --sasl-password "$KAFKA_ADMIN_PASSWORD"); fi
    if kafka_is_tls; then options+=(--cafile "$KAFKA_TLS_DIR/ca.pem"); fi
    if ! "$PYTHON" "$REPO_ROOT/infra/services/probe.py" kafka "127.0.0.1:$KAFKA_PORT" --timeout 60 \
        "${options[@]}"; then
        fail_service "Kafka" "$KAFKA_LOG" "it does not answer clients on 127.0.0.1:$KAFKA_PORT"
    fi
    if kafka_is_sasl && [[ "$KAFKA_WAS_RUNNING" == 0 ]]; then
        local config="$KAFKA_DIR/admin.properties"
        local lines=("security.protocol=$(kafka_formatted_protocol)" "sasl.mechanism=SCRAM-SHA-512"
            "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username=\"admin\" password=\"$KAFKA_ADMIN_PASSWORD\";")
        if kafka_is_tls; then
            lines+=("ssl.truststore.type=PEM" "ssl.truststore.location=$KAFKA_TLS_DIR/ca.pem")
        fi
        printf '%s\n' "${lines[@]}" >"$config"
        local acl=("${KAFKA_JAVA[@]}" org.apache.kafka.tools.AclCommand --bootstrap-server "127.0.0.1:$KAFKA_PORT"
            --command-config "$config" --add --allow-principal "User:$KAFKA_USER")
        if ! { "${acl[@]}" --operation All --topic lfz. --resource-pattern-type prefixed &&
            "${acl[@]}" --operation All --group lfz. --resource-pattern-type prefixed &&
            "${acl[@]}" --operation IdempotentWrite --cluster; } >>"$KAFKA_LOG" 2>&1; then
            fail_service "Kafka" "$KAFKA_LOG" "creating the ACLs of user $KAFKA_USER failed"
        fi
        say "Kafka: SASL/SCRAM-SHA-512 with ACLs: user $KAFKA_USER may use the topics and groups lfz.*"
    fi
    if kafka_is_tls && [[ "$KAFKA_WAS_RUNNING" == 0 ]]; then
        say "Kafka: the client port speaks TLS ($(kafka_formatted_protocol)); clients trust $KAFKA_TLS_DIR/ca.pem"
    fi
    if [[ "$KAFKA_WAS_RUNNING" == 1 ]]; then
        say "Kafka: already running (pid $pid)"
    else
        say "Kafka: ready on 127.0.0.1:$KAFKA_PORT (pid $pid)"
    fi
}

kafka_stop() {
    stop_service "Kafka" "$KAFKA_PIDFILE" "$KAFKA_DIR/server.properties" 60
}
