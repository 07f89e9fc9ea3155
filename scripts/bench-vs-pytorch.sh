#!/usr/bin/env bash
# Training speed of ddm against PyTorch on the CPU: the same MLP and UNet (same layers, same
# parameter counts), the same batch and thread count, timed in one invocation for the forward
# pass (batch + loss, no gradients) and a full training step (forward, backward, gradient
# clipping, AdamW, EMA). Prints steps/s and CPU time per step of both and the ratio
# ddm / PyTorch. See "Training speed against PyTorch" in BENCHMARKS.md.
#
# Usage: scripts/bench-vs-pytorch.sh [--threads "1 2"] [--batch-size 64] [--seconds 20]
#                                    [--presets mlp,unet28] [--json FILE]
#
# Presets (both sides): mlp = MlpConfig::default() on flattened 8x8 images (the demo's model),
# unet28 = UnetConfig::default() on 1x28x28 images (Fashion-MNIST's size), unet8 = the UNet on
# 8x8 images.
#
# Setup, on the first run only: a virtual environment in target/bench-venv with PyTorch from
# PyPI (scripts/torch-venv.sh says how; network needed once, later runs reuse it).
# TORCH_VERSION (default 2.15.0) picks the version.
#
# The machine should be otherwise idle: the script prints the load average before and after
# each run. CPU time per step (all threads) is printed too; on a busy machine it is a better
# measure of the work than the wall clock.
set -euo pipefail
cd "$(dirname "$0")/.."

threads="1 2"
batch=64
seconds=20
presets=mlp,unet28
json_out=""
while [[ $# -gt 0 ]]; do
    case "$1" in
    --threads) threads="$2"; shift 2 ;;
    --batch-size) batch="$2"; shift 2 ;;
    --seconds) seconds="$2"; shift 2 ;;
    --presets) presets="$2"; shift 2 ;;
    --json) json_out="$2"; shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done

source scripts/torch-venv.sh
ensure_torch_venv
"$python" -c 'import torch; print("PyTorch", torch.__version__, "| CPU capability:", torch.backends.cpu.get_cpu_capability())'

echo "== building ddm (release)"
cargo build --release -p ddm --quiet
ddm=target/release/ddm

results=$(mktemp)
trap 'rm -f "$results"' EXIT
for t in $threads; do
    echo "== $t thread(s), batch $batch, up to $seconds s per preset and mode"
    echo "   load before ddm:     $(cut -d' ' -f1-3 /proc/loadavg)"
    "$ddm" --threads "$t" bench-train --json --mode both --preset "$presets" \
        --batch-size "$batch" --seconds "$seconds" --steps 100000 >>"$results"
    echo "   load before PyTorch: $(cut -d' ' -f1-3 /proc/loadavg)"
    OMP_NUM_THREADS="$t" MKL_NUM_THREADS="$t" "$python" scripts/bench_pytorch.py --json \
        --mode both --preset "$presets" --batch-size "$batch" --threads "$t" \
        --seconds "$seconds" --steps 100000 >>"$results"
    echo "   load after:          $(cut -d' ' -f1-3 /proc/loadavg)"
done
if [[ -n "$json_out" ]]; then
    cp "$results" "$json_out"
fi

python3 - "$results" <<'EOF'
import json
import sys

records = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
runs = {}
for r in records:
    runs[(r["framework"], r["model"], r["mode"], int(r["threads"]))] = r
keys = sorted({(m, mode, t) for (_, m, mode, t) in runs}, key=lambda k: (k[0], k[2], k[1]))
print()
print(
    f"{'model':<8} {'mode':<8} {'threads':>7} {'params':>9} | {'ddm steps/s':>11} "
    f"{'PyTorch':>9} {'ddm/PyTorch':>11} | {'ddm CPU ms':>10} {'PyTorch':>9} {'ratio':>7}"
)
mismatch = False
for model, mode, t in keys:
    d, p = runs.get(("ddm", model, mode, t)), runs.get(("pytorch", model, mode, t))
    if d is None or p is None:
        continue
    if d["params"] != p["params"]:
        mismatch = True
    params = f"{d['params']}" if d["params"] == p["params"] else f"{d['params']}!={p['params']}"
    ratio = d["steps_per_s"] / p["steps_per_s"]
    cpu_ratio = p["cpu_s_per_step"] / d["cpu_s_per_step"]
    print(
        f"{model:<8} {mode:<8} {t:>7} {params:>9} | {d['steps_per_s']:>11.2f} "
        f"{p['steps_per_s']:>9.2f} {ratio:>10.2f}x | {1e3 * d['cpu_s_per_step']:>10.1f} "
        f"{1e3 * p['cpu_s_per_step']:>9.1f} {cpu_ratio:>6.2f}x"
    )
print()
print("ddm/PyTorch > 1: ddm is faster. 'ratio' compares CPU time per step (all threads).")
if mismatch:
    print("error: the parameter counts differ, the models are not the same", file=sys.stderr)
    sys.exit(1)
EOF
