#!/usr/bin/env bash
# Installs, starts and stops a private PostgreSQL cluster on 127.0.0.1 for
# development and integration tests. The system cluster (pg_ctlcluster) is
# left alone: this one lives in .servers/postgres under the repository root.
#
# Run "scripts/postgres.sh help" for the commands and environment variables.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)

HOST=127.0.0.1
PORT=${YLEM_PG_PORT:-15432}
ROLE=ylem
DATABASE=ylem
START_TIMEOUT_S=${YLEM_PG_START_TIMEOUT:-60}
# The account that owns the cluster when the script runs as root: initdb and
# the server refuse to run as root.
SERVER_USER=postgres

SERVER_DIR="$REPO_ROOT/.servers/postgres"
DATA_DIR="$SERVER_DIR/data"
SOCKET_DIR="$SERVER_DIR/socket"
LOG_FILE="$SERVER_DIR/server.log"
LOCK_FILE="$SERVER_DIR/.lock"
# Written on every start from the environment, and included by postgresql.conf.
SETTINGS_FILE="$DATA_DIR/ylem.conf"

BIN_DIR=""

usage() {
    cat <<EOF
Usage: scripts/postgres.sh COMMAND

Runs a private PostgreSQL cluster on $HOST:$PORT with the role $ROLE and the
database $DATABASE, for the tests.

Commands:
  start    Install Debian's postgresql package if it is missing (as root, with
           apt-get), create the cluster once, start it and wait until it accepts
           connections. Sets the role's password from YLEM_PG_PASSWORD on every
           start. Prints the URL on stdout. Does nothing but print the URL if the
           cluster is already running.
  stop     Stop the cluster (fast shutdown). Does nothing if it is not running.
  status   Print the URL and exit 0 if the cluster accepts connections, exit 1 otherwise.
  url      Print the connection URL, without the password.
  reset    Stop the cluster and delete its data folder.
  help     Print this text.

Environment variables:
  YLEM_PG_PORT           TCP port on $HOST (default 15432)
  YLEM_PG_PASSWORD       password of the role $ROLE (default ylem-test)
  YLEM_PG_START_TIMEOUT  seconds that start waits for connections (default 60)

Files: $SERVER_DIR (server log: $LOG_FILE)
EOF
}

log() {
    echo "postgres.sh: $*" >&2
}

die() {
    echo "postgres.sh: error: $*" >&2
    exit 1
}

print_log_tail() {
    if [[ -s $LOG_FILE ]]; then
        echo "---- last 30 lines of $LOG_FILE ----" >&2
        tail -n 30 "$LOG_FILE" >&2
        echo "----" >&2
    fi
}

url() {
    echo "postgres://$ROLE@$HOST:$PORT/$DATABASE"
}

validate_settings() {
    if ! [[ $PORT =~ ^[0-9]+$ ]] || ((PORT < 1 || PORT > 65535)); then
        die "YLEM_PG_PORT=$PORT is not a valid TCP port. Use a number from 1 to 65535"
    fi
    if ! [[ $START_TIMEOUT_S =~ ^[0-9]+$ ]] || ((START_TIMEOUT_S < 1)); then
        die "YLEM_PG_START_TIMEOUT=$START_TIMEOUT_S is invalid. Use a whole number of seconds"
    fi
}

# Runs a command as the cluster owner: the postgres account under root, else
# the calling user.
as_owner() {
    if ((EUID == 0)); then
        runuser -u "$SERVER_USER" -- "$@"
    else
        "$@"
    fi
}

# Serializes commands that change the cluster, so that two callers cannot run
# initdb or start twice. The server must not inherit descriptor 9, or it would
# hold the lock after this script exits.
acquire_lock() {
    mkdir -p "$SERVER_DIR"
    exec 9>"$LOCK_FILE"
    if ! flock -w 120 9; then
        die "timed out after 120 s waiting for another scripts/postgres.sh command to finish (lock $LOCK_FILE)"
    fi
}

# Sets BIN_DIR to the newest installed server's bin folder, if any.
find_binaries() {
    local candidate
    candidate=$(find /usr/lib/postgresql -mindepth 3 -maxdepth 3 -path '*/bin/initdb' 2>/dev/null | sort -V | tail -n 1 || true)
    if [[ -n $candidate ]]; then
        BIN_DIR=$(dirname "$candidate")
        return 0
    fi
    if candidate=$(command -v initdb); then
        BIN_DIR=$(dirname "$(readlink -f "$candidate")")
        return 0
    fi
    return 1
}

# Installs Debian's postgresql package when no server is installed.
install_if_missing() {
    if find_binaries; then
        return
    fi
    ((EUID == 0)) || die "PostgreSQL is not installed and installing it needs root. Run: sudo apt-get install -y postgresql"
    command -v apt-get >/dev/null || die "PostgreSQL is not installed and apt-get is missing. Install a PostgreSQL server so that initdb is on PATH"
    # A fresh image may have no package lists yet, and then the package is unknown.
    if ! apt-cache show postgresql >/dev/null 2>&1; then
        log "running apt-get update"
        apt-get update
    fi
    log "installing Debian's postgresql package"
    local started=$SECONDS
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql
    log "installed postgresql in $((SECONDS - started)) s"
    find_binaries || die "apt-get installed postgresql, but no initdb was found under /usr/lib/postgresql"
}

