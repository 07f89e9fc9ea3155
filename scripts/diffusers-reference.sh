#!/usr/bin/env bash
# Regenerates core/tests/data/diffusers-reference.json, the reference trajectories of
# diffusers' schedulers that core/tests/diffusers_conformance.rs replays (see
# scripts/diffusers_reference.py for the cases). Needs network once, for the Python
# environment (PyTorch and diffusers in target/bench-venv, see scripts/torch-venv.sh);
# DIFFUSERS_VERSION (default 0.42.1) picks diffusers' version.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/torch-venv.sh
ensure_torch_venv
version="${DIFFUSERS_VERSION:-0.42.1}"
if ! "$python" -c "import diffusers, sys; sys.exit(diffusers.__version__ != '$version')" 2>/dev/null; then
    "$venv/bin/pip" install --quiet "diffusers==$version"
fi
mkdir -p core/tests/data
"$python" scripts/diffusers_reference.py core/tests/data/diffusers-reference.json
