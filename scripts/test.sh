#!/bin/sh
# berth's test command: lint, build the binaries the end-to-end tests drive, build the offline test
# images once, run every test.
set -eu
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo build --workspace --bins --locked
# The sandbox runtime's guest agent, linked statically (target/sandbox/, where the shim looks).
BERTH_SANDBOX_AGENT=$(sh scripts/build-sandbox-agent.sh --locked)
export BERTH_SANDBOX_AGENT
# Offline test images (busybox-static + umoci, reproducible digests): shared by every test.
BERTH_TEST_IMAGES=${BERTH_TEST_IMAGES:-$PWD/target/testimages}
if [ ! -f "$BERTH_TEST_IMAGES/busybox-oci.tar" ]; then
    sh ../shared/testimages/make-test-images.sh "$BERTH_TEST_IMAGES" >/dev/null
fi
export BERTH_TEST_IMAGES
exec cargo nextest run --workspace --locked --no-fail-fast
