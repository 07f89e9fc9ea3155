#!/usr/bin/env bash
# Where the int8 runtime's instructions go on aarch64, under qemu-aarch64: the functions of
# the Jetson binary (boards/jetson) ranked by the instructions they ran per network call, for
# the int8 engine's calls only (the segment between the binary's `network inputs` and
# `network engine=int8` lines; a TCG plugin, scripts/qemu_insn_profile.c, counts every
# translated block's executions). Counted, not timed; the companion of
# scripts/bench-aarch64-instructions.sh (same needs, same build).
#
# Usage: scripts/profile-aarch64.sh [--cpu cortex-a72] [--calls 100] [--top 25] RUN_DIR
set -euo pipefail
cd "$(dirname "$0")/.."

cpu=cortex-a72
calls=100
top=25
run=
while [[ $# -gt 0 ]]; do
    case "$1" in
    --cpu) cpu="$2"; shift 2 ;;
    --calls) calls="$2"; shift 2 ;;
    --top) top="$2"; shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) run="$1"; shift ;;
    esac
done
if [[ -z "$run" ]]; then
    echo "usage: $0 [--cpu CPU] [--calls N] [--top N] RUN_DIR (a trained run folder)" >&2
    exit 2
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
plugin="$work/qemu_insn_profile.so"
cc -shared -fPIC -O2 -o "$plugin" scripts/qemu_insn_profile.c

cargo build --release -p ddm --quiet
./target/release/ddm export --checkpoint "$run" --precision int8 --out "$work/model.ddm" \
    --onnx "$work/model.onnx" >/dev/null
(cd boards/jetson && DDM_MODEL_BLOB="$work/model.ddm" DDM_NUM=1 DDM_STEPS=1 \
    cargo build --release --features onnx --quiet)
jetson=boards/jetson/target/aarch64-unknown-linux-gnu/release/ddm-jetson
qemu-aarch64 -cpu "$cpu" -L /usr/aarch64-linux-gnu -plugin "$plugin,out=$work/blocks.txt" \
    "$jetson" --onnx "$work/model.onnx" --calls "$calls" >"$work/out.txt"
aarch64-linux-gnu-nm -C --defined-only -n "$jetson" | awk '$2 ~ /^[tTwW]$/' >"$work/symbols.txt"

python3 - "$work" "$calls" "$top" <<'PY'
import bisect, collections, sys
work, calls, top = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
lines = open(f"{work}/out.txt").read().split("\n")
# Segment K holds what ran before write K; the binary writes one line per write.
int8 = next(k for k, l in enumerate(lines) if l.startswith("network engine=int8"))
assert lines[int8 - 1].startswith("network inputs"), lines[int8 - 1]
symbols = []
for line in open(f"{work}/symbols.txt"):
    address, _, name = line.rstrip("\n").split(" ", 2)
    symbols.append((int(address, 16), name))
addresses = [a for a, _ in symbols]
blocks, segment = [], -1
for line in open(f"{work}/blocks.txt"):
    if line.startswith("segment"):
        segment = int(line.split()[1])
    elif segment == int8:
        vaddr, insns, runs = line.split()
        blocks.append((int(vaddr, 16), int(insns) * int(runs)))
# qemu-user loads a position-independent binary at a base of its own: take the candidate
# that puts the most blocks inside the binary's symbols.
lo, hi = addresses[0], addresses[-1]
base = max((0, 0x5500000000, 0x4000000000, 0x555555554000),
           key=lambda b: sum(lo <= a - b <= hi for a, _ in blocks))
total = collections.Counter()
for vaddr, count in blocks:
    i = bisect.bisect_right(addresses, vaddr - base) - 1
    inside = i >= 0 and lo <= vaddr - base <= hi
    total[symbols[i][1] if inside else "(shared libraries)"] += count
print(f"{sum(total.values()) / calls:,.0f} instructions per int8 call, {calls} calls")
for name, count in total.most_common(top):
    print(f"{count / calls:>12,.0f}  {name[:120]}")
PY
