#!/usr/bin/env bash
# MACs per instruction of the int8 kernels on the Cortex-M4F, counted by QEMU (mps2-an386,
# -icount shift=0: instructions, not cycles), for the optdigits MLP and the 8x8 UNet of
# hil/fixtures, and for single layers (linear, convolutions, GroupNorm, SiLU). Extra arguments
# go to `ddm-hil bench` (--model FILE, --steps N).
# Results and method: BENCHMARKS.md, section "Cortex-M4 (QEMU)".
set -euo pipefail
cd "$(dirname "$0")/.."
cargo run --release --locked -p ddm-hil -- bench --layers "$@"
