#!/usr/bin/env bash
# Interoperability checks: drives real MQTT clients against the release
# binary of Petrel, on a free port of 127.0.0.1.
#
#   mosquitto_pub / mosquitto_sub   (Debian package mosquitto-clients)
#   paho-mqtt 2.x                   (tests/interop/paho_check.py)
#   MQTT.js 5.x                     (tests/interop/mqttjs_check.mjs, `npm ci` here first)
#
# A second broker serves two TLS listeners (certificates made here with
# openssl, as docs/security.md shows) and a WebSocket one: mosquitto_pub/sub
# check MQTT over TLS with --cafile, and mutual TLS with a client
# certificate (refused without one); MQTT.js checks MQTT over ws://.
#
# Each client suite checks pub/sub at QoS 0, 1 and 2, a retained message
# (set, replaced, cleared), a last will and a persistent session, over MQTT
# 3.1.1 (mosquitto also pub/sub over MQTT 3.1); paho-mqtt and MQTT.js also
# run MQTT 5: user properties, message expiry, a shared subscription spread
# over two members, a will delay and session expiry. Every check
# prints one `PASS <client> <check>` or `FAIL <client> <check>` line; the
# script ends with one `N passed, M failed` line and exits non-zero when a
# check failed or the broker died.
#
# Usage: bash tests/interop/run.sh   (needs target/release/petrel, or
# PETREL_BIN=/path/to/petrel). KEEP_WORK=1 keeps the temporary folder with
# the broker log and the clients' output.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BIN=${PETREL_BIN:-$ROOT/target/release/petrel}
HOST=127.0.0.1

PASSED=0
FAILED=0
BROKER_PID=
TLS_BROKER_PID=
PORT=
WORK=$(mktemp -d "${TMPDIR:-/tmp}/petrel-interop.XXXXXX")
LOG=$WORK/broker.log
# Seconds the client checks may start within (each wait is bounded too):
# with a hung broker the script still ends in about three minutes.
BUDGET=${INTEROP_BUDGET:-140}
END=
# Unique per run, so topics and client ids never meet an earlier run's.
RUN="$$-$RANDOM"

pass() {
    PASSED=$((PASSED + 1))
    echo "PASS $*"
}

fail() {
    FAILED=$((FAILED + 1))
    echo "FAIL $*"
}

# Indented detail lines under a FAIL line; never start with PASS/FAIL.
detail() {
    sed 's/^/    | /' "$@" || true
}

# On exit, ends what this script started and has not reaped: its own
# background jobs only (jobs -p), so no PID can have been reused.
cleanup() {
    local pid
    if [[ -n $BROKER_PID ]]; then
        kill -KILL "$BROKER_PID" 2>/dev/null || true
    fi
    if [[ -n ${MOSQ_PID:-} ]]; then
        kill -KILL "$MOSQ_PID" 2>/dev/null || true
    fi
    if [[ -n ${PETREL_BRIDGE_PID:-} ]]; then
        kill -KILL "$PETREL_BRIDGE_PID" 2>/dev/null || true
    fi
    if [[ -n $TLS_BROKER_PID ]]; then
        kill -KILL "$TLS_BROKER_PID" 2>/dev/null || true
    fi
    for pid in $(jobs -p); do
        kill -TERM "$pid" 2>/dev/null || true
    done
    if [[ ${KEEP_WORK:-} == 1 ]]; then
        echo "(kept $WORK)"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()'
}

broker_alive() {
    [[ -n $BROKER_PID ]] && kill -0 "$BROKER_PID" 2>/dev/null
}

# True when there is budget left and the broker runs; otherwise records NAME
# as failed (not run), so that a dead or hung broker ends the script early.
can_run() {
    if ! broker_alive; then
        fail "$1: not run, the broker is not running"
        return 1
    fi
    if ((SECONDS >= END)); then
        fail "$1: not run, the time budget (${BUDGET}s) is used up"
        return 1
    fi
}

# run_check NAME FUNCTION ARGS...
run_check() {
    local name=$1
    shift
    if can_run "$name"; then
        "$@"
    fi
}

# Waits (bounded) until FILE has at least N lines.
wait_lines() {
    local file=$1 n=$2 secs=$3
    # shellcheck disable=SC2016 # expanded by the inner bash
    timeout "$secs" bash -c '
        while [ "$(wc -l < "$1" 2>/dev/null || echo 0)" -lt "$2" ]; do sleep 0.05; done
    ' _ "$file" "$n"
}

# Waits for a background process (itself bounded) and sets RC to its exit
# status. Not usable in $(...): a subshell cannot wait for our children.
RC=0
wait_rc() {
    RC=0
    wait "$1" || RC=$?
}

