#!/usr/bin/env bash
# Does fine-tuning help? Pretrain a class-conditional MLP on optdigits' digits 0-7, then learn
# digits 8 and 9 from a few images, starting from it (`ddm train --init-from`) or from scratch,
# for the same number of steps (BENCHMARKS.md, "Fine-tuning on new classes"):
#
#   scripts/transfer-table.sh [--images 100] [--steps "500 2000"] [--num 85]
#                             [--model mlp|unet] [--freeze PREFIX,...] OUT_DIR
#
# Each new class is scored with `ddm sample --class K` (DDIM 50, guidance 1) and `ddm eval
# --class K` against optdigits' real images of K. One line per step count: the mean FD of
# classes 8 and 9 and their accuracy, fine-tuned against from scratch, beside the floor.
# --model unet uses a conditional UNet (width 16, GroupNorm 4) instead of the demo's MLP;
# --freeze adds a fine-tuned run with those parameters held fixed (`ddm train --freeze`, for
# example down-path) and its two columns.
set -euo pipefail
cd "$(dirname "$0")/.."

images=100
steps_list="500 2000"
num=85
model=mlp
freeze=""
out=""
while [[ $# -gt 0 ]]; do
    case "$1" in
    --images) images="$2"; shift 2 ;;
    --steps) steps_list="$2"; shift 2 ;;
    --num) num="$2"; shift 2 ;;
    --model) model="$2"; shift 2 ;;
    --freeze) freeze="$2"; shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) out="$1"; shift ;;
    esac
done
[[ -n "$out" ]] || { echo "usage: $0 [options] OUT_DIR (see --help)" >&2; exit 2; }
cargo build --release -p ddm --quiet
ddm=target/release/ddm
mkdir -p "$out"
common=(--beta-schedule cosine --prediction v --preview-every 0 --checkpoint-every 1000)
architecture=(--model "$model")
[[ "$model" == unet ]] && architecture+=(--width 16 --groups 4)
if [[ ! -f "$out/pretrain/config.json" ]]; then
    "$ddm" train --dataset optdigits --only-classes 0,1,2,3,4,5,6,7 "${architecture[@]}" \
        --conditional "${common[@]}" --steps 10000 --out "$out/pretrain" >/dev/null
fi

score() { # RUN -> "mean FD, mean accuracy, mean floor" over classes 8 and 9
    local run="$1" rows=""
    for k in 8 9; do
        "$ddm" sample --checkpoint "$run" --class "$k" --guidance 1 --num "$num" --seed 0 \
            --clip-sample 1 --out "$run/class$k.npy" >/dev/null
        rows+=$("$ddm" eval --dataset optdigits --samples "$run/class$k.npy" --class "$k" \
            --json | python3 -c 'import json, sys; m = json.load(sys.stdin)["metrics"]
print(m["fd"]["samples"], m["class_accuracy"]["samples"], m["fd"]["floor"])')$'\n'
    done
    printf '%s' "$rows" | python3 -c '
import sys
rows = [list(map(float, line.split())) for line in sys.stdin if line.strip()]
mean = lambda i: sum(r[i] for r in rows) / len(rows)
print("%.2f | %.1f%% | %.2f" % (mean(0), 100 * mean(1), mean(2)))'
}

if [[ -n "$freeze" ]]; then
    printf '| steps on %s images of 8 and 9 | fine-tuned FD | accuracy | frozen %s FD | accuracy | from scratch FD | accuracy | floor |\n' "$images" "$freeze"
    printf '| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n'
else
    printf '| steps on %s images of 8 and 9 | fine-tuned FD | accuracy | from scratch FD | accuracy | floor |\n' "$images"
    printf '| ---: | ---: | ---: | ---: | ---: | ---: |\n'
fi
for steps in $steps_list; do
    tuned="$out/tuned-$steps" scratch="$out/scratch-$steps"
    new=(--dataset optdigits --only-classes 8,9 --limit "$images" --steps "$steps"
        --warmup 50 --preview-every 0 --checkpoint-every 1000)
    [[ -f "$tuned/config.json" ]] ||
        "$ddm" train "${new[@]}" --init-from "$out/pretrain" --out "$tuned" >/dev/null
    [[ -f "$scratch/config.json" ]] ||
        "$ddm" train "${new[@]}" "${architecture[@]}" --conditional --beta-schedule cosine \
            --prediction v --out "$scratch" >/dev/null
    IFS='|' read -r fd_t acc_t floor <<<"$(score "$tuned")"
    IFS='|' read -r fd_s acc_s _ <<<"$(score "$scratch")"
    frozen_columns=""
    if [[ -n "$freeze" ]]; then
        frozen="$out/frozen-$steps"
        [[ -f "$frozen/config.json" ]] ||
            "$ddm" train "${new[@]}" --init-from "$out/pretrain" --freeze "$freeze" \
                --out "$frozen" >/dev/null
        IFS='|' read -r fd_f acc_f _ <<<"$(score "$frozen")"
        frozen_columns="$fd_f|$acc_f|"
    fi
    printf '| %s |%s|%s|%s%s|%s|%s |\n' "$steps" "$fd_t" "$acc_t" "$frozen_columns" "$fd_s" \
        "$acc_s" "$floor"
done
