#!/usr/bin/env bash
# Installs, starts and stops a private ClickHouse server on 127.0.0.1 for development and
# the statistics tests, without Docker and without touching the packaged service.
#
# The server comes from Debian's clickhouse-server package (18.16.1 on Debian 12). It runs
# with a config file of its own under .servers/clickhouse/, its own data, tmp and log
# folders, the packaged users.xml (user "default", empty password) and the UTC timezone.
# Run "scripts/clickhouse.sh help" for the commands and environment variables.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)

HOST=127.0.0.1
HTTP_PORT=${YLEM_CH_HTTP_PORT:-18123}
TCP_PORT=${YLEM_CH_TCP_PORT:-19000}
START_TIMEOUT_S=${YLEM_CH_START_TIMEOUT:-30}
STOP_TIMEOUT_S=30
URL="http://$HOST:$HTTP_PORT"
PACKAGED_USERS_FILE=/etc/clickhouse-server/users.xml

SERVER_DIR="$REPO_ROOT/.servers/clickhouse"
DATA_DIR="$SERVER_DIR/data"
CONFIG_FILE="$SERVER_DIR/config.xml"
PID_FILE="$SERVER_DIR/clickhouse.pid"
LOG_DIR="$SERVER_DIR/log"

usage() {
    cat <<EOF
Usage: scripts/clickhouse.sh COMMAND

Runs a private ClickHouse server on $HOST (HTTP port $HTTP_PORT, native TCP port $TCP_PORT).

Commands:
  install   Install clickhouse-server and clickhouse-client with apt-get unless present.
  start     Install if needed, write the config file, start the server in the background
            and wait until $URL/ping responds. Prints "url=$URL" on stdout.
            Does nothing if the server already responds.
  stop      Stop the server (SIGTERM, then SIGKILL after ${STOP_TIMEOUT_S} s). Does nothing if it is not running.
  status    Print "url=$URL" and exit 0 if the server responds, exit 1 otherwise.
  url       Print the HTTP URL.
  reset     Stop the server and delete its data folder.
  help      Print this text.

Environment variables:
  YLEM_CH_HTTP_PORT       HTTP port (default 18123)
  YLEM_CH_TCP_PORT        native TCP port (default 19000)
  YLEM_CH_START_TIMEOUT   seconds that start waits for /ping (default 30)

Files: $SERVER_DIR
EOF
}

log() {
    echo "clickhouse.sh: $*" >&2
}

die() {
    log "$*"
    exit 1
}

responds() {
    curl --silent --fail --max-time 2 "$URL/ping" >/dev/null 2>&1
}

running_pid() {
    [[ -f "$PID_FILE" ]] || return 1
    local pid
    pid=$(cat "$PID_FILE" 2>/dev/null) || return 1
    [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 1
    echo "$pid"
}

install() {
    if command -v clickhouse-server >/dev/null 2>&1 && command -v clickhouse-client >/dev/null 2>&1; then
        return 0
    fi
    [[ $(id -u) == 0 ]] || die "clickhouse-server is not installed; run this script as root to install it with apt-get"
    local started=$SECONDS
    if ! apt-cache show clickhouse-server >/dev/null 2>&1; then
        log "clickhouse-server is unknown to apt; running apt-get update"
        apt-get update -q >&2
    fi
    log "installing clickhouse-server and clickhouse-client with apt-get"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q clickhouse-server clickhouse-client >&2
    log "installed in $((SECONDS - started)) s"
}

write_config() {
    mkdir -p "$DATA_DIR/data" "$DATA_DIR/tmp" "$DATA_DIR/user_files" "$DATA_DIR/format_schemas" "$LOG_DIR"
    [[ -f "$PACKAGED_USERS_FILE" ]] || die "$PACKAGED_USERS_FILE is missing; reinstall clickhouse-server"
    # The keys are those of the server's config.xml; <yandex> is the root element up to the
    # 20.x releases and still accepted by current ones.
    cat >"$CONFIG_FILE" <<EOF
<?xml version="1.0"?>
<yandex>
    <logger>
        <level>information</level>
        <log>$LOG_DIR/clickhouse-server.log</log>
        <errorlog>$LOG_DIR/clickhouse-server.err.log</errorlog>
        <size>100M</size>
        <count>2</count>
    </logger>
    <http_port>$HTTP_PORT</http_port>
    <tcp_port>$TCP_PORT</tcp_port>
    <listen_host>$HOST</listen_host>
    <path>$DATA_DIR/data/</path>
    <tmp_path>$DATA_DIR/tmp/</tmp_path>
    <user_files_path>$DATA_DIR/user_files/</user_files_path>
    <format_schema_path>$DATA_DIR/format_schemas/</format_schema_path>
    <users_config>$PACKAGED_USERS_FILE</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <timezone>UTC</timezone>
    <mark_cache_size>268435456</mark_cache_size>
</yandex>
EOF
}

start() {
    if responds; then
        echo "url=$URL"
        return 0
    fi
    install
    write_config

    # The server runs as the user that owns its folders. As root, that is the packaged
    # "clickhouse" user, because the daemon then needs the pid file's folder writable by it;
    # otherwise --daemon exits 0 and nothing listens.
    local -a run_as=()
    if [[ $(id -u) == 0 ]] && id clickhouse >/dev/null 2>&1; then
        chown -R clickhouse:clickhouse "$SERVER_DIR"
        run_as=(runuser -u clickhouse --)
    fi

    local started_ns
    started_ns=$(date +%s%N)
    rm -f "$PID_FILE"
    "${run_as[@]}" clickhouse-server --config-file="$CONFIG_FILE" --pid-file="$PID_FILE" --daemon \
        || die "clickhouse-server failed to start; see $LOG_DIR/clickhouse-server.err.log"

    local deadline=$((SECONDS + START_TIMEOUT_S))
    until responds; do
        if ((SECONDS >= deadline)); then
            die "server did not respond on $URL/ping within $START_TIMEOUT_S s; see $LOG_DIR/clickhouse-server.err.log"
        fi
        sleep 0.1
    done
    log "started in $((($(date +%s%N) - started_ns) / 1000000)) ms (pid $(cat "$PID_FILE" 2>/dev/null || echo unknown))"
    echo "url=$URL"
}

stop() {
    local pid
    if ! pid=$(running_pid); then
        rm -f "$PID_FILE"
        if responds; then
            die "a server responds on $URL but $PID_FILE names no running process; stop it by hand"
        fi
        return 0
    fi
    kill -TERM "$pid"
    local deadline=$((SECONDS + STOP_TIMEOUT_S))
    while kill -0 "$pid" 2>/dev/null; do
        if ((SECONDS >= deadline)); then
            log "server (pid $pid) did not stop within $STOP_TIMEOUT_S s; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.1
    done
    rm -f "$PID_FILE"
    log "stopped (pid $pid)"
}

status() {
    if responds; then
        echo "url=$URL"
        return 0
    fi
    return 1
}

case "${1:-help}" in
    install) install ;;
    start) start ;;
    stop) stop ;;
    status) status ;;
    url) echo "$URL" ;;
    reset)
        stop
        rm -rf "$SERVER_DIR"
        ;;
    help | -h | --help) usage ;;
    *)
        usage >&2
        exit 2
        ;;
esac