start_broker() {
    local attempt
    for attempt in 1 2 3; do
        PORT=$(free_port)
        echo "starting $BIN --listen $HOST:$PORT (log: $LOG)"
        NO_COLOR=1 "$BIN" --listen "$HOST:$PORT" --data-dir "$WORK/data" >>"$LOG" 2>&1 &
        BROKER_PID=$!
        # Ready when the port accepts a TCP connection (bounded).
        # shellcheck disable=SC2016 # expanded by the inner bash
        if timeout 10 bash -c '
            until (: <"/dev/tcp/$1/$2") 2>/dev/null; do
                kill -0 "$3" 2>/dev/null || exit 1
                sleep 0.1
            done' _ "$HOST" "$PORT" "$BROKER_PID"; then
            return 0
        fi
        echo "broker did not come up on port $PORT (attempt $attempt):"
        detail "$LOG"
        kill -KILL "$BROKER_PID" 2>/dev/null || true
        wait "$BROKER_PID" 2>/dev/null || true
        BROKER_PID=
    done
    return 1
}

# ---------------------------------------------------------------------------
# mosquitto_pub / mosquitto_sub
# ---------------------------------------------------------------------------

mpub() { timeout 10 mosquitto_pub -h "$HOST" -p "$PORT" "$@"; }

# Output format of every mosquitto_sub here: retain flag, QoS, topic, payload.
FMT='%r %q %t %p'

