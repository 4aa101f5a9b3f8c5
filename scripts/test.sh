#!/bin/sh
# berth's test command: lint, build the binaries the end-to-end tests drive, run every test.
set -eu
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo build --workspace --bins --locked
exec cargo nextest run --workspace --locked --no-fail-fast
