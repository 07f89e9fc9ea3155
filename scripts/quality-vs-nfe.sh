#!/usr/bin/env bash
# Samples a trained run with every sampler at the step counts of BENCHMARKS.md's "Sample quality
# against network evaluations" and prints the quality table (scripts/quality-table.sh):
#
#   scripts/quality-vs-nfe.sh DATASET RUN_DIR NUM OUT_DIR [LANGEVIN_STEP_101 [LANGEVIN_STEP_1001]]
#
# e.g. scripts/quality-vs-nfe.sh optdigits demo 898 runs/quality-optdigits 7e-5 2e-5
#
# Rows: DDPM 1000 steps, DDIM (eta 0, trailing) 10 / 20 / 50 steps, DPM-Solver++ 2M (log-SNR
# spacing, first-order penultimate step: the settings the table was measured with) 10 / 20 steps, annealed Langevin 10 levels x 10 and x 100 steps + 1 final denoising
# step, with the given step sizes (default 7e-5 and 2e-5). All clip the predicted x0 to [-1, 1]
# and use seed 0; sample files already in OUT_DIR are reused.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# -lt 4 ]; then
    sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
dataset="$1"
run="$2"
num="$3"
out="$4"
langevin_short="${5:-7e-5}"
langevin_long="${6:-2e-5}"
ddm="${DDM:-target/release/ddm}"
if [ ! -x "$ddm" ]; then
    cargo build --release --quiet -p ddm
fi
mkdir -p "$out"

sample() { # FILE ARGS...
    local file="$out/$1"
    shift
    if [ ! -s "$file" ]; then
        "$ddm" sample --checkpoint "$run" --num "$num" --seed 0 --clip-sample 1 "$@" \
            --out "$file" >&2
    fi
}

sample ddpm-1000.npy --sampler ddpm --steps 1000
for steps in 10 20 50; do
    sample "ddim-$steps.npy" --sampler ddim --eta 0 --spacing trailing --steps "$steps"
done
for steps in 10 20; do
    sample "dpmpp-$steps.npy" --sampler dpmpp-2m --spacing logsnr --first-order-penultimate \
        --steps "$steps"
done
sample langevin-101.npy --sampler langevin --levels 10 --steps 101 \
    --langevin-step-size "$langevin_short"
sample langevin-1001.npy --sampler langevin --levels 10 --steps 1001 \
    --langevin-step-size "$langevin_long"

scripts/quality-table.sh "$dataset" "$num" \
    "DDPM|1000|$out/ddpm-1000.npy" \
    "DDIM|10|$out/ddim-10.npy" "DDIM|20|$out/ddim-20.npy" "DDIM|50|$out/ddim-50.npy" \
    "DPM-Solver++ 2M|10|$out/dpmpp-10.npy" "DPM-Solver++ 2M|20|$out/dpmpp-20.npy" \
    "Langevin (10 levels x 10, step $langevin_short)|101|$out/langevin-101.npy" \
    "Langevin (10 levels x 100, step $langevin_long)|1001|$out/langevin-1001.npy"
