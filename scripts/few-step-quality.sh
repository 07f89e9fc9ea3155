#!/usr/bin/env bash
# A distilled student against its teacher at equal network calls: Frechet distance (`ddm eval`)
# of the teacher's DDIM and DPM-Solver++ 2M (their default spacings) and of the student's own
# sampler, at 1, 2, 4 and 8 calls, optionally the teacher's DDPM in 1000 steps; every sampler
# clamps x0 to [-1, 1] and draws the same seed. Prints a markdown table. See "Few-step
# students" in BENCHMARKS.md.
#
# Usage: scripts/few-step-quality.sh [--num 1000] [--seed 0] [--dataset optdigits] [--ddpm]
#            [--calls "1 2 4 8"] TEACHER STUDENT...
#        (release build: target/release/ddm; samples go to a temporary folder)
set -euo pipefail
cd "$(dirname "$0")/.."

num=1000
seed=0
dataset=optdigits
ddpm=false
calls="1 2 4 8"
runs=()
while [[ $# -gt 0 ]]; do
    case "$1" in
    --num) num="$2"; shift 2 ;;
    --seed) seed="$2"; shift 2 ;;
    --dataset) dataset="$2"; shift 2 ;;
    --ddpm) ddpm=true; shift ;;
    --calls) calls="$2"; shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) runs+=("$1"); shift ;;
    esac
done
[[ ${#runs[@]} -ge 2 ]] || { echo "usage: $0 [options] TEACHER STUDENT..." >&2; exit 2; }
teacher="${runs[0]}"
students=("${runs[@]:1}")

cargo build --release -p ddm --quiet
ddm=target/release/ddm
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# FD of RUN sampled with the remaining arguments.
fd() {
    local run="$1"
    shift
    "$ddm" sample --checkpoint "$run" --num "$num" --seed "$seed" --clip-sample 1 "$@" \
        --out "$tmp/s.npy" >/dev/null
    "$ddm" eval --dataset "$dataset" --samples "$tmp/s.npy" --json | python3 -c \
        'import json, sys; m = json.load(sys.stdin)["metrics"]["fd"]; print("%.2f %.2f" % (m["samples"], m["floor"]))'
}

header="| sampler |"
rule="| --- |"
for n in $calls; do
    header+=" $n |"
    rule+=" ---: |"
done
echo "$header"
echo "$rule"
floor=""
for sampler in ddim dpmpp-2m; do
    row="| teacher $sampler |"
    for n in $calls; do
        read -r value floor < <(fd "$teacher" --sampler "$sampler" --steps "$n")
        row+=" $value |"
    done
    echo "$row"
done
for student in "${students[@]}"; do
    row="| student $(basename "$student") |"
    for n in $calls; do
        read -r value floor < <(fd "$student" --steps "$n")
        row+=" $value |"
    done
    echo "$row"
done
if $ddpm; then
    read -r value floor < <(fd "$teacher" --sampler ddpm --steps 1000)
    echo "teacher DDPM, 1000 steps: FD $value"
fi
echo "real data (floor): FD $floor"
