#!/usr/bin/env bash
# Sets up the CUDA 13.0 toolkit that `--features cuda` builds with, from NVIDIA's PyPI wheels,
# in target/cuda-toolkit (about 1.6 GB; network needed once, later runs reuse it), and prints
# the environment a build needs. No GPU, driver or system CUDA is needed:
#
#   eval "$(scripts/cuda-toolkit.sh)"
#   cargo build --release --features cuda
#
# What it holds: nvcc with its NVVM back end and headers, the runtime headers, and the
# libraries candle links (cuBLAS, cuBLASLt, cuRAND, NVRTC; NCCL for `--features nccl`). The
# driver library (libcuda.so.1) comes with the GPU's driver and is only found at run time:
# the build links against a stub made here from the toolkit's cuda.h (empty functions under
# the driver's names and soname, as the toolkit's own lib64/stubs/libcuda.so is), which the
# binary never loads.
#
# The environment it prints: CUDA_ROOT and PATH (nvcc), CUDA_COMPUTE_CAP (the GPU generation
# the kernels are compiled for, default 90 = Hopper; set CUDA_COMPUTE_CAP before running this to
# choose another, e.g. 80 for the A100, 89 for the L4 and RTX 40 series), CUDARC_CUDA_VERSION,
# LIBRARY_PATH (the stub and the libraries, for the linker) and LD_LIBRARY_PATH (the libraries,
# for running the binary here; on a GPU machine any CUDA 13 installation of them serves).
set -euo pipefail
cd "$(dirname "$0")/.."

dir=target/cuda-toolkit
root="$PWD/$dir/nvidia/cu13"
wheels=(
    nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88
    nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85 nvidia-cuda-nvrtc==13.0.88
    nvidia-cublas==13.0.2.14 nvidia-curand==10.4.0.35 nvidia-nccl-cu13==2.30.7
)

if [[ "$(cat "$dir/.complete" 2>/dev/null)" != "${wheels[*]}" ]]; then
    echo "== setting up the CUDA toolkit from PyPI in $dir" >&2
    rm -rf "$dir"
    mkdir -p "$dir/wheels"
    python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.11 \
        --platform manylinux_2_27_x86_64 --platform manylinux_2_18_x86_64 \
        --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux_2_12_x86_64 --platform manylinux2010_x86_64 -d "$dir/wheels" "${wheels[@]}" >&2
    for wheel in "$dir"/wheels/*.whl; do
        python3 -m zipfile -e "$wheel" "$dir" >&2
    done
    rm -rf "$dir/wheels"
    chmod +x "$root"/bin/* "$root"/nvvm/bin/* 2>/dev/null || true
    ln -sf ../../nccl/lib/libnccl.so.2 "$root/lib/libnccl.so.2"
    # The wheels carry only versioned libraries; the linker looks for libNAME.so.
    for lib in cublas cublasLt curand nvrtc cudart nccl; do
        versioned=$(cd "$root/lib" && ls "lib$lib.so."* | sort | head -n 1)
        ln -sf "$versioned" "$root/lib/lib$lib.so"
    done
    # The driver stub: every driver entry point cuda.h declares (and the versioned names its
    # macros map them to), as an empty function, under the driver's soname.
    mkdir -p "$root/lib/stubs"
    {
        grep -ohE '\bCUDAAPI +cu[A-Za-z0-9_]+ *\(' "$root/include/cuda.h" |
            sed -E 's/CUDAAPI +//; s/ *\(//'
        grep -ohE '^#define +cu[A-Za-z0-9_]+ +__CUDA_API_[A-Z0-9_]+\(cu[A-Za-z0-9_]+\)' \
            "$root/include/cuda.h" | sed -E 's/.*\((cu[A-Za-z0-9_]+)\)/\1/'
        grep -ohE '^#define +cu[A-Za-z0-9_]+ +cu[A-Za-z0-9_]+_v[0-9]+' "$root/include/cuda.h" |
            awk '{print $3}'
    } | sort -u | awk '{printf "int %s(void) { return 999; }\n", $1}' >"$root/lib/stubs/cuda.c"
    gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$root/lib/stubs/libcuda.so" \
        "$root/lib/stubs/cuda.c"
    echo "${wheels[*]}" >"$dir/.complete"
fi

cat <<EOF
export CUDA_ROOT="$root"
export PATH="$root/bin:\$PATH"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
export CUDARC_CUDA_VERSION=13000
export LIBRARY_PATH="$root/lib/stubs:$root/lib\${LIBRARY_PATH:+:\$LIBRARY_PATH}"
export LD_LIBRARY_PATH="$root/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
EOF
