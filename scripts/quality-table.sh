#!/usr/bin/env bash
# Prints a Markdown table of sample quality against network evaluations, one row per sample
# file, plus the real-vs-real floor, from `ddm eval --json`:
#
#   scripts/quality-table.sh DATASET NUM 'LABEL|NFE|FILE.npy' ...
#
# e.g. scripts/quality-table.sh fashion-mnist 1000 'DDPM|1000|ddpm.npy' 'DDIM|10|ddim10.npy'
#
# Every file is evaluated on its first NUM samples, so all rows share one floor (the floor
# depends on n and the seed). Images get FD, KID, label entropy and the nearest-training-image
# distance; toys (toy:NAME) sliced W2, exact W2, RBF-MMD^2 and mode coverage. Uses the ddm at
# $DDM (default: target/release/ddm, built if missing) and jq.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# -lt 3 ]; then
    sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
command -v jq >/dev/null || { echo "quality-table.sh needs jq (apt-get install jq)" >&2; exit 1; }
dataset="$1"
num="$2"
shift 2
ddm="${DDM:-target/release/ddm}"
if [ ! -x "$ddm" ]; then
    cargo build --release --quiet -p ddm
fi

case "$dataset" in
toy:*)
    header='| sampler | NFE | sliced W2 | exact W2 | RBF-MMD^2 | modes covered |'
    rule='| --- | ---: | ---: | ---: | ---: | ---: |'
    row='(.metrics.mode_coverage[$side] | "\(.covered)/\(.modes)") as $coverage
         | [.metrics.sliced_w2[$side], .metrics.w2[$side], .metrics.mmd_rbf[$side]]
         | map(if . == null then "n/a" else (. * 1e5 | round / 1e5 | tostring) end)
         | . + [$coverage] | join(" | ")'
    ;;
*)
    header='| sampler | NFE | FD | KID (x 1e3) | label entropy | nearest train L2 |'
    rule='| --- | ---: | ---: | ---: | ---: | ---: |'
    row='def r(k): . * k | round / k | tostring;
         [(.metrics.fd[$side] | r(100)),
          (.metrics.kid[$side] | "\(.mean * 1e3 | r(100)) ± \(.se * 1e3 | r(100))"),
          (.metrics.label_entropy[$side] | r(1000)),
          (.metrics.nearest_train_l2[$side] | r(1000))] | join(" | ")'
    ;;
esac

echo "Data set: $dataset, n = $num samples per row."
echo
echo "$header"
echo "$rule"
last=""
for entry in "$@"; do
    IFS='|' read -r label nfe file <<<"$entry"
    last="$("$ddm" eval --dataset "$dataset" --samples "$file" --num "$num" --json)"
    echo "| $label | $nfe | $(jq -r --arg side samples "$row" <<<"$last") |"
done
echo "| real data (floor) | - | $(jq -r --arg side floor "$row" <<<"$last") |"
echo
echo "Classifier: $(jq -r '.classifier.sha256 // "none (toy)"' <<<"$last"); seed $(jq -r .seed <<<"$last")."
echo "Regenerate: scripts/quality-table.sh $dataset $num $(printf "'%s' " "$@")"
