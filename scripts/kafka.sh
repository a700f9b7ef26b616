#!/usr/bin/env bash
# Installs, starts and stops a single-node Apache Kafka broker (KRaft mode) on
# 127.0.0.1 for development and integration tests, without Docker.
#
# The broker jars come from Maven Central through scripts/kafka/pom.xml. Java 17
# or newer runs the broker. Run "scripts/kafka.sh help" for the commands and
# environment variables, and docs/kafka-broker.md for the files it keeps.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
SUPPORT_DIR="$SCRIPT_DIR/kafka"
POM_FILE="$SUPPORT_DIR/pom.xml"
BROKER_LOG4J="$SUPPORT_DIR/broker-log4j2.properties"
TOOLS_LOG4J="$SUPPORT_DIR/tools-log4j2.properties"

KAFKA_VERSION=${YLEM_KAFKA_VERSION:-4.1.1}
HOST=127.0.0.1
PORT=${YLEM_KAFKA_PORT:-19092}
CONTROLLER_PORT=${YLEM_KAFKA_CONTROLLER_PORT:-19093}
BOOTSTRAP="$HOST:$PORT"
HEAP=${YLEM_KAFKA_HEAP:-512m}
START_TIMEOUT_S=${YLEM_KAFKA_START_TIMEOUT:-90}
STOP_TIMEOUT_S=30
MIN_JAVA_MAJOR=17

SERVER_DIR="$REPO_ROOT/.servers/kafka"
LIB_DIR=$(realpath -m -- "${YLEM_KAFKA_HOME:-$SERVER_DIR/lib}")
DATA_DIR="$SERVER_DIR/data"
LOG_DIRS="$DATA_DIR/logs"
CLUSTER_ID_FILE="$DATA_DIR/cluster-id"
CONFIG_FILE="$SERVER_DIR/server.properties"
ADMIN_CONFIG_FILE="$SERVER_DIR/admin-client.properties"
LOG_FILE="$SERVER_DIR/broker.log"
INSTALL_LOG_FILE="$SERVER_DIR/install.log"
PID_FILE="$SERVER_DIR/broker.pid"
LOCK_FILE="$SERVER_DIR/.lock"

# Files in LIB_DIR: the marker is written before Maven copies anything, the
# version stamp only after the copy succeeded.
LIB_MARKER_FILE="$LIB_DIR/.ylem-kafka-lib"
LIB_VERSION_FILE="$LIB_DIR/.kafka-version"

JAVA=""

usage() {
    cat <<EOF
Usage: scripts/kafka.sh COMMAND

Runs a single-node Apache Kafka $KAFKA_VERSION broker (KRaft, PLAINTEXT) on $HOST.

Commands:
  install     Fetch the broker jars with Maven into the jar folder, unless they are present.
  start       Install if needed, format the storage once, start the broker in the background
              and wait until it responds. Prints "bootstrap=HOST:PORT" on stdout.
              Does nothing if the broker is already running.
  stop        Stop the broker (SIGTERM, then SIGKILL after ${STOP_TIMEOUT_S} s). Does nothing if it is not running.
  restart     Stop, then start, keeping the topics and messages.
  status      Print "bootstrap=HOST:PORT" and exit 0 if the broker responds, exit 1 otherwise.
  reset       Stop the broker and delete its data folder.
  run-class CLASS [ARG...]
              Run a Kafka command-line class with the broker jars on the class path,
              for example org.apache.kafka.tools.TopicCommand.
  help        Print this text.

Environment variables:
  YLEM_KAFKA_PORT             PLAINTEXT listener port (default 19092)
  YLEM_KAFKA_CONTROLLER_PORT  KRaft controller listener port (default 19093)
  YLEM_KAFKA_HOME             jar folder (default .servers/kafka/lib under the repository root)
  YLEM_KAFKA_VERSION          Kafka version to fetch (default 4.1.1)
  YLEM_KAFKA_HEAP             maximum broker heap, as for java -Xmx (default 512m)
  YLEM_KAFKA_START_TIMEOUT    seconds that start waits for the broker to respond (default 90)
  JAVA_HOME                   Java 17+ installation to use instead of java on PATH

Files: $SERVER_DIR
EOF
}

