#!/usr/bin/env bash
# Builds every real-board crate under boards/ for its target, with the committed optdigits int8
# model, so that CI proves they compile and link (they run only on hardware: see
# boards/README.md). Also builds boards/jetson with tract (`--features onnx`), once; the
# `ddm-hil` tests then reuse that build.
#
# Needs the targets thumbv7em-none-eabihf, thumbv8m.main-none-eabihf and
# aarch64-unknown-linux-gnu, flip-link (`cargo install flip-link --locked`) and Debian's
# gcc-aarch64-linux-gnu and libc6-dev-arm64-cross. Prints each image's size.
#
# DDM_MODEL_BLOB, DDM_SEED, DDM_NUM and the sampler variables (DDM_SAMPLER, DDM_STEPS, ...) choose another model or run
# (see boards/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."

export DDM_MODEL_BLOB="${DDM_MODEL_BLOB:-$PWD/hil/fixtures/optdigits-mlp-int8.ddm}"
export DDM_STEPS="${DDM_STEPS:-4}"

say() { printf '\n==> %s\n' "$*"; }

for board in nrf52840-dk stm32f746g-disco pico2; do
    say "boards/$board (model $(basename "$DDM_MODEL_BLOB"), $DDM_STEPS steps)"
    (cd "boards/$board" && cargo build --release --locked)
done

say "boards/jetson with tract (aarch64 Linux)"
(cd boards/jetson && cargo build --release --locked --features onnx)

say "image sizes"
for board in nrf52840-dk stm32f746g-disco pico2; do
    elf=$(ls boards/"$board"/target/*/release/generate)
    # Allocated sections: flash holds those with contents, RAM those at RAM addresses.
    python3 - "$board" "$elf" <<'PY'
import struct, sys
board, path = sys.argv[1], sys.argv[2]
data = open(path, 'rb').read()
shoff, = struct.unpack_from('<I', data, 0x20)
shentsize, shnum = struct.unpack_from('<HH', data, 0x2e)
flash = ram = 0
for i in range(shnum):
    _, kind, flags, addr, _, size = struct.unpack_from('<IIIIII', data, shoff + i * shentsize)
    if not flags & 2 or size == 0:
        continue
    if kind != 8:  # not NOBITS: stored in flash
        flash += size
    if 0x20000000 <= addr < 0x30000000:
        ram += size
print(f'{board:<18} flash {flash:>8} bytes   static RAM {ram:>7} bytes')
PY
done
