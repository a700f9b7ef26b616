#!/usr/bin/env bash
# Runs every check the project requires: formatting, lints and the whole test suite.
# The embedded-bus suite needs no server; the tests start their own HTTP servers on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo clippy --version >/dev/null 2>&1 || ! cargo fmt --version >/dev/null 2>&1; then
    echo "installing the clippy and rustfmt components"
    rustup component add clippy rustfmt
fi

echo "== cargo fmt --check"
cargo fmt --check
echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings
echo "== cargo test"
cargo test --all-targets
