#!/bin/sh
# Builds berth-sandbox-agent, the init of the sandbox's guest kernel, as a static executable
# (the guest root has no dynamic loader or libc) and copies it to
# ${CARGO_TARGET_DIR:-target}/sandbox/berth-sandbox-agent, whose path it prints.
# Debug by default; arguments (--release, --locked...) pass through to cargo build.
# With an explicit --target, RUSTFLAGS reach only the target's crates, not proc-macros.
# relocation-model=static: a plain static executable rather than a static PIE (nothing in the
# guest needs ASLR for its init; `file` then says "statically linked").
set -eu
cd "$(dirname "$0")/.."
profile=debug
for arg in "$@"; do
    if [ "$arg" = "--release" ]; then
        profile=release
    fi
done
RUSTFLAGS="-C target-feature=+crt-static -C relocation-model=static" \
    cargo build -p berth-sandbox-agent --target x86_64-unknown-linux-gnu "$@" >&2
target=${CARGO_TARGET_DIR:-target}
mkdir -p "$target/sandbox"
cp "$target/x86_64-unknown-linux-gnu/$profile/berth-sandbox-agent" "$target/sandbox/berth-sandbox-agent.tmp"
mv "$target/sandbox/berth-sandbox-agent.tmp" "$target/sandbox/berth-sandbox-agent"
echo "$(cd "$target/sandbox" && pwd)/berth-sandbox-agent"
