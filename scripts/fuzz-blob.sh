#!/usr/bin/env bash
# Fuzzes the device runtime's blob reader and network for N seconds (default 60):
#   scripts/fuzz-blob.sh [SECONDS]
# Seeds the corpus with the test suite's real blobs, then runs cargo-fuzz's `parse_and_run`
# target (firmware/fuzz) on the nightly toolchain. Installs cargo-fuzz when it is missing.
# A crash leaves its input in firmware/fuzz/artifacts/parse_and_run/ and fails the script.
# Not part of the test suite: the deterministic corruption tests of `cargo test` cover every
# truncation and bit flip of real blobs; this explores further.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-60}"
corpus=firmware/fuzz/corpus/parse_and_run

if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "==> installing cargo-fuzz"
    cargo +nightly install cargo-fuzz --locked
fi

echo "==> seed corpus"
mkdir -p "$corpus"
cargo run --quiet -p ddm-firmware --features std --example fuzz_corpus -- "$corpus"

echo "==> fuzzing parse_and_run for ${seconds}s"
cd firmware
cargo +nightly fuzz run parse_and_run "fuzz/corpus/parse_and_run" -- \
    -max_total_time="$seconds" -max_len=65536 -timeout=10 -rss_limit_mb=2048
