#!/usr/bin/env bash
# Frechet distance (`ddm eval`) of each sampler on each timestep spacing at a few step counts,
# for choosing the default spacing (BENCHMARKS.md, "Default timestep spacing"):
#
#   scripts/spacing-table.sh [--dataset optdigits] [--num 1000] [--seed 1] [--steps "4 10 20"]
#                            [--samplers "ddim dpmpp-2m"] RUN...
#
# Every sampler runs with its defaults (no clipping) but the spacing; sample files go to
# RUN/spacing/ and are reused when present. One line per run, sampler and step count.
set -euo pipefail
cd "$(dirname "$0")/.."

dataset=optdigits
num=1000
seed=1
steps_list="4 10 20"
samplers="ddim dpmpp-2m"
runs=()
while [[ $# -gt 0 ]]; do
    case "$1" in
    --dataset) dataset="$2"; shift 2 ;;
    --num) num="$2"; shift 2 ;;
    --seed) seed="$2"; shift 2 ;;
    --steps) steps_list="$2"; shift 2 ;;
    --samplers) samplers="$2"; shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) runs+=("$1"); shift ;;
    esac
done
[[ ${#runs[@]} -gt 0 ]] || { echo "usage: $0 [options] RUN... (see --help)" >&2; exit 2; }
cargo build --release -p ddm --quiet
ddm=target/release/ddm

spacings="leading trailing linspace logsnr"
printf '%-24s %-9s %5s' run sampler steps
for spacing in $spacings; do printf ' %12s' "$spacing"; done
printf '\n'
for run in "${runs[@]}"; do
    mkdir -p "$run/spacing"
    for sampler in $samplers; do
        for steps in $steps_list; do
            printf '%-24s %-9s %5s' "$(basename "$run")" "$sampler" "$steps"
            for spacing in $spacings; do
                file="$run/spacing/$sampler-$steps-$spacing.npy"
                if [[ ! -s "$file" ]]; then
                    "$ddm" sample --checkpoint "$run" --sampler "$sampler" --steps "$steps" \
                        --spacing "$spacing" --num "$num" --seed "$seed" --out "$file" >/dev/null
                fi
                fd=$("$ddm" eval --dataset "$dataset" --samples "$file" --json | python3 -c \
                    'import json, sys; print("%.2f" % json.load(sys.stdin)["metrics"]["fd"]["samples"])')
                printf ' %12s' "$fd"
            done
            printf '\n'
        done
    done
done