is_running() {
    [[ -f "$DATA_DIR/PG_VERSION" ]] && as_owner "$BIN_DIR/pg_ctl" -D "$DATA_DIR" status >/dev/null 2>&1
}

accepts_connections() {
    local isready
    isready="${BIN_DIR:-/usr/bin}/pg_isready"
    [[ -x $isready ]] || isready=pg_isready
    "$isready" -q -h "$HOST" -p "$PORT" -t 2
}

# Creates the cluster once. Local socket connections use peer authentication
# (only the owner account connects as the superuser); TCP needs scram-sha-256.
init_cluster() {
    if [[ -f "$DATA_DIR/PG_VERSION" ]]; then
        return
    fi
    log "creating the cluster in $DATA_DIR"
    rm -rf "$DATA_DIR"
    mkdir -p "$DATA_DIR" "$SOCKET_DIR"
    if ((EUID == 0)); then
        chown -R "$SERVER_USER:" "$SERVER_DIR"
    fi
    chmod 700 "$DATA_DIR"
    as_owner "$BIN_DIR/initdb" -D "$DATA_DIR" --encoding=UTF8 --no-locale \
        --auth-local=peer --auth-host=scram-sha-256 >"$SERVER_DIR/initdb.log" 2>&1 ||
        {
            cat "$SERVER_DIR/initdb.log" >&2
            die "initdb failed on $DATA_DIR; see the output above"
        }
    echo "include_if_exists = 'ylem.conf'" | as_owner tee -a "$DATA_DIR/postgresql.conf" >/dev/null
}

write_settings() {
    as_owner tee "$SETTINGS_FILE" >/dev/null <<EOF
# Written by scripts/postgres.sh on every start, so edits here are lost.
listen_addresses = '$HOST'
port = $PORT
unix_socket_directories = '$SOCKET_DIR'
password_encryption = 'scram-sha-256'
EOF
}

# Creates the role and database if missing and sets the role's password. The
# password goes through stdin, so it never shows in a process list.
ensure_role_and_database() {
    local password=${YLEM_PG_PASSWORD:-ylem-test}
    local quoted=${password//\'/\'\'}
    as_owner "$BIN_DIR/psql" -X -q -v ON_ERROR_STOP=1 -h "$SOCKET_DIR" -p "$PORT" -d postgres >/dev/null <<EOF
SELECT 'CREATE ROLE $ROLE LOGIN CREATEDB' WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '$ROLE')
\gexec
ALTER ROLE $ROLE PASSWORD '$quoted';
SELECT 'CREATE DATABASE $DATABASE OWNER $ROLE' WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = '$DATABASE')
\gexec
EOF
}

start_locked() {
    install_if_missing
    if is_running; then
        log "the cluster in $DATA_DIR is already running"
        ensure_role_and_database
        url
        return
    fi
    if accepts_connections; then
        die "another server already listens on $HOST:$PORT. Stop it or set YLEM_PG_PORT to a free port"
    fi
    init_cluster
    mkdir -p "$SOCKET_DIR"
    if ((EUID == 0)); then
        chown "$SERVER_USER:" "$SERVER_DIR" "$SOCKET_DIR"
        touch "$LOG_FILE"
        chown "$SERVER_USER:" "$LOG_FILE"
    fi
    write_settings

    log "starting PostgreSQL on $HOST:$PORT"
    local started=$SECONDS
    if ! as_owner "$BIN_DIR/pg_ctl" -D "$DATA_DIR" -l "$LOG_FILE" -w -t "$START_TIMEOUT_S" start >/dev/null 9>&-; then
        print_log_tail
        die "PostgreSQL did not start within $START_TIMEOUT_S s; see the log above"
    fi
    # pg_ctl -w waits for the ready mark in postmaster.pid. Check the TCP listener too, within the same bound.
    until accepts_connections; do
        if ((SECONDS - started >= START_TIMEOUT_S)); then
            print_log_tail
            die "PostgreSQL started but accepted no TCP connection on $HOST:$PORT within $START_TIMEOUT_S s"
        fi
        sleep 0.2
    done
    ensure_role_and_database
    log "PostgreSQL accepts connections after $((SECONDS - started)) s"
    url
}

stop_locked() {
    find_binaries || return 0
    if ! is_running; then
        log "the cluster in $DATA_DIR is not running"
        return
    fi
    as_owner "$BIN_DIR/pg_ctl" -D "$DATA_DIR" -m fast -w -t 60 stop >/dev/null
    log "stopped PostgreSQL"
}

cmd_status() {
    find_binaries || true
    if accepts_connections; then
        url
        return 0
    fi
    echo "postgres.sh: no PostgreSQL server accepts connections on $HOST:$PORT" >&2
    return 1
}

main() {
    local command=${1:-help}
    validate_settings
    case $command in
    start)
        acquire_lock
        start_locked
        ;;
    stop)
        acquire_lock
        stop_locked
        ;;
    status)
        cmd_status
        ;;
    url)
        url
        ;;
    reset)
        acquire_lock
        stop_locked
        rm -rf "$DATA_DIR"
        log "deleted $DATA_DIR"
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
