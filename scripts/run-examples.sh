#!/usr/bin/env bash
# Runs the penguin example pipelines end to end on this machine.
#
# Builds release binaries, loads examples/data/penguins.csv into examples/data/penguins.db,
# starts the penguins_demo webhook receiver on 127.0.0.1:8089 (it appends every request to
# examples/data/webhooks.log) and runs the ylem daemon until Ctrl-C. Both are stopped when
# this script exits.
#
# From another shell in the repository root, while this script runs:
#   target/release/ylem pipeline run penguin-report --wait
#   target/release/ylem runs list
#   target/release/ylem runs show RUN_UUID
# The penguin-census pipeline runs by itself once a minute.
#
# Environment: CARGO_TARGET_DIR (where cargo builds, default target) and YLEM_CONFIG (the
# daemon's configuration file, default config.toml). Extra arguments go to `ylem run`.
set -euo pipefail

repository_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repository_root"

target_dir="${CARGO_TARGET_DIR:-target}"
config="${YLEM_CONFIG:-config.toml}"
receiver_address="127.0.0.1:8089"
database="examples/data/penguins.db"
webhook_log="examples/data/webhooks.log"

if [[ ! -f "$config" ]]; then
    echo "error: configuration file $config not found; run from a checkout that has config.toml or set YLEM_CONFIG" >&2
    exit 1
fi
if ! grep -q '^\[sources\.penguins\]' "$config"; then
    cat >&2 <<EOF
error: $config has no [sources.penguins] section, which the example pipelines query. Add:

[sources.penguins]
type = "sqlite"
url = "sqlite://$database?mode=ro"
EOF
    exit 1
fi
# The daemon applies the files listed in pipelines.apply_on_start. When the configuration does
# not list the examples, they are passed with --apply.
apply_arguments=()
if ! grep -q '^apply_on_start *=.*examples/pipelines' "$config"; then
    apply_arguments=(--apply examples/pipelines)
fi

echo "building release binaries in $target_dir"
cargo build --release --bin ylem --example penguins_demo
ylem="$target_dir/release/ylem"
penguins_demo="$target_dir/release/examples/penguins_demo"

"$penguins_demo" prepare --database "$database"

receiver_pid=""
daemon_pid=""
# Stops one background process with SIGTERM and waits for it. Both programs shut down
# cleanly on SIGTERM.
stop_process() {
    local pid="$1"
    if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        wait "$pid" || true
    fi
}
stop_all() {
    stop_process "$daemon_pid"
    stop_process "$receiver_pid"
}
trap stop_all EXIT
# Exiting from these traps runs stop_all, so Ctrl-C or `kill` of this script stops both
# programs.
trap 'exit 130' INT
trap 'exit 143' TERM

receiver_host="${receiver_address%:*}"
receiver_port="${receiver_address##*:}"
# Without this check the readiness loop below could mistake another server for the receiver.
if (exec 3<>"/dev/tcp/$receiver_host/$receiver_port") 2>/dev/null; then
    echo "error: another process already listens on $receiver_address; stop it (\`ss -ltnp 'sport = :$receiver_port'\` shows it) and run this script again" >&2
    exit 1
fi

"$penguins_demo" receive --listen "$receiver_address" --log "$webhook_log" &
receiver_pid=$!

# Wait until the receiver accepts connections, or report why it exited.
for _ in $(seq 1 50); do
    if ! kill -0 "$receiver_pid" 2>/dev/null; then
        receiver_status=0
        wait "$receiver_pid" || receiver_status=$?
        receiver_pid=""
        echo "error: the webhook receiver exited with status $receiver_status before accepting connections (its error is printed above)" >&2
        exit 1
    fi
    if (exec 3<>"/dev/tcp/$receiver_host/$receiver_port") 2>/dev/null; then
        break
    fi
    sleep 0.1
done
if ! (exec 3<>"/dev/tcp/$receiver_host/$receiver_port") 2>/dev/null; then
    echo "error: the webhook receiver did not accept connections on $receiver_address within 5 seconds" >&2
    exit 1
fi

echo "starting the ylem daemon with $config; press Ctrl-C to stop"
echo "from another shell in $repository_root: $ylem pipeline run penguin-report --wait"
# The daemon runs in the background so that the INT and TERM traps fire while it runs.
"$ylem" run --config "$config" "${apply_arguments[@]}" "$@" &
daemon_pid=$!
daemon_status=0
wait "$daemon_pid" || daemon_status=$?
daemon_pid=""
exit "$daemon_status"