log() {
    echo "kafka.sh: $*" >&2
}

die() {
    echo "kafka.sh: error: $*" >&2
    exit 1
}

# Prints the last lines of a log file to stderr, for error messages.
print_log_tail() {
    local file=$1 lines=${2:-40}
    if [[ -s $file ]]; then
        echo "---- last $lines lines of $file ----" >&2
        tail -n "$lines" "$file" >&2
        echo "----" >&2
    fi
}

validate_port() {
    local name=$1 value=$2
    if ! [[ $value =~ ^[0-9]+$ ]] || ((value < 1 || value > 65535)); then
        die "$name=$value is not a valid TCP port. Use a number from 1 to 65535"
    fi
}

validate_settings() {
    validate_port YLEM_KAFKA_PORT "$PORT"
    validate_port YLEM_KAFKA_CONTROLLER_PORT "$CONTROLLER_PORT"
    if ((PORT == CONTROLLER_PORT)); then
        die "YLEM_KAFKA_PORT and YLEM_KAFKA_CONTROLLER_PORT are both $PORT, but the two listeners need different ports"
    fi
    if ! [[ $START_TIMEOUT_S =~ ^[0-9]+$ ]] || ((START_TIMEOUT_S < 1)); then
        die "YLEM_KAFKA_START_TIMEOUT=$START_TIMEOUT_S is invalid. Use a whole number of seconds"
    fi
    if ! [[ $HEAP =~ ^[0-9]+[kKmMgG]?$ ]]; then
        die "YLEM_KAFKA_HEAP=$HEAP is invalid. Use a java -Xmx size such as 512m or 1g"
    fi
}

# Serializes commands that change the broker's state, so that two callers
# cannot start two brokers on the same data folder. Child processes must not
# inherit descriptor 9, or they would hold the lock after this script exits.
acquire_lock() {
    mkdir -p "$SERVER_DIR"
    exec 9>"$LOCK_FILE"
    if ! flock -w 300 9; then
        die "timed out after 300 s waiting for another scripts/kafka.sh command to finish (lock $LOCK_FILE)"
    fi
}

# Sets JAVA to a Java 17+ binary, from JAVA_HOME if set, else from PATH.
find_java() {
    if [[ -n $JAVA ]]; then
        return
    fi
    local candidate
    if [[ -n ${JAVA_HOME:-} ]]; then
        candidate="$JAVA_HOME/bin/java"
        [[ -x $candidate ]] || die "JAVA_HOME=$JAVA_HOME has no executable bin/java. Point JAVA_HOME at a Java $MIN_JAVA_MAJOR+ installation or unset it"
    elif candidate=$(command -v java); then
        :
    else
        die "java not found, but Kafka $KAFKA_VERSION needs Java $MIN_JAVA_MAJOR or newer. Install it (Debian: apt-get install -y openjdk-17-jre-headless) or set JAVA_HOME"
    fi

    # "java -version" prints e.g. 'openjdk version "17.0.15" 2025-04-15', or "1.8.0_392" for Java 8.
    local version major
    version=$("$candidate" -version 2>&1 | awk -F '"' '/version/ { print $2; exit }')
    major=${version%%.*}
    if [[ $major == 1 ]]; then
        major=$(echo "$version" | cut -d. -f2)
    fi
    if ! [[ $major =~ ^[0-9]+$ ]]; then
        die "could not read the Java version from '$candidate -version', and Kafka $KAFKA_VERSION needs Java $MIN_JAVA_MAJOR or newer"
    fi
    if ((major < MIN_JAVA_MAJOR)); then
        die "$candidate is Java $version, but Kafka $KAFKA_VERSION needs Java $MIN_JAVA_MAJOR or newer. Install it (Debian: apt-get install -y openjdk-17-jre-headless) and put it first on PATH or set JAVA_HOME"
    fi
    JAVA=$candidate
}

jars_installed() {
    [[ -f $LIB_VERSION_FILE && $(<"$LIB_VERSION_FILE") == "$KAFKA_VERSION" && -f "$LIB_DIR/kafka_2.13-$KAFKA_VERSION.jar" ]]
}

