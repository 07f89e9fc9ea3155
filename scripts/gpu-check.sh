#!/usr/bin/env bash
# Everything ddm has that needs an NVIDIA GPU, in one short run (about 3 minutes after the
# build), for whoever has a GPU for a few minutes:
#
#   1. builds ddm and the GPU tests with `--features nccl` (CUDA and NCCL; NCCL=0: `cuda`
#      alone), the toolkit from scripts/cuda-toolkit.sh when no nvcc is installed
#      (CUDA_COMPUTE_CAP picks the GPU generation, default 90);
#   2. runs the GPU tests (host/tests/devices.rs: loss, gradients, a training step and DDIM
#      samples on the GPU against the CPU; a data-parallel NCCL rank against the GPU alone);
#   3. trains the demo's MLP on optdigits with `--device cuda` (stopped half way and resumed),
#      samples from it there and evaluates the samples (the classifier on the GPU too), and
#      checks that a diverging run stops at its NaN loss with its last good checkpoint;
#   4. times training steps of the MLP and UNet presets against PyTorch on the same GPU (same
#      models, batch, optimiser and EMA; f32 without TF32 on both sides);
#   5. prints a summary.
#
# Usage: scripts/gpu-check.sh [--prebuilt DIR] [--presets mlp,unet28] [--batch-size 64]
#                             [--seconds 10] [--device cuda:0] [--out DIR]
#
# --prebuilt DIR: take DIR/ddm and DIR/devices-tests (built elsewhere with `--features cuda`)
# instead of building, for a GPU machine without Rust. --out DIR keeps the logs and the JSON
# timings (default: a temporary folder). PyTorch comes from PYTHON, else python3 when it
# imports torch with CUDA, else the environment of scripts/torch-venv.sh. The CUDA libraries
# (cuBLAS, cuRAND, NVRTC of CUDA 13) come from the system, else from PyTorch's NVIDIA wheels.
set -euo pipefail
cd "$(dirname "$0")/.."

prebuilt=""
presets=mlp,unet28
batch=64
seconds=10
device=cuda:0
out=""
while [[ $# -gt 0 ]]; do
    case "$1" in
    --prebuilt) prebuilt="$2"; shift 2 ;;
    --presets) presets="$2"; shift 2 ;;
    --batch-size) batch="$2"; shift 2 ;;
    --seconds) seconds="$2"; shift 2 ;;
    --device) device="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done
if [[ -z "$out" ]]; then
    out=$(mktemp -d)
fi
mkdir -p "$out"
say() { printf '\n==> %s\n' "$*"; }
failed=()

say "GPU"
nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader ||
    { echo "error: nvidia-smi finds no GPU" >&2; exit 1; }

if [[ -n "$prebuilt" ]]; then
    ddm="$prebuilt/ddm"
    tests="$prebuilt/devices-tests"
