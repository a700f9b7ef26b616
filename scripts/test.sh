#!/usr/bin/env bash
# Runs every check the project requires: formatting, lints and the whole test suite.
#
# The suite runs each cycle scenario twice, on the embedded bus and on a real Apache Kafka
# broker, which scripts/kafka.sh fetches through Maven and starts on 127.0.0.1:19092 (Java 17+
# and Maven are needed). Set YLEM_TEST_KAFKA_BOOTSTRAP to use another broker instead; the
# script then starts none. PostgreSQL tests (the store suite, the two-publisher test and the
# query tasks) use the private cluster of scripts/postgres.sh on 127.0.0.1:15432, which this
# script starts (installing PostgreSQL with apt-get if needed). Set YLEM_TEST_POSTGRES_URL and
# YLEM_TEST_POSTGRES_PASSWORD to use another server instead. HTTP servers are started by the
# tests themselves on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo clippy --version >/dev/null 2>&1 || ! cargo fmt --version >/dev/null 2>&1; then
    echo "installing the clippy and rustfmt components"
    rustup component add clippy rustfmt
fi

started_broker=0
started_clickhouse=0
started_postgres=0
stop_servers() {
    if [[ "$started_broker" == 1 ]]; then
        scripts/kafka.sh stop || true
    fi
    if [[ "$started_clickhouse" == 1 ]]; then
        scripts/clickhouse.sh stop || true
    fi
    if [[ "$started_postgres" == 1 ]]; then
        scripts/postgres.sh stop || true
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

# The store suite also runs on a private PostgreSQL cluster (scripts/postgres.sh), unless
# YLEM_TEST_POSTGRES_URL names another one.
if [[ -z "${YLEM_TEST_POSTGRES_URL:-}" ]]; then
    if ! scripts/postgres.sh status >/dev/null 2>&1; then
        started_postgres=1
    fi
    # start also sets the role's password, so it runs when the cluster is already up.
    YLEM_TEST_POSTGRES_URL=$(scripts/postgres.sh start)
    export YLEM_TEST_POSTGRES_URL
    export YLEM_TEST_POSTGRES_PASSWORD=${YLEM_PG_PASSWORD:-ylem-test}
fi

echo "== cargo fmt --check"
cargo fmt --check
echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings
echo "== cargo test"
test_log=$(mktemp)
cargo test --all-targets 2>&1 | tee "$test_log"
# One closing line for the whole suite, summed over every test binary.
awk '/^test result:/ { passed += $4; failed += $6 } END { printf "%d passed, %d failed\n", passed, failed }' "$test_log"
rm -f "$test_log"
