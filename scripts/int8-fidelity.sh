#!/usr/bin/env bash
# int8 against float with `ddm export`'s defaults: for each run, the float checkpoint and its
# default int8 export sample the same seeds with the blob's default sampler (DDIM, 10 steps, the
# default spacing; a distilled student's own sampler), without and with x0 clipping at 1; prints the int8 samples that leave the float
# samples' range by more than 10% and both Frechet distances (`ddm eval`). See
# "int8 with the export defaults" in BENCHMARKS.md.
#
# Usage: scripts/int8-fidelity.sh [--num 1000] [--seed 1] [--dataset optdigits] [--time-groups N] RUN...
#        (release build: target/release/ddm; writes into each RUN/int8-fidelity/)
set -euo pipefail
cd "$(dirname "$0")/.."

num=1000
seed=1
dataset=optdigits
groups=()
runs=()
while [[ $# -gt 0 ]]; do
    case "$1" in
    --num) num="$2"; shift 2 ;;
    --seed) seed="$2"; shift 2 ;;
    --dataset) dataset="$2"; shift 2 ;;
    --time-groups) groups=(--time-groups "$2"); shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) runs+=("$1"); shift ;;
    esac
done
[[ ${#runs[@]} -gt 0 ]] || { echo "usage: $0 [--num N] [--seed S] [--dataset D] RUN..." >&2; exit 2; }

cargo build --release -p ddm --quiet
ddm=target/release/ddm

fd() { "$ddm" eval --dataset "$dataset" --samples "$1" --json | python3 -c \
    'import json, sys; print("%.3f" % json.load(sys.stdin)["metrics"]["fd"]["samples"])'; }

# Samples of FILE (an f32 .npy) outside REFERENCE's [min, max] widened by 10% of each end.
outside() {
    python3 - "$1" "$2" <<'PY'
import struct, sys

def load(path):
    data = open(path, "rb").read()
    header_len = struct.unpack("<H", data[8:10])[0]
    header = data[10:10 + header_len].decode("latin1")
    assert "'<f4'" in header and "'fortran_order': False" in header, header
    shape = eval(header)["shape"]
    values = struct.unpack("<%df" % (len(data[10 + header_len:]) // 4), data[10 + header_len:])
    return shape[0], values

n, reference = load(sys.argv[2])
low, high = min(reference), max(reference)
low, high = low - 0.1 * abs(low), high + 0.1 * abs(high)
count, values = load(sys.argv[1])
per = len(values) // count
bad = sum(1 for i in range(count) if any(not (low <= v <= high) for v in values[i * per:(i + 1) * per]))
print(bad, "%.2f" % min(values), "%.2f" % max(values), "%.2f" % low, "%.2f" % high)
PY
}

printf '%-28s %-5s %10s %10s %8s %9s %21s %21s\n' run clip "float FD" "int8 FD" "ratio" outside "int8 [min, max]" "float +10%"
for run in "${runs[@]}"; do
    out="$run/int8-fidelity"
    mkdir -p "$out"
    # The export's default sampler: a distilled student's own, else DDIM in 10 steps.
    sampler_args=(--sampler ddim --steps 10)
    grep -q '"distill"' "$run/config.json" && sampler_args=()
    for clip in none 1; do
        clip_args=()
        [[ $clip == none ]] || clip_args=(--clip-sample "$clip")
        "$ddm" export --checkpoint "$run" --precision int8 "${clip_args[@]}" ${groups[@]+"${groups[@]}"} \
            --out "$out/int8-$clip.ddm" >/dev/null
        "$ddm" sample --checkpoint "$run" ${sampler_args[@]+"${sampler_args[@]}"} \
            "${clip_args[@]}" --num "$num" --seed "$seed" --out "$out/float-$clip.npy" >/dev/null
        "$ddm" sample --model "$out/int8-$clip.ddm" --num "$num" --seed "$seed" \
            --out "$out/int8-$clip.npy" >/dev/null
        float_fd=$(fd "$out/float-$clip.npy")
        int8_fd=$(fd "$out/int8-$clip.npy")
        read -r bad low high ref_low ref_high < <(outside "$out/int8-$clip.npy" "$out/float-$clip.npy")
        ratio=$(python3 -c "print('%+.1f%%' % (100 * ($int8_fd / $float_fd - 1)))")
        printf '%-28s %-5s %10s %10s %8s %9s %21s %21s\n' "$(basename "$run")" "$clip" "$float_fd" \
            "$int8_fd" "$ratio" "$bad" "[$low, $high]" "[$ref_low, $ref_high]"
    done
done
