#!/usr/bin/env bash
# Time per network call, batch 1, one thread, of ddm's int8 runtime against onnxruntime on
# the same trained models, in one run: ddm int8 on its fastest kernel path and on the portable
# one (`ddm bench-call`), onnxruntime on the float ONNX export and on a QDQ int8 model from
# onnxruntime's static quantisation (scripts/bench_onnxruntime.py). Prints a table with the
# ratios onnxruntime / ddm int8 (above 1: ddm is faster). See "Network call on the host" in
# BENCHMARKS.md.
#
# Usage: scripts/bench-vs-onnxruntime.sh [--seconds 2] RUN_DIR...
#
# Setup, on the first run only: a virtual environment in target/ort-venv with onnxruntime and
# numpy from PyPI (network needed once; later runs reuse it). ORT_VERSION pins a version.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=2
runs=()
while [[ $# -gt 0 ]]; do
    case "$1" in
    --seconds) seconds="$2"; shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) runs+=("$1"); shift ;;
    esac
done
if [[ ${#runs[@]} -eq 0 ]]; then
    echo "usage: $0 [--seconds S] RUN_DIR... (trained run folders)" >&2
    exit 2
fi

venv=target/ort-venv
python="$venv/bin/python"
if ! "$python" -c 'import onnxruntime, onnx, numpy, sympy' >/dev/null 2>&1; then
    echo "== setting up onnxruntime in $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --upgrade pip
    "$venv/bin/pip" install --quiet "onnxruntime${ORT_VERSION:+==$ORT_VERSION}" onnx numpy sympy
fi

echo "== building ddm (release)"
cargo build --release -p ddm --quiet
ddm=target/release/ddm

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
results="$work/results.jsonl"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
for run in "${runs[@]}"; do
    name=$(basename "$run")
    "$ddm" export --checkpoint "$run" --precision int8 --out "$work/$name.ddm" \
        --onnx "$work/$name.onnx" >/dev/null
    "$ddm" --threads 1 bench-call --model "$work/$name.ddm" --seconds "$seconds" --json \
        | sed "s|\"model\":\"[^\"]*\"|\"model\":\"$name\"|" >>"$results"
    OMP_NUM_THREADS=1 "$python" scripts/bench_onnxruntime.py --onnx "$work/$name.onnx" \
        --seconds "$seconds" | sed "s|\"model\": \"[^\"]*\"|\"model\": \"$name\"|" >>"$results"
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"

"$python" - "$results" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
models = list(dict.fromkeys(r["model"] for r in rows))
print(f"{'model':<16} {'ddm int8':>16} {'ddm portable':>13} {'ort f32':>9} {'ort int8':>9} "
      f"{'f32/ddm':>8} {'int8/ddm':>9}")
for m in models:
    ddm = [r for r in rows if r["model"] == m and r["engine"] == "ddm"]
    fast = next(r for r in ddm if r["fastest"])
    portable = next((r for r in ddm if r["path"] == "portable"), fast)
    ort = {r["precision"]: r for r in rows if r["model"] == m and r["engine"] != "ddm"}
    f32, i8 = ort["f32"]["us_per_call"], ort["int8"]["us_per_call"]
    d = fast["us_per_call"]
    print(f"{m:<16} {d:>9.1f} ({fast['path']}) {portable['us_per_call']:>13.1f} "
          f"{f32:>9.1f} {i8:>9.1f} {f32 / d:>8.2f} {i8 / d:>9.2f}")
print("microseconds per call; f32/ddm and int8/ddm above 1: ddm int8 is faster. Engine:",
      next(r["engine"] for r in rows if r["engine"] != "ddm"))
PY
