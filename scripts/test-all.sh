#!/usr/bin/env bash
# Runs every test of ddm: formatting, lints, the no_std builds, the host tests and the
# hardware-in-the-loop tests under QEMU. Installs what it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n==> %s\n' "$*"; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_install() {
    local missing=()
    for package in "$@"; do
        dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        say "installing ${missing[*]}"
        as_root apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
    fi
}

say "disk space (a clean run needs about 8 GB)"
df -h . || true

say "toolchain targets, system packages and flip-link"
rustup target add thumbv7em-none-eabihf thumbv8m.main-none-eabihf aarch64-unknown-linux-gnu
apt_install qemu-system-arm qemu-user gcc-aarch64-linux-gnu libc6-dev-arm64-cross \
    dataset-fashion-mnist
command -v flip-link >/dev/null || cargo install flip-link --locked

say "formatting"
cargo fmt --all -- --check
for board in boards/*/; do
    (cd "$board" && cargo fmt -- --check)
done

say "lints"
cargo clippy --workspace --all-targets -- -D warnings
for board in boards/*/; do
    (cd "$board" && cargo clippy --all-targets -- -D warnings)
done

say "no_std core and device runtime for thumbv7em-none-eabihf"
cargo build -p ddm-core -p ddm-firmware --target thumbv7em-none-eabihf
cargo build -p ddm-firmware --features defmt --target thumbv7em-none-eabihf

say "board images (nRF52840-DK, STM32F746G-DISCO, Pico 2, Jetson with tract)"
./scripts/build-boards.sh

say "tests (host and QEMU)"
cargo test --workspace
# The board build helper lives outside the host workspace (with the boards); its own tests
# (the DDM_* variables, the generated configuration) run here.
(cd boards/build-support && cargo test)

say "device runtime tests on aarch64 under qemu-aarch64: Cortex-A72 (NEON), A76 (NEON dot product) and QEMU's max CPU (int8 matrix multiply)"
# Every int8 product path this CPU model has is checked against the portable one and the
# plain definition; DDM_EXPECT_PATHS makes a path missing on that model fail the run.
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu"
QEMU_CPU=cortex-a72 DDM_EXPECT_PATHS=portable,neon \
    cargo test -p ddm-firmware --target aarch64-unknown-linux-gnu
QEMU_CPU=cortex-a76 DDM_EXPECT_PATHS=portable,neon,neon-dotprod \
    cargo test -p ddm-firmware --target aarch64-unknown-linux-gnu
QEMU_CPU=max DDM_EXPECT_PATHS=portable,neon,neon-dotprod,neon-i8mm \
    cargo test -p ddm-firmware --target aarch64-unknown-linux-gnu

say "the CUDA build: cargo build --release --features cuda (and nccl), without a GPU"
# The toolkit comes from NVIDIA's PyPI wheels (scripts/cuda-toolkit.sh: nvcc, headers,
# cuBLAS, cuRAND, NVRTC, a driver stub to link against); the kernels are compiled for Hopper
# (CUDA_COMPUTE_CAP=90). The GPU tests (host/tests/devices.rs) are compiled into the host tests
# above, which list them as ignored; scripts/gpu-check.sh runs them on a GPU.
(
    eval "$(scripts/cuda-toolkit.sh)"
    cargo build --release --features cuda -p ddm --bin ddm
    # and with NCCL (data-parallel training over several GPUs): the kernels are reused.
    cargo build --release --features nccl -p ddm --bin ddm
)

say "disk space after the build"
df -h . || true
du -sh target 2>/dev/null || true
