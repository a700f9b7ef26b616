#!/usr/bin/env bash
# Runs every check the project requires: formatting, lints and the whole test suite.
#
# The suite runs each cycle scenario twice, on the embedded bus and on a real Apache Kafka
# broker, which scripts/kafka.sh fetches through Maven and starts on 127.0.0.1:19092 (Java 17+
# and Maven are needed). Set YLEM_TEST_KAFKA_BOOTSTRAP to use another broker instead; the
# script then starts none. HTTP servers are started by the tests themselves on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo clippy --version >/dev/null 2>&1 || ! cargo fmt --version >/dev/null 2>&1; then
    echo "installing the clippy and rustfmt components"
    rustup component add clippy rustfmt
fi

started_broker=0
started_clickhouse=0
stop_servers() {
    if [[ "$started_broker" == 1 ]]; then
        scripts/kafka.sh stop || true
    fi
    if [[ "$started_clickhouse" == 1 ]]; then
        scripts/clickhouse.sh stop || true
    fi
}
trap stop_servers EXIT

if [[ -z "${YLEM_TEST_KAFKA_BOOTSTRAP:-}" ]]; then
    if ! scripts/kafka.sh status >/dev/null 2>&1; then
        scripts/kafka.sh start
        started_broker=1
    fi
fi

# The statistics tests use a private ClickHouse server (scripts/clickhouse.sh), unless
# YLEM_TEST_CLICKHOUSE_URL names another one.
if [[ -z "${YLEM_TEST_CLICKHOUSE_URL:-}" ]]; then
    if ! scripts/clickhouse.sh status >/dev/null 2>&1; then
        scripts/clickhouse.sh start
        started_clickhouse=1
    fi
    YLEM_TEST_CLICKHOUSE_URL=$(scripts/clickhouse.sh url)
    export YLEM_TEST_CLICKHOUSE_URL
fi

echo "== cargo fmt --check"
cargo fmt --check
echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings
echo "== cargo test"
cargo test --all-targets
