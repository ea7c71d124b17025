#!/usr/bin/env bash
# Fuzzes the MQTT decoder (fuzz/fuzz_targets/decode.rs) for a bounded time.
#
#   scripts/fuzz.sh [SECONDS]      default 60
#
# Installs cargo-fuzz if it is missing. Runs on the stable toolchain: cargo-fuzz passes
# nightly-only flags (-Zsanitizer=address and others), which RUSTC_BOOTSTRAP=1 lets stable
# accept, so no nightly toolchain is needed. New corpus entries go to fuzz/corpus/decode
# (git-ignored), seeded from fuzz/seeds/decode; a crash is saved under fuzz/artifacts/decode
# and makes the script exit non-zero (replay it with `cargo fuzz run decode <file>`).
set -euo pipefail

seconds="${1:-60}"
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [ "$seconds" -eq 0 ]; then
    echo "usage: $0 [SECONDS]" >&2
    exit 2
fi

# cargo-fuzz finds the project from the working directory: run from the repository root.
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi

export RUSTC_BOOTSTRAP=1
mkdir -p fuzz/corpus/decode
# One job: the machines have two cores, shared with everything else.
exec cargo fuzz run --fuzz-dir fuzz decode fuzz/corpus/decode fuzz/seeds/decode -- \
    -max_total_time="$seconds" -print_final_stats=1