else
    say "building with --features cuda"
    if ! command -v nvcc >/dev/null; then
        eval "$(scripts/cuda-toolkit.sh)"
    fi
    features=cuda
    if [[ "${NCCL:-1}" == 1 ]]; then
        features=nccl
    fi
    cargo build --release --features "$features" -p ddm --bin ddm
    ddm=target/release/ddm
    tests=$(cargo test --release --features "$features" -p ddm --test devices --no-run \
        --message-format=json | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "devices" and m.get("executable"):
        print(m["executable"])')
fi

# The CUDA 13 libraries and NCCL: the system's, else those of PyTorch's NVIDIA wheels.
if ! ldconfig -p 2>/dev/null | grep -q 'libcublas.so.13'; then
    wheels=$(python3 -c 'import nvidia; print(list(nvidia.__path__)[0])' 2>/dev/null || true)
    for lib in "$wheels/cu13/lib" "$wheels/nccl/lib"; do
        if [[ -n "$wheels" && -d "$lib" ]]; then
            export LD_LIBRARY_PATH="$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
        fi
    done
fi

# The driver's library, where the loader's cache does not list it (containers).
if ! ldconfig -p 2>/dev/null | grep -q 'libcuda.so.1'; then
    for lib in /usr/local/nvidia/lib64 /usr/local/nvidia/lib; do
        if [[ -e "$lib/libcuda.so.1" ]]; then
            export LD_LIBRARY_PATH="$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
        fi
    done
fi
if ldd "$ddm" | grep 'not found'; then
    echo "error: $ddm misses the libraries above (LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-})" >&2
    exit 1
fi

say "GPU tests (host/tests/devices.rs)"
if "$tests" --ignored --nocapture --test-threads 1 2>&1 | tee "$out/tests.log"; then
    tests_result=passed
else
    tests_result=FAILED
    failed+=("GPU tests")
fi

say "ddm train (stopped at 1,000 steps, resumed to 2,000) / sample / eval on $device (optdigits MLP)"
rm -rf "$out/run"
if "$ddm" train --dataset optdigits --model mlp --prediction v --beta-schedule cosine \
    --steps 2000 --batch-size 128 --preview-every 0 --checkpoint-every 1000 --stop-after 1000 \
    --device "$device" --out "$out/run" 2>&1 | tail -n 2 &&
    "$ddm" train --resume --device "$device" --out "$out/run" 2>&1 | tail -n 3 &&
    "$ddm" sample --checkpoint "$out/run" --num 898 --seed 1 --clip-sample 1 --device "$device" \
        --out "$out/samples.npy" 2>&1 | tail -n 2 &&
    "$ddm" eval --dataset optdigits --samples "$out/samples.npy" --num 898 --device "$device" \
        2>&1 | tee "$out/eval.log" | tail -n 12; then
    cli_result=passed
else
    cli_result=FAILED
    failed+=("train/sample on the GPU")
fi

say "the NaN stop on $device (learning rate 1e30, no clipping)"
rm -rf "$out/nan"
"$ddm" train --dataset toy:moons --model mlp --steps 20 --batch-size 32 --lr 1e30 --lr-min 0 \
    --warmup 0 --grad-clip 0 --checkpoint-every 1 --preview-every 0 --device "$device" \
    --out "$out/nan" >"$out/nan.log" 2>&1 && nan_status=0 || nan_status=$?
cat "$out/nan.log" | tail -n 2
if [[ $nan_status -ne 0 ]] && grep -q "the training loss became" "$out/nan.log" &&
    grep -q "last good checkpoint (step 1)" "$out/nan.log"; then
    nan_result=passed
else
    nan_result=FAILED
    failed+=("NaN stop on the GPU")
fi

say "training speed against PyTorch on $device (batch $batch, up to $seconds s per preset)"
python=${PYTHON:-}
if [[ -z "$python" ]]; then
    if python3 -c 'import torch, sys; sys.exit(not torch.cuda.is_available())' 2>/dev/null; then
        python=python3
    else
        source scripts/torch-venv.sh
        ensure_torch_venv
    fi
fi
"$ddm" bench-train --json --mode both --preset "$presets" --batch-size "$batch" \
    --seconds "$seconds" --steps 100000 --device "$device" >"$out/timings.jsonl"
"$python" scripts/bench_pytorch.py --json --mode both --preset "$presets" --batch-size "$batch" \
    --seconds "$seconds" --steps 100000 --device "$device" >>"$out/timings.jsonl"

say "summary"
"$python" - "$out/timings.jsonl" <<'EOF'
import json
import sys

records = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
runs = {(r["framework"], r["model"], r["mode"]): r for r in records}
print(f"{'model':<8} {'mode':<8} {'params':>9} | {'ddm steps/s':>11} {'PyTorch':>9} {'ddm/PyTorch':>11}")
for (framework, model, mode), d in sorted(runs.items()):
    if framework != "ddm" or ("pytorch", model, mode) not in runs:
        continue
    p = runs[("pytorch", model, mode)]
    params = f"{d['params']}" if d["params"] == p["params"] else f"{d['params']}!={p['params']}"
    ratio = d["steps_per_s"] / p["steps_per_s"]
    print(f"{model:<8} {mode:<8} {params:>9} | {d['steps_per_s']:>11.2f} {p['steps_per_s']:>9.2f} {ratio:>10.2f}x")
print("ddm/PyTorch > 1: ddm is faster.")
EOF
echo "GPU tests: $tests_result; train/resume/sample/eval on the GPU: $cli_result;" \
    "NaN stop: $nan_result; logs in $out"
if [[ ${#failed[@]} -gt 0 ]]; then
    echo "error: failed: ${failed[*]}" >&2
    exit 1
fi