# Fetches the jars. The caller must hold the lock.
install_locked() {
    find_java
    if jars_installed; then
        log "Kafka $KAFKA_VERSION jars are already in $LIB_DIR"
        return
    fi
    if running_pid >/dev/null; then
        die "the broker is running. Run 'scripts/kafka.sh stop' before installing Kafka $KAFKA_VERSION into $LIB_DIR"
    fi
    command -v mvn >/dev/null || die "mvn not found. Install Maven (Debian: apt-get install -y maven) so that the Kafka jars can be fetched from Maven Central"

    # Never delete jars from a folder that this script did not fill.
    mkdir -p "$LIB_DIR"
    if [[ ! -f $LIB_MARKER_FILE ]] && [[ -n $(ls -A "$LIB_DIR") ]]; then
        die "the jar folder $LIB_DIR is not empty and was not made by this script. Set YLEM_KAFKA_HOME to an empty or new folder"
    fi
    touch "$LIB_MARKER_FILE"
    rm -f "$LIB_VERSION_FILE" "$LIB_DIR"/*.jar

    log "fetching Kafka $KAFKA_VERSION and its runtime dependencies with Maven into $LIB_DIR"
    local started=$SECONDS
    if ! mvn -B -q -Dstyle.color=never -f "$POM_FILE" \
        -Dkafka.version="$KAFKA_VERSION" \
        -DincludeScope=runtime \
        -DoutputDirectory="$LIB_DIR" \
        dependency:copy-dependencies >"$INSTALL_LOG_FILE" 2>&1 </dev/null 9>&-; then
        print_log_tail "$INSTALL_LOG_FILE" 30
        die "Maven failed to fetch Kafka $KAFKA_VERSION (full output in $INSTALL_LOG_FILE). The first install needs access to Maven Central, so check the network and the version"
    fi
    if [[ ! -f "$LIB_DIR/kafka_2.13-$KAFKA_VERSION.jar" ]]; then
        die "Maven finished but $LIB_DIR/kafka_2.13-$KAFKA_VERSION.jar is missing (Maven output in $INSTALL_LOG_FILE)"
    fi
    echo "$KAFKA_VERSION" >"$LIB_VERSION_FILE"

    local count
    count=$(find "$LIB_DIR" -maxdepth 1 -name '*.jar' | wc -l)
    log "installed $count jars for Kafka $KAFKA_VERSION in $((SECONDS - started)) s"
}

# Prints, one argument per line, the java command that runs a Kafka command-line
# class: a small heap, warnings-only logging, and C1-only compilation, which
# makes these short runs start faster.
tool_command() {
    printf '%s\n' "$JAVA" -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
        -Dlog4j2.configurationFile="$TOOLS_LOG4J" -cp "$LIB_DIR/*"
}

# Runs a Kafka command-line class in the foreground.
run_tool() {
    local -a java_command
    mapfile -t java_command < <(tool_command)
    "${java_command[@]}" "$@" 9>&-
}

# Returns success if the process exists and is not a zombie.
process_alive() {
    local pid=$1 stat state
    kill -0 "$pid" 2>/dev/null || return 1
    stat=$(<"/proc/$pid/stat") 2>/dev/null || return 1
    state=${stat##*) }
    [[ ${state%% *} != Z ]]
}

# Prints the broker's pid if the pid file names a live broker started with this
# script's config file, so that a reused pid is never signalled.
running_pid() {
    [[ -f $PID_FILE ]] || return 1
    local pid
    pid=$(<"$PID_FILE")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    process_alive "$pid" || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "kafka.Kafka $CONFIG_FILE" || return 1
    echo "$pid"
}

port_open() {
    timeout 2 bash -c "exec 3<>/dev/tcp/$HOST/$1" 2>/dev/null
}

write_admin_config() {
    mkdir -p "$SERVER_DIR"
    # Short timeouts so that a readiness check fails in seconds instead of the
    # admin client's default 60 s.
    cat >"$ADMIN_CONFIG_FILE" <<EOF
request.timeout.ms=5000
default.api.timeout.ms=10000
EOF
}

# Returns success if the broker responds to a Kafka metadata request (listing
# topics). Kafka 4.1.1 serves the PLAINTEXT listener only after the controller
# has unfenced the broker, so topics can be created at once. The optional
# argument limits the check's time in seconds (default 30).
broker_responds() {
    local time_limit_s=${1:-30}
    port_open "$PORT" || return 1
    [[ -f $ADMIN_CONFIG_FILE ]] || write_admin_config
    local -a java_command
    mapfile -t java_command < <(tool_command)
    timeout "$time_limit_s" "${java_command[@]}" org.apache.kafka.tools.TopicCommand \
        --bootstrap-server "$BOOTSTRAP" --command-config "$ADMIN_CONFIG_FILE" --list \
        >/dev/null 2>&1 </dev/null 9>&-
}

write_server_config() {
    mkdir -p "$SERVER_DIR"
    cat >"$CONFIG_FILE" <<EOF
# Written by scripts/kafka.sh on every start, so edit the script instead.
# Single-node KRaft cluster: this process is both broker and controller.
process.roles=broker,controller
node.id=1
listeners=PLAINTEXT://$HOST:$PORT,CONTROLLER://$HOST:$CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$HOST:$PORT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
controller.quorum.bootstrap.servers=$HOST:$CONTROLLER_PORT
log.dirs=$LOG_DIRS

# One broker, so every internal topic has one replica.
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
default.replication.factor=1
min.insync.replicas=1

# Tests create their topics explicitly and expect consumer groups to form at once.
auto.create.topics.enable=false
num.partitions=1
group.initial.rebalance.delay.ms=0

# Test data is short-lived: keep messages for one hour, in 16 MiB segments.
log.retention.ms=3600000
log.segment.bytes=16777216
log.retention.check.interval.ms=60000
EOF
}

# Formats the log folder on the first start only, so that topics survive restarts.
format_storage_once() {
    # Kafka 4.1.1 updates the stored controller address when the controller
    # port changes, so the data can be reused with other ports.
    if [[ -f "$LOG_DIRS/meta.properties" ]]; then
        return
    fi

    mkdir -p "$DATA_DIR"
    if [[ ! -s $CLUSTER_ID_FILE ]]; then
        local cluster_id
        cluster_id=$(run_tool kafka.tools.StorageTool random-uuid </dev/null) ||
            die "kafka.tools.StorageTool random-uuid failed"
        echo "$cluster_id" >"$CLUSTER_ID_FILE"
    fi
    log "formatting $LOG_DIRS for cluster $(<"$CLUSTER_ID_FILE")"
    if ! run_tool kafka.tools.StorageTool format --standalone \
        -t "$(<"$CLUSTER_ID_FILE")" -c "$CONFIG_FILE" </dev/null >&2; then
        die "formatting the storage in $LOG_DIRS failed. Run 'scripts/kafka.sh reset' and try again"
    fi
}

launch_broker() {
    if [[ -f $LOG_FILE ]]; then
        mv -f "$LOG_FILE" "$LOG_FILE.1"
    fi
    nohup "$JAVA" -Xmx"$HEAP" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
        -Djava.awt.headless=true \
        -Dlog4j2.configurationFile="$BROKER_LOG4J" \
        -cp "$LIB_DIR/*" kafka.Kafka "$CONFIG_FILE" \
        </dev/null >"$LOG_FILE" 2>&1 9>&- &
    echo $! >"$PID_FILE"
}

# Prints the seconds left until the deadline (a value of SECONDS), at least 1
# and at most 30.
seconds_until() {
    local left=$(($1 - SECONDS))
    ((left < 1)) && left=1
    ((left > 30)) && left=30
    echo "$left"
}

# Polls until the broker responds. On failure it stops the broker and prints the log tail.
wait_until_ready() {
    local pid=$1 deadline=$((SECONDS + START_TIMEOUT_S))
    while ! broker_responds "$(seconds_until "$deadline")"; do
        if ! process_alive "$pid"; then
            rm -f "$PID_FILE"
            print_log_tail "$LOG_FILE"
            die "the broker (pid $pid) exited during startup. See $LOG_FILE"
        fi
        if ((SECONDS >= deadline)); then
            print_log_tail "$LOG_FILE"
            log "the broker did not respond on $BOOTSTRAP within $START_TIMEOUT_S s, so stopping it"
            stop_locked
            die "timed out after $START_TIMEOUT_S s waiting for the broker on $BOOTSTRAP. See $LOG_FILE, or raise YLEM_KAFKA_START_TIMEOUT"
        fi
        sleep 1
    done
}

# Starts the broker. The caller must hold the lock.
start_locked() {
    validate_settings
    find_java

    local pid
    if pid=$(running_pid); then
        log "the broker is already running (pid $pid), checking that it responds"
        wait_until_ready "$pid"
        echo "bootstrap=$BOOTSTRAP"
        return
    fi
    rm -f "$PID_FILE"

    local port
    for port in "$PORT" "$CONTROLLER_PORT"; do
        if port_open "$port"; then
            die "port $port on $HOST is already in use by a process this script did not start. Stop it or set YLEM_KAFKA_PORT and YLEM_KAFKA_CONTROLLER_PORT to free ports"
        fi
    done

    install_locked
    write_server_config
    write_admin_config
    format_storage_once

    local started=$SECONDS
    launch_broker
    pid=$(<"$PID_FILE")
    log "started the broker (pid $pid), logging to $LOG_FILE; waiting up to $START_TIMEOUT_S s for it to respond on $BOOTSTRAP"
    wait_until_ready "$pid"
    log "the broker responds on $BOOTSTRAP after $((SECONDS - started)) s"
    echo "bootstrap=$BOOTSTRAP"
}

# Stops the broker. The caller must hold the lock.
stop_locked() {
    local pid
    if ! pid=$(running_pid); then
        rm -f "$PID_FILE"
        log "no broker started by this script is running"
        return
    fi

    log "stopping the broker (pid $pid)"
    local started=$SECONDS
    kill -TERM "$pid" 2>/dev/null || true
    while process_alive "$pid" && ((SECONDS - started < STOP_TIMEOUT_S)); do
        sleep 0.5
    done
    if process_alive "$pid"; then
        log "the broker did not stop within $STOP_TIMEOUT_S s of SIGTERM, sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        while process_alive "$pid"; do
            sleep 0.2
        done
    fi
    rm -f "$PID_FILE"
    log "stopped the broker in $((SECONDS - started)) s"
}

cmd_status() {
    validate_settings
    find_java
    if ! jars_installed; then
        echo "kafka.sh: the Kafka $KAFKA_VERSION jars are not installed in $LIB_DIR, so the broker cannot be checked. Run 'scripts/kafka.sh start'" >&2
        return 1
    fi
    if broker_responds; then
        local pid
        if pid=$(running_pid); then
            log "the broker is running (pid $pid)"
        else
            log "a broker responds on $BOOTSTRAP, but this script did not start it"
        fi
        echo "bootstrap=$BOOTSTRAP"
        return 0
    fi
    echo "kafka.sh: no Kafka broker responds on $BOOTSTRAP" >&2
    return 1
}

cmd_run_class() {
    (($# >= 1)) || die "run-class needs a class name, for example org.apache.kafka.tools.TopicCommand"
    find_java
    if ! jars_installed; then
        acquire_lock
        install_locked
        exec 9>&-
    fi
    local -a java_command
    mapfile -t java_command < <(tool_command)
    exec "${java_command[@]}" "$@"
}

main() {
    local command=${1:-help}
    (($# == 0)) || shift
    case $command in
    install)
        acquire_lock
        install_locked
        ;;
    start)
        acquire_lock
        start_locked
        ;;
    stop)
        acquire_lock
        stop_locked
        ;;
    restart)
        acquire_lock
        stop_locked
        start_locked
        ;;
    status)
        cmd_status
        ;;
    reset)
        acquire_lock
        stop_locked
        rm -rf "$DATA_DIR"
        log "deleted $DATA_DIR"
        ;;
    run-class)
        cmd_run_class "$@"
        ;;
    help | -h | --help)
        usage
        ;;
    *)
        usage >&2
        die "unknown command '$command'"
        ;;
    esac
}

main "$@"
