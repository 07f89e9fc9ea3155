#!/usr/bin/env bash
# Instructions per network call on aarch64, under qemu-aarch64: ddm's int8 runtime (the
# Jetson binary, boards/jetson) against tract on the f32 ONNX export of the same trained
# model, batch 1, one thread, counted by QEMU (a TCG plugin, scripts/qemu_insn_marks.c), not
# timed. For each CPU model the int8 runtime takes the path that CPU has (`neon-dotprod` on a
# Cortex-A76 / A78AE, `neon` on a Cortex-A72, `neon-i8mm` on QEMU's `max`); tract picks its
# own kernels for the CPU.
# Each count is the difference between a run with CALLS_HIGH and one with CALLS_LOW calls,
# divided by the difference, so model loading, tract's optimisation and the process's start
# are not counted. Prints a table with the ratio tract / ddm int8 (above 1: ddm runs fewer
# instructions). See "Network call on the host" in BENCHMARKS.md.
#
# Usage: scripts/bench-aarch64-instructions.sh [--cpu cortex-a76,cortex-a72] [--calls 2,6] RUN_DIR...
#
# Needs: qemu-user (qemu-aarch64, 7.2 or later), gcc-aarch64-linux-gnu and
# libc6-dev-arm64-cross, the host's cc, and the aarch64-unknown-linux-gnu Rust target. The
# first run builds tract for aarch64 (several minutes on two cores).
set -euo pipefail
cd "$(dirname "$0")/.."

cpus=cortex-a76,cortex-a72
calls=2,6
runs=()
while [[ $# -gt 0 ]]; do
    case "$1" in
    --cpu) cpus="$2"; shift 2 ;;
    --calls) calls="$2"; shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) runs+=("$1"); shift ;;
    esac
done
if [[ ${#runs[@]} -eq 0 ]]; then
    echo "usage: $0 [--cpu CPU,...] [--calls LOW,HIGH] RUN_DIR... (trained run folders)" >&2
    exit 2
fi
IFS=, read -r low high <<<"$calls"
if ! [[ "$low" =~ ^[0-9]+$ && "$high" =~ ^[0-9]+$ && "$low" -ge 1 && "$high" -gt "$low" ]]; then
    echo "--calls needs LOW,HIGH with 1 <= LOW < HIGH" >&2
    exit 2
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
plugin="$work/qemu_insn_marks.so"
cc -shared -fPIC -O2 -o "$plugin" scripts/qemu_insn_marks.c

echo "== building ddm (release)"
cargo build --release -p ddm --quiet
ddm=$PWD/target/release/ddm
jetson=boards/jetson/target/aarch64-unknown-linux-gnu/release/ddm-jetson

# Instructions between each `network engine=` line and the line before it, one line per
# engine: `ENGINE PATH INSTRUCTIONS` (PATH `-` for ONNX files).
segments() {
    local out="$1" marks="$2"
    python3 - "$out" "$marks" <<'PY'
import sys
text = open(sys.argv[1], "rb").read()
writes = []  # (first byte offset, bytes, instructions before the write)
offset = 0
for line in open(sys.argv[2]):
    kind, *fields = line.split()
    if kind == "write":
        size, count = map(int, fields)
        writes.append((offset, size, count))
        offset += size
assert offset == len(text), f"the marks cover {offset} bytes of {len(text)}"
def before(at):
    """Instructions before the write that holds byte `at`."""
    for start, size, count in writes:
        if start <= at < start + size:
            return count
    raise SystemExit(f"no write holds byte {at}")
lines, start = [], 0
for raw in text.split(b"\n")[:-1]:
    lines.append((start, raw.decode()))
    start += len(raw) + 1
for (prev, _), (at, line) in zip(lines, lines[1:]):
    if line.startswith("network engine="):
        fields = dict(f.split("=", 1) for f in line.split()[1:] if "=" in f)
        print(fields["engine"], fields.get("path", "-"), before(at) - before(prev))
PY
}

rows="$work/rows.txt"
for run in "${runs[@]}"; do
    name=$(basename "$run")
    echo "== $name: export and build"
    "$ddm" export --checkpoint "$run" --precision int8 --out "$work/$name.ddm" \
        --onnx "$work/$name.onnx" >/dev/null
    (cd boards/jetson && DDM_MODEL_BLOB="$work/$name.ddm" DDM_NUM=1 DDM_STEPS=1 \
        cargo build --release --features onnx --quiet)
    for cpu in ${cpus//,/ }; do
        for n in "$low" "$high"; do
            qemu-aarch64 -cpu "$cpu" -L /usr/aarch64-linux-gnu \
                -plugin "$plugin,out=$work/marks-$n.txt" \
                "$jetson" --onnx "$work/$name.onnx" --calls "$n" >"$work/out-$n.txt"
            segments "$work/out-$n.txt" "$work/marks-$n.txt" >"$work/seg-$n.txt"
        done
        paste -d' ' "$work/seg-$low.txt" "$work/seg-$high.txt" |
            awk -v m="$name" -v c="$cpu" -v d=$((high - low)) \
                '{ printf "%s %s %s %s %.0f\n", m, c, $1, $2, ($6 - $3) / d }' >>"$rows"
    done
done

python3 - "$rows" <<'PY'
import sys
rows = [line.split() for line in open(sys.argv[1])]
table = {}
for model, cpu, engine, path, count in rows:
    entry = table.setdefault((model, cpu), {})
    if engine.startswith("onnx:"):
        entry["tract"] = int(count)
    else:
        entry["ddm"], entry["path"] = int(count), path
print()
print("| model | CPU model | ddm int8 path | ddm int8 instructions / call | tract f32 instructions / call | tract / ddm |")
print("| --- | --- | --- | ---: | ---: | ---: |")
for (model, cpu), e in table.items():
    print(f"| {model} | {cpu} | {e['path']} | {e['ddm']:,} | {e['tract']:,} | {e['tract'] / e['ddm']:.2f} |")
PY
