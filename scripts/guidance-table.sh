#!/usr/bin/env bash
# Class accuracy and per-class Frechet distance of a class-conditional run against the
# guidance scale, for choosing the default guidance (BENCHMARKS.md, "Class-conditional
# generation"):
#
#   scripts/guidance-table.sh [--dataset optdigits] [--num 90] [--seed 0]
#                             [--guidance "1 1.5 2 3 5"] [--sample-args "..."]
#                             [--model BLOB] RUN
#
# For each scale, `ddm sample --class K` draws --num samples of every class K and `ddm eval
# --class K` scores them against the real images of K with the committed classifier. One line
# per scale: the mean and the worst class's accuracy, the mean per-class FD, and the mean
# per-class floor (real against real images of the class). Sample files go to RUN/guidance/
# and are reused when present. With --model BLOB (RUN's `ddm export`), the samples come from
# the blob on the device runtime (`ddm sample --model`) instead of the checkpoint, into
# RUN/guidance/<blob name>/.
set -euo pipefail
cd "$(dirname "$0")/.."

dataset=optdigits
num=90
seed=0
scales="1 1.5 2 3 5"
sample_args=""
model=""
run=""
while [[ $# -gt 0 ]]; do
    case "$1" in
    --dataset) dataset="$2"; shift 2 ;;
    --num) num="$2"; shift 2 ;;
    --seed) seed="$2"; shift 2 ;;
    --guidance) scales="$2"; shift 2 ;;
    --sample-args) sample_args="$2"; shift 2 ;;
    --model) model="$2"; shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) run="$1"; shift ;;
    esac
done
[[ -n "$run" ]] || { echo "usage: $0 [options] RUN (see --help)" >&2; exit 2; }
if [[ -z "${DDM:-}" ]]; then # DDM=path/to/ddm: use that binary instead of building one
    cargo build --release -p ddm --quiet
fi
ddm=${DDM:-target/release/ddm}
classes=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["model"]["classes"])' \
    "$run/config.json")

out="$run/guidance"
source=(--checkpoint "$run")
if [[ -n "$model" ]]; then
    out="$run/guidance/$(basename "$model" .ddm)"
    source=(--model "$model")
fi
mkdir -p "$out"
printf '| guidance | mean accuracy | worst class | mean class FD | mean class floor |\n'
printf '| ---: | ---: | ---: | ---: | ---: |\n'
for scale in $scales; do
    rows=""
    for ((k = 0; k < classes; k++)); do
        file="$out/w$scale-class$k.npy"
        if [[ ! -s "$file" ]]; then
            # shellcheck disable=SC2086
            "$ddm" sample "${source[@]}" --class "$k" --guidance "$scale" --num "$num" \
                --seed "$seed" $sample_args --out "$file" >/dev/null
        fi
        rows+=$("$ddm" eval --dataset "$dataset" --samples "$file" --class "$k" --json |
            python3 -c 'import json, sys; m = json.load(sys.stdin)["metrics"]
print(m["class_accuracy"]["samples"], m["fd"]["samples"], m["fd"]["floor"])')$'\n'
    done
    printf '%s' "$rows" | python3 -c '
import sys
rows = [list(map(float, line.split())) for line in sys.stdin if line.strip()]
acc = [r[0] for r in rows]
mean = lambda v: sum(v) / len(v)
print("| %s | %.1f%% | %.1f%% (class %d) | %.2f | %.2f |" % (sys.argv[1], 100 * mean(acc),
      100 * min(acc), acc.index(min(acc)), mean([r[1] for r in rows]), mean([r[2] for r in rows])))
' "$scale"
done
