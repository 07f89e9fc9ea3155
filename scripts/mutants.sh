#!/usr/bin/env bash
# Mutation testing of the mathematics: cargo-mutants changes the code in small, wrong ways
# (operators, constants, returned values), one at a time, and runs the tests; a mutant the
# tests do not catch is a hole in them, or a change that does not alter the behaviour.
#
#   scripts/mutants.sh [core|firmware|all] [extra cargo-mutants arguments]
#
# core:     ddm-core's schedules, forward process, predictions, loss weights, timesteps and
#           samplers, against ddm-core's tests except the statistical mixture tests (ten
#           seconds per mutant for what the one-step and diffusers tests check exactly: the
#           score is a lower bound);
# firmware: ddm-firmware's quantisation and requantisation (src/quant.rs), against
#           ddm-firmware's tests.
# Results go to target/mutants/<part>/mutants.out (caught.txt, missed.txt, unviable.txt,
# timeout.txt). Survivors that are equivalent programs are listed, with the reason, in
# TESTING.md; any other survivor needs a test. Takes about an hour per part on two cores.
set -euo pipefail
cd "$(dirname "$0")/.."

part="${1:-all}"
shift || true
command -v cargo-mutants >/dev/null || cargo install cargo-mutants --locked

run() {
    local name="$1"
    shift
    echo "== mutants: $name"
    mkdir -p "target/mutants/$name"
    cargo mutants --no-shuffle --output "target/mutants/$name" --timeout-multiplier 3 "$@" || true
    local out="target/mutants/$name/mutants.out"
    local caught missed timeout unviable
    caught=$(wc -l <"$out/caught.txt")
    missed=$(wc -l <"$out/missed.txt")
    timeout=$(wc -l <"$out/timeout.txt")
    unviable=$(wc -l <"$out/unviable.txt")
    local viable=$((caught + timeout + missed))
    if [[ $viable -eq 0 ]]; then
        echo "$name: no viable mutant was tested (see $out/log)" >&2
        return 1
    fi
    echo "$name: $caught caught, $timeout timed out (caught), $missed missed, $unviable unviable;" \
        "score $(( 100 * (caught + timeout) / viable ))% of viable mutants"
    if [[ $missed -gt 0 ]]; then
        echo "missed:"
        sed 's/^/  /' "$out/missed.txt"
    fi
}

if [[ $part == core || $part == all ]]; then
    run core -p ddm-core \
        -f core/src/schedule.rs -f core/src/forward.rs -f core/src/prediction.rs \
        -f core/src/loss_weight.rs -f core/src/timesteps.rs -f 'core/src/sampler/*.rs' "$@" \
        -- -- --skip ddpm_1000_steps --skip ddim_50_steps --skip dpm_solver_pp_20_steps \
        --skip annealed_langevin --skip the_checks_reject_wrong_samplers
fi
if [[ $part == firmware || $part == all ]]; then
    run firmware -p ddm-firmware -f firmware/src/quant.rs "$@"
fi
