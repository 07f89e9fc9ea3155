# Sourced by the scripts that need PyTorch (the training benchmark, the diffusers reference
# trajectories). Defines `ensure_torch_venv`, which sets up target/bench-venv on the first call
# and sets `python` to its interpreter.
#
# PyPI has no CPU-only torch for Linux x86-64: its wheel is built with CUDA and its
# requirements add about 4 GB of NVIDIA libraries and triton. The CPU kernels use none of them,
# but `import torch` loads the CUDA libraries that libtorch is linked against. So torch is
# installed without dependencies, then its pure-Python requirements and only the NVIDIA
# libraries libtorch links (not triton, cuSOLVER, NVTX or cuda-bindings): about 4.1 GB on disk
# instead of 5.4 GB. TORCH_VERSION (default 2.15.0) picks the version. Network is needed once;
# later runs reuse the environment.

venv=target/bench-venv
python="$venv/bin/python"

torch_works() {
    "$python" -c 'import torch; torch.nn.functional.conv2d(torch.randn(1, 2, 5, 5), torch.randn(3, 2, 3, 3))' \
        >/dev/null 2>&1
}

ensure_torch_venv() {
    local torch_version="${TORCH_VERSION:-2.15.0}"
    if [[ -x "$python" ]] && torch_works; then
        return 0
    fi
    echo "== setting up PyTorch $torch_version (CPU use) in $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --upgrade pip
    "$venv/bin/pip" install --quiet --no-deps "torch==$torch_version"
    # torch's requirements without triton and cuda-bindings, and only the CUDA toolkit parts
    # that libtorch is linked against (read from the installed wheel's metadata).
    "$python" - >"$venv/torch-requirements.txt" <<'PY'
import re
from importlib.metadata import requires

for requirement in requires("torch"):
    if "extra ==" in requirement:
        continue
    name = re.split(r"[\s\[<>=~!;]", requirement, maxsplit=1)[0].lower()
    if name in ("triton", "cuda-bindings"):
        continue
    requirement = requirement.split(";")[0].strip()
    if name == "cuda-toolkit":
        parts = "cublas,cudart,cufft,cufile,cupti,cusparse,nvjitlink,nvrtc"
        requirement = re.sub(r"\[[^\]]*\]", f"[{parts}]", requirement)
    print(requirement)
print("numpy")
PY
    "$venv/bin/pip" install --quiet -r "$venv/torch-requirements.txt"
    if ! torch_works; then
        echo "error: torch does not import in $venv (see $venv/torch-requirements.txt)" >&2
        return 1
    fi
}