# Pub/sub at one QoS. The subscriber subscribes to a retained probe topic and
# the test topic in one SUBSCRIBE; once the probe has arrived the
# subscription is in place, and only then is the test message published.
# mosq_pubsub QOS [PROTOCOL]: PROTOCOL is mosquitto's -V (default mqttv311).
mosq_pubsub() {
    local qos=$1 version=${2:-mqttv311}
    local tag=qos$qos
    [[ $version == mqttv311 ]] || tag="$version $tag"
    local name="mosquitto $tag pubsub"
    tag=${tag// /-}
    local topic="interop/$RUN/mosq/$tag" probe="interop/$RUN/mosq/$tag-probe"
    local payload="mosquitto-$tag-$RUN"
    local out=$WORK/mosq-$tag.out
    : >"$out"
    if ! mpub -V "$version" -q 1 -r -t "$probe" -m probe >"$out.pub" 2>&1; then
        fail "$name: cannot publish the retained probe"
        detail "$out.pub"
        return
    fi
    timeout 20 mosquitto_sub -h "$HOST" -p "$PORT" -V "$version" -q "$qos" -t "$probe" -t "$topic" \
        -C 2 -W 15 -F "$FMT" >"$out" 2>"$out.err" &
    local sub=$!
    if ! wait_lines "$out" 1 10; then
        kill "$sub" 2>/dev/null || true
        wait "$sub" 2>/dev/null || true
        fail "$name: the subscriber never received the retained probe"
        detail "$out" "$out.err"
        return
    fi
    if ! mpub -V "$version" -q "$qos" -t "$topic" -m "$payload" >"$out.pub" 2>&1; then
        fail "$name: mosquitto_pub failed"
        detail "$out.pub"
    fi
    local rc
    wait_rc "$sub"
    rc=$RC
    mpub -V "$version" -q 1 -r -t "$probe" -n >/dev/null 2>&1 || true
    local want="0 $qos $topic $payload" got
    got=$(sed -n 2p "$out")
    if [[ $rc == 0 && $got == "$want" ]]; then
        pass "$name"
    else
        fail "$name: subscriber exit $rc; want line 2 '$want', got '$got'"
        detail "$out" "$out.err"
    fi
}

# A retained message, replaced once, is delivered (the newer one, with the
# retain flag) to a subscriber that comes later.
mosq_retained() {
    local name="mosquitto retained"
    local topic="interop/$RUN/mosq/retained"
    local out=$WORK/mosq-retained.out
    if ! mpub -q 1 -r -t "$topic" -m "mosquitto-retained-old-$RUN" >"$out.pub" 2>&1 ||
        ! mpub -q 1 -r -t "$topic" -m "mosquitto-retained-$RUN" >>"$out.pub" 2>&1; then
        fail "$name: mosquitto_pub failed"
        detail "$out.pub"
        return
    fi
    local rc=0
    timeout 20 mosquitto_sub -h "$HOST" -p "$PORT" -q 1 -t "$topic" -C 1 -W 10 -F "$FMT" \
        >"$out" 2>"$out.err" || rc=$?
    local want="1 1 $topic mosquitto-retained-$RUN" got
    got=$(cat "$out")
    if [[ $rc == 0 && $got == "$want" ]]; then
        pass "$name"
    else
        fail "$name: subscriber exit $rc; want '$want', got '$got'"
        detail "$out" "$out.err"
    fi
}

# An empty retained payload clears the retained message: a later subscriber
# gets the probe (so it is subscribed) and nothing on the cleared topic.
mosq_retained_clear() {
    local name="mosquitto retained clear"
    local topic="interop/$RUN/mosq/retained-clear" probe="interop/$RUN/mosq/retained-clear-probe"
    local out=$WORK/mosq-retained-clear.out
    if ! mpub -q 1 -r -t "$topic" -m "mosquitto-clear-me-$RUN" >"$out.pub" 2>&1 ||
        ! mpub -q 1 -r -t "$topic" -n >>"$out.pub" 2>&1 ||
        ! mpub -q 1 -r -t "$probe" -m probe >>"$out.pub" 2>&1; then
        fail "$name: mosquitto_pub failed"
        detail "$out.pub"
        return
    fi
    local rc=0
    # Expects a timeout (exit 27) after the probe: nothing else may come.
    timeout 20 mosquitto_sub -h "$HOST" -p "$PORT" -q 1 -t "$topic" -t "$probe" -C 2 -W 2 \
        -F "$FMT" >"$out" 2>"$out.err" || rc=$?
    mpub -q 1 -r -t "$probe" -n >/dev/null 2>&1 || true
    local want="1 1 $probe probe" got
    got=$(cat "$out")
    if [[ $rc == 27 && $got == "$want" ]]; then
        pass "$name"
    else
        fail "$name: subscriber exit $rc (27 = timed out, expected); want only '$want', got '$got'"
        detail "$out" "$out.err"
    fi
}

# A client with a will is killed with SIGKILL; another subscriber gets the will.
mosq_will() {
    local name="mosquitto will"
    local topic="interop/$RUN/mosq/will" payload="mosquitto-will-$RUN"
    local wprobe="interop/$RUN/mosq/will-watcher-probe" cprobe="interop/$RUN/mosq/will-client-probe"
    local out=$WORK/mosq-will.out cout=$WORK/mosq-will-client.out
    : >"$out"
    : >"$cout"
    if ! mpub -q 1 -r -t "$wprobe" -m probe >"$out.pub" 2>&1 ||
        ! mpub -q 1 -r -t "$cprobe" -m probe >>"$out.pub" 2>&1; then
        fail "$name: cannot publish the retained probes"
        detail "$out.pub"
        return
    fi
    timeout 25 mosquitto_sub -h "$HOST" -p "$PORT" -q 1 -t "$wprobe" -t "$topic" -C 2 -W 20 \
        -F "$FMT" >"$out" 2>"$out.err" &
    local watcher=$!
    # Started directly (no `timeout` wrapper, no shell function: either would
    # put a parent process between $! and mosquitto_sub) so that SIGKILL
    # reaches mosquitto_sub itself; -W bounds it should the kill never come.
    mosquitto_sub -h "$HOST" -p "$PORT" -i "mosq-will-$RUN" -q 1 -t "$cprobe" -W 30 -F "$FMT" \
        --will-topic "$topic" --will-payload "$payload" --will-qos 1 >"$cout" 2>"$cout.err" &
    local client=$!
    if ! wait_lines "$out" 1 10 || ! wait_lines "$cout" 1 10; then
        kill "$watcher" "$client" 2>/dev/null || true
        wait "$watcher" "$client" 2>/dev/null || true
        fail "$name: a subscriber never received its retained probe"
        detail "$out" "$out.err" "$cout" "$cout.err"
        return
    fi
    kill -KILL "$client"
    wait "$client" 2>/dev/null || true
    local rc
    wait_rc "$watcher"
    rc=$RC
    mpub -q 1 -r -t "$wprobe" -n >/dev/null 2>&1 || true
    mpub -q 1 -r -t "$cprobe" -n >/dev/null 2>&1 || true
    local want="0 1 $topic $payload" got
    got=$(sed -n 2p "$out")
    if [[ $rc == 0 && $got == "$want" ]]; then
        pass "$name"
    else
        fail "$name: watcher exit $rc; want line 2 '$want', got '$got'"
        detail "$out" "$out.err"
    fi
}

# mosquitto_sub -c -i ID subscribes at QoS 1 and leaves; three QoS 1
# messages are published while it is away; reconnecting with the same id
# (subscribing to an unrelated topic only, so the messages can come from the
# stored session alone) receives them in order.
mosq_persistent() {
    local name="mosquitto persistent session"
    local id="mosq-persist-$RUN"
    local topic="interop/$RUN/mosq/persist" other="interop/$RUN/mosq/persist-other"
    local out=$WORK/mosq-persist.out
    local rc=0
    timeout 15 mosquitto_sub -h "$HOST" -p "$PORT" -c -i "$id" -q 1 -t "$topic" -E \
        >"$out.first" 2>&1 || rc=$?
    if [[ $rc != 0 ]]; then
        fail "$name: first subscription (mosquitto_sub -c -E) exited $rc"
        detail "$out.first"
        return
    fi
    local i want=""
    for i in 1 2 3; do
        if ! mpub -q 1 -t "$topic" -m "mosquitto-persist-$i-$RUN" >>"$out.pub" 2>&1; then
            fail "$name: mosquitto_pub failed"
            detail "$out.pub"
            return
        fi
        want+="1 $topic mosquitto-persist-$i-$RUN"$'\n'
    done
    rc=0
    timeout 20 mosquitto_sub -h "$HOST" -p "$PORT" -c -i "$id" -q 1 -t "$other" -C 3 -W 10 \
        -F '%q %t %p' >"$out" 2>"$out.err" || rc=$?
    # End the session so nothing is left queued.
    timeout 15 mosquitto_sub -h "$HOST" -p "$PORT" -i "$id" -t "$other" -E >/dev/null 2>&1 || true
    local got
    got=$(cat "$out")
    if [[ $rc == 0 && $got == "${want%$'\n'}" ]]; then
        pass "$name"
    else
        fail "$name: reconnect exit $rc; want the three messages in order, got:"
        detail "$out" "$out.err"
    fi
}

# ---------------------------------------------------------------------------
# TLS: a second broker with a server-certificate listener and a mutual-TLS
# listener, and mosquitto_pub/sub with --cafile (and a client certificate).
# ---------------------------------------------------------------------------

TLS_PORT=
MTLS_PORT=
WS_PORT=

# Makes a CA, a server certificate for 127.0.0.1 and a client certificate
# in $WORK/pki with openssl; false if openssl fails.
make_pki() {
    local dir=$WORK/pki
    mkdir -p "$dir"
    (
        cd "$dir" || exit 1
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
            -subj "/CN=Petrel interop CA" -keyout ca.key -out ca.pem &&
            openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
                -subj "/CN=localhost" -keyout server.key -out server.csr &&
            printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >server.ext &&
            openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
                -days 30 -extfile server.ext -out server.pem &&
            openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
                -subj "/CN=interop-device" -keyout client.key -out client.csr &&
            printf 'extendedKeyUsage=clientAuth\n' >client.ext &&
            openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
                -days 30 -extfile client.ext -out client.pem
    ) >"$WORK/pki.log" 2>&1
}

start_tls_broker() {
    local dir=$WORK/pki
    TLS_PORT=$(free_port)
    MTLS_PORT=$(free_port)
    WS_PORT=$(free_port)
    cat >"$WORK/tls.toml" <<TOML
sys_interval = 0

[[listener]]
bind = "$HOST:$TLS_PORT"
[listener.tls]
cert = "$dir/server.pem"
key = "$dir/server.key"

[[listener]]
bind = "$HOST:$WS_PORT"
[listener.websocket]
path = "/mqtt"

[[listener]]
bind = "$HOST:$MTLS_PORT"
allow_anonymous = false
[listener.tls]
cert = "$dir/server.pem"
key = "$dir/server.key"
ca = "$dir/ca.pem"
require_certificate = true
use_identity_as_username = true
TOML
    NO_COLOR=1 "$BIN" -c "$WORK/tls.toml" --data-dir "$WORK/tls-data" >"$WORK/tls-broker.log" 2>&1 &
    TLS_BROKER_PID=$!
    # shellcheck disable=SC2016 # expanded by the inner bash
    timeout 10 bash -c '
        until (: <"/dev/tcp/$1/$2") 2>/dev/null && (: <"/dev/tcp/$1/$3") 2>/dev/null &&
            (: <"/dev/tcp/$1/$4") 2>/dev/null; do
            kill -0 "$5" 2>/dev/null || exit 1
            sleep 0.1
        done' _ "$HOST" "$TLS_PORT" "$MTLS_PORT" "$WS_PORT" "$TLS_BROKER_PID"
}

# mosq_tls NAME PORT CLIENT-CERT-ARGS...: a retained message published and
# read back over TLS.
mosq_tls() {
    local name=$1 port=$2
    shift 2
    local topic="interop/$RUN/tls/$port" payload="tls-$RUN"
    local out=$WORK/tls-$port.out
    local tls=(-h "$HOST" -p "$port" --cafile "$WORK/pki/ca.pem" "$@")
    if ! timeout 10 mosquitto_pub "${tls[@]}" -q 1 -r -t "$topic" -m "$payload" >"$out.pub" 2>&1; then
        fail "$name: mosquitto_pub over TLS failed"
        detail "$out.pub" "$WORK/tls-broker.log"
        return
    fi
    local rc=0
    timeout 15 mosquitto_sub "${tls[@]}" -q 1 -t "$topic" -C 1 -W 10 -F '%t %p' >"$out" 2>"$out.err" || rc=$?
    local got
    got=$(cat "$out")
    if [[ $rc == 0 && $got == "$topic $payload" ]]; then
        pass "$name"
    else
        fail "$name: subscriber exit $rc, got '$got'"
        detail "$out" "$out.err" "$WORK/tls-broker.log"
    fi
}

# Without a client certificate the mutual-TLS listener serves nothing.
mosq_mtls_refused() {
    local name="mosquitto mutual TLS without a certificate is refused"
    local rc=0
    timeout 10 mosquitto_pub -h "$HOST" -p "$MTLS_PORT" --cafile "$WORK/pki/ca.pem" \
        -t "interop/$RUN/tls/refused" -m x >"$WORK/mtls-refused.out" 2>&1 || rc=$?
    if [[ $rc != 0 ]]; then
        pass "$name"
    else
        fail "$name: mosquitto_pub succeeded"
    fi
}

run_tls() {
    local tool
    for tool in openssl mosquitto_pub mosquitto_sub; do
        if ! command -v "$tool" >/dev/null; then
            fail "TLS suite: $tool not found"
            return
        fi
    done
    if ! make_pki; then
        fail "TLS suite: openssl could not make the certificates"
        detail "$WORK/pki.log"
        return
    fi
    if ! start_tls_broker; then
        fail "TLS suite: the TLS broker did not start"
        detail "$WORK/tls-broker.log"
        return
    fi
    run_check "mosquitto over TLS (--cafile)" mosq_tls "mosquitto over TLS (--cafile)" "$TLS_PORT"
    run_check "mosquitto mutual TLS" mosq_tls "mosquitto mutual TLS (client certificate)" "$MTLS_PORT" \
        --cert "$WORK/pki/client.pem" --key "$WORK/pki/client.key"
    run_check "mosquitto mutual TLS refused" mosq_mtls_refused
}

run_mosquitto() {
    local tool
    for tool in mosquitto_pub mosquitto_sub; do
        if ! command -v "$tool" >/dev/null; then
            fail "mosquitto suite: $tool not found (apt-get install mosquitto-clients)"
            return
        fi
    done
    run_check "mosquitto qos0 pubsub" mosq_pubsub 0
    run_check "mosquitto qos1 pubsub" mosq_pubsub 1
    run_check "mosquitto qos2 pubsub" mosq_pubsub 2
    run_check "mosquitto mqttv31 qos1 pubsub" mosq_pubsub 1 mqttv31
    run_check "mosquitto retained" mosq_retained
    run_check "mosquitto retained clear" mosq_retained_clear
    run_check "mosquitto will" mosq_will
    run_check "mosquitto persistent session" mosq_persistent
}

# ---------------------------------------------------------------------------
# paho-mqtt and MQTT.js: each script prints its own PASS/FAIL lines.
# ---------------------------------------------------------------------------

# run_suite LABEL SECONDS COMMAND...: runs one client script (bounded), echoes
# its output and counts its PASS/FAIL lines. A script that dies or times out
# without a FAIL line counts as one failure.
run_suite() {
    local label=$1 secs=$2
    shift 2
    local out=$WORK/$label.out rc=0
    can_run "$label suite" || return 0
    if ((END - SECONDS < secs)); then
        secs=$((END - SECONDS))
    fi
    timeout -k 5 "$secs" "$@" >"$out" 2>&1 || rc=$?
    local p f
    p=$(grep -c '^PASS ' "$out" || true)
    f=$(grep -c '^FAIL ' "$out" || true)
    # Echo the output, keeping PASS/FAIL lines as they are and indenting the rest.
    sed -E '/^(PASS|FAIL) /!s/^/    | /' "$out"
    PASSED=$((PASSED + p))
    FAILED=$((FAILED + f))
    if [[ $rc == 124 || $rc == 137 ]]; then
        fail "$label suite: timed out after ${secs}s"
    elif [[ $rc != 0 && $f == 0 ]]; then
        fail "$label suite: exited $rc without a FAIL line"
    elif [[ $rc == 0 && $p == 0 ]]; then
        fail "$label suite: ran no check"
    fi
}

run_paho() {
    if ! python3 -c 'import paho.mqtt.client' 2>/dev/null; then
        fail "paho suite: paho-mqtt not installed (python3 -m pip install paho-mqtt)"
        return
    fi
    run_suite paho 90 python3 "$HERE/paho_check.py" "$PORT" "$RUN"
}

run_mqttjs() {
    if ! command -v node >/dev/null; then
        fail "mqttjs suite: node not found"
        return
    fi
    if [[ ! -d $HERE/node_modules/mqtt ]]; then
        fail "mqttjs suite: MQTT.js not installed (cd tests/interop && npm ci)"
        return
    fi
    # With the second broker up, MQTT.js also runs over ws://.
    local ws=()
    if [[ -n $TLS_BROKER_PID ]] && kill -0 "$TLS_BROKER_PID" 2>/dev/null; then
        ws=("$WS_PORT")
    fi
    run_suite mqttjs 90 node "$HERE/mqttjs_check.mjs" "$PORT" "$RUN" "${ws[@]}"
}

# ---------------------------------------------------------------------------

if [[ ! -x $BIN ]]; then
    echo "no broker binary at $BIN: run cargo build --release first"
    fail "broker binary present"
    echo "$PASSED passed, $FAILED failed"
    exit 1
fi

if ! start_broker; then
    fail "broker starts and listens"
    echo "$PASSED passed, $FAILED failed"
    exit 1
fi
echo "broker pid $BROKER_PID listening on $HOST:$PORT"
END=$((SECONDS + BUDGET))

run_mosquitto
run_tls
run_paho
run_mqttjs
if [[ -n $TLS_BROKER_PID ]]; then
    kill -TERM "$TLS_BROKER_PID" 2>/dev/null || true
    timeout 15 tail --pid="$TLS_BROKER_PID" -f /dev/null || kill -KILL "$TLS_BROKER_PID" 2>/dev/null || true
    wait "$TLS_BROKER_PID" 2>/dev/null || true
    TLS_BROKER_PID=
fi

if broker_alive; then
    pass "broker still running after the client suites"
    # Graceful stop: SIGTERM to the PID started above, bounded wait.
    kill -TERM "$BROKER_PID"
    if timeout 15 tail --pid="$BROKER_PID" -f /dev/null; then
        wait_rc "$BROKER_PID"
        BROKER_PID=
        if [[ $RC == 0 ]]; then
            pass "broker exits 0 on SIGTERM"
        else
            fail "broker exits 0 on SIGTERM: exit status $RC"
        fi
    else
        fail "broker exits 0 on SIGTERM: still running 15 s after SIGTERM; killed"
        kill -KILL "$BROKER_PID" 2>/dev/null || true
        wait "$BROKER_PID" 2>/dev/null || true
        BROKER_PID=
    fi
else
    wait_rc "$BROKER_PID"
    BROKER_PID=
    fail "broker still running after the client suites: it exited with status $RC"
fi

# ---------------------------------------------------------------------------
# Durable state: a persistent mosquitto_sub session, the QoS 1 messages
# queued for it while it is away, and a retained message survive a clean
# restart (SIGTERM) and a kill -9 of the broker on the same data_dir.

# durable_receive NAME ID WANT: reconnects the persistent session ID and
# expects the lines WANT ("topic payload" each, in order).
durable_receive() {
    local name=$1 id=$2 want=$3 out=$WORK/durable-$RANDOM.out rc=0
    local count
    count=$(printf '%s\n' "$want" | wc -l)
    timeout 20 mosquitto_sub -h "$HOST" -p "$PORT" -c -i "$id" -q 1 \
        -t "interop/$RUN/durable-other" -C "$count" -W 10 -F '%t %p' >"$out" 2>"$out.err" || rc=$?
    if [[ $rc == 0 && $(cat "$out") == "$want" ]]; then
        pass "$name"
    else
        fail "$name: exit $rc; want:"
        printf '%s\n' "$want" | sed 's/^/    | /'
        echo "    got:"
        detail "$out" "$out.err"
    fi
}

durable_suite() {
    local id="mosq-durable-$RUN" topic="interop/$RUN/durable"
    if ! start_broker; then
        fail "durable state: the broker did not start on its data_dir"
        return
    fi
    timeout 15 mosquitto_sub -h "$HOST" -p "$PORT" -c -i "$id" -q 1 -t "$topic" -E >/dev/null 2>&1 ||
        fail "durable state: mosquitto_sub -c -E failed"
    mpub -q 1 -t "$topic" -m durable-1 && mpub -q 1 -t "$topic" -m durable-2 &&
        mpub -q 1 -r -t "$topic/retained" -m kept ||
        fail "durable state: mosquitto_pub failed"
    kill -TERM "$BROKER_PID"
    timeout 15 tail --pid="$BROKER_PID" -f /dev/null || kill -KILL "$BROKER_PID" 2>/dev/null || true
    wait "$BROKER_PID" 2>/dev/null || true
    BROKER_PID=
    if ! start_broker; then
        fail "durable state: the broker did not restart on its data_dir"
        return
    fi
    durable_receive "persistent session and its queue survive a restart (mosquitto_sub -c)" \
        "$id" "$topic durable-1"$'\n'"$topic durable-2"
    local retained=$WORK/durable-retained.out rc=0
    timeout 15 mosquitto_sub -h "$HOST" -p "$PORT" -t "$topic/retained" -C 1 -W 10 -F '%r %t %p' \
        >"$retained" 2>&1 || rc=$?
    if [[ $rc == 0 && $(cat "$retained") == "1 $topic/retained kept" ]]; then
        pass "retained message survives a restart"
    else
        fail "retained message survives a restart: exit $rc"
        detail "$retained"
    fi
    mpub -q 1 -t "$topic" -m durable-3 || fail "durable state: mosquitto_pub failed"
    # No shutdown code runs: the acknowledged message must already be on disk.
    kill -KILL "$BROKER_PID"
    wait "$BROKER_PID" 2>/dev/null || true
    BROKER_PID=
    if ! start_broker; then
        fail "durable state: the broker did not start after kill -9"
        return
    fi
    durable_receive "an acknowledged QoS 1 message survives kill -9" "$id" "$topic durable-3"
    # End the session, then stop.
    timeout 15 mosquitto_sub -h "$HOST" -p "$PORT" -i "$id" -t "$topic" -E >/dev/null 2>&1 || true
    kill -TERM "$BROKER_PID"
    timeout 15 tail --pid="$BROKER_PID" -f /dev/null || kill -KILL "$BROKER_PID" 2>/dev/null || true
    wait "$BROKER_PID" 2>/dev/null || true
    BROKER_PID=
}
durable_suite

# ---------------------------------------------------------------------------
# A bridge from Petrel to a real Mosquitto broker (apt `mosquitto`), both
# directions, and its queue kept across a kill -9 of Petrel while Mosquitto
# is down.
MOSQ_PID=
PETREL_BRIDGE_PID=

start_mosquitto() {
    "$MOSQUITTO" -c "$WORK/mosquitto.conf" >>"$WORK/mosquitto.log" 2>&1 &
    MOSQ_PID=$!
    # shellcheck disable=SC2016 # expanded by the inner bash
    timeout 10 bash -c 'until (: <"/dev/tcp/$1/$2") 2>/dev/null; do sleep 0.05; done' \
        _ "$HOST" "$MOSQ_PORT"
}

start_petrel_bridge() {
    NO_COLOR=1 "$BIN" -c "$WORK/bridge.toml" --data-dir "$WORK/bridge-data" \
        >>"$WORK/petrel-bridge.log" 2>&1 &
    PETREL_BRIDGE_PID=$!
}

# bridge_state WANT: waits (bounded) until Petrel's bridge state is WANT.
bridge_state() {
    local want=$1 got i
    for i in $(seq 1 100); do
        got=$(timeout 5 mosquitto_sub -h "$HOST" -p "$BRIDGE_PORT" -t '$SYS/broker/connection/mosq/state' \
            -C 1 -W 2 2>/dev/null || true)
        [[ $got == "$want" ]] && return 0
        sleep 0.1
    done
    return 1
}

# subscribe_ready PORT TOPIC COUNT OUT: a background mosquitto_sub for
# COUNT messages on TOPIC, known to be subscribed once it has printed a
# retained probe (also on PORT); sets SUB to its PID. The probe line is
# the first of OUT.
subscribe_ready() {
    local port=$1 topic=$2 count=$3 out=$4
    local probe="interop/$RUN/bridge/probe/$RANDOM"
    timeout 10 mosquitto_pub -h "$HOST" -p "$port" -q 1 -r -t "$probe" -m probe
    timeout 20 mosquitto_sub -h "$HOST" -p "$port" -q 1 -t "$probe" -t "$topic" \
        -C $((count + 1)) -W 15 -F '%t %p' >"$out" 2>&1 &
    SUB=$!
    wait_lines "$out" 1 10
}

# bridge_forward NAME SUB-PORT FILTER PUB-PORT TOPIC PAYLOAD WANT: a message
# published on one broker arrives through the bridge on the other as WANT
# ("topic payload").
bridge_forward() {
    local name=$1 sub_port=$2 filter=$3 pub_port=$4 topic=$5 payload=$6 want=$7
    local out=$WORK/bridge-$RANDOM.out
    subscribe_ready "$sub_port" "$filter" 1 "$out"
    timeout 10 mosquitto_pub -h "$HOST" -p "$pub_port" -q 1 -t "$topic" -m "$payload"
    wait_rc "$SUB"
    if [[ $RC == 0 && $(sed 1d "$out") == "$want" ]]; then
        pass "bridge to mosquitto: $name"
    else
        fail "bridge to mosquitto: $name: exit $RC"
        detail "$out" "$WORK/petrel-bridge.log"
    fi
}

bridge_suite() {
    MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)
    if [[ ! -x $MOSQUITTO ]]; then
        fail "bridge to mosquitto: the mosquitto broker is not installed"
        return
    fi
    MOSQ_PORT=$(free_port)
    BRIDGE_PORT=$(free_port)
    local base="interop/$RUN/bridge"
    printf 'listener %s %s\nallow_anonymous true\npersistence false\n' "$MOSQ_PORT" "$HOST" \
        >"$WORK/mosquitto.conf"
    cat >"$WORK/bridge.toml" <<TOML
sys_interval = 0
[[listener]]
bind = "$HOST:$BRIDGE_PORT"

[[bridge]]
name = "mosq"
addresses = ["$HOST:$MOSQ_PORT"]
protocol = "5.0"
reconnect_min_ms = 100
reconnect_max_ms = 500

[[bridge.topic]]
filter = "$base/out/#"
direction = "out"
qos = 1
remote_prefix = "petrel/"

[[bridge.topic]]
filter = "$base/in/#"
direction = "in"
qos = 1
local_prefix = "from-mosquitto/"
TOML
    if ! start_mosquitto; then
        fail "bridge to mosquitto: mosquitto did not start"
        detail "$WORK/mosquitto.log"
        return
    fi
    start_petrel_bridge
    if ! bridge_state 1; then
        fail "bridge to mosquitto: the bridge never came up"
        detail "$WORK/petrel-bridge.log"
        return
    fi
    pass "bridge to mosquitto: up, state 1 on \$SYS/broker/connection/mosq/state"

    bridge_forward "out, with the remote prefix" "$MOSQ_PORT" "petrel/$base/out/#" \
        "$BRIDGE_PORT" "$base/out/x" hello-mosquitto "petrel/$base/out/x hello-mosquitto"
    bridge_forward "in, with the local prefix" "$BRIDGE_PORT" "from-mosquitto/$base/in/#" \
        "$MOSQ_PORT" "$base/in/y" hello-petrel "from-mosquitto/$base/in/y hello-petrel"

    # Mosquitto goes down; three QoS 1 messages wait in Petrel's store;
    # Petrel is killed (-9) and restarted; Mosquitto comes back with a
    # subscriber; the three arrive, in order.
    kill -TERM "$MOSQ_PID"
    wait "$MOSQ_PID" 2>/dev/null || true
    MOSQ_PID=
    bridge_state 0 || fail "bridge to mosquitto: state 0 never published"
    local i
    for i in 1 2 3; do
        timeout 10 mosquitto_pub -h "$HOST" -p "$BRIDGE_PORT" -q 1 -t "$base/out/queued" -m "queued-$i" ||
            fail "bridge to mosquitto: mosquitto_pub $i failed"
    done
    kill -KILL "$PETREL_BRIDGE_PID"
    wait "$PETREL_BRIDGE_PID" 2>/dev/null || true
    if ! start_mosquitto; then
        fail "bridge to mosquitto: mosquitto did not restart"
        return
    fi
    local queued=$WORK/bridge-queued.out topic="petrel/$base/out/queued" rc
    subscribe_ready "$MOSQ_PORT" "$topic" 3 "$queued"
    start_petrel_bridge
    wait_rc "$SUB"
    rc=$RC
    if [[ $rc == 0 && $(sed 1d "$queued") == "$topic queued-1"$'\n'"$topic queued-2"$'\n'"$topic queued-3" ]]; then
        pass "bridge to mosquitto: the queue survives mosquitto down and a kill -9 of petrel"
    else
        fail "bridge to mosquitto: queued messages: exit $rc"
        detail "$queued" "$WORK/petrel-bridge.log"
    fi
    kill -TERM "$PETREL_BRIDGE_PID" 2>/dev/null || true
    timeout 15 tail --pid="$PETREL_BRIDGE_PID" -f /dev/null || kill -KILL "$PETREL_BRIDGE_PID" 2>/dev/null || true
    wait "$PETREL_BRIDGE_PID" 2>/dev/null || true
    PETREL_BRIDGE_PID=
    kill -TERM "$MOSQ_PID" 2>/dev/null || true
    wait "$MOSQ_PID" 2>/dev/null || true
    MOSQ_PID=
}
bridge_suite

if ((FAILED > 0)); then
    echo "---- broker log ($LOG) ----"
    cat "$LOG"
    echo "---- end of broker log ----"
fi

echo "$PASSED passed, $FAILED failed"
if ((FAILED > 0)); then
    exit 1
fi
