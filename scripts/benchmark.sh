#!/usr/bin/env bash
# The benchmark command of docs/results.md: for each MVTec-layout folder, train with the CLI's
# default recipe within a wall-clock budget, evaluate, and print one Markdown row per folder
# (mean ± standard error over seeds).
#
#   bash scripts/benchmark.sh ../shared/data/mvtec/bottle ../shared/data/bsdata/ball_screw
#   BUDGET=10m SEEDS="0 1 2" OUT=results.md bash scripts/benchmark.sh DIR...
#   TRAIN_ARGS="--recipe paper --size 64" TAG=paper64 bash scripts/benchmark.sh DIR...   # ablations
#   HEATMAPS=1 bash scripts/benchmark.sh DIR...   # also write eval's overlays to <run>/heatmaps
#
# Prints, per folder: dataset | image AUROC | pixel AUROC | AUPRO | test images misclassified at
# the stored threshold | train wall time | peak RSS of `train` | recipe. Folders without masks
# (e.g. ELPV) get image-level metrics only ("—"). Each run keeps its checkpoint, logs and
# report under out/bench/<TAG>/<dataset>-s<seed>/. One run at a time: on 2 cores a parallel run
# would distort the budget planning of both.
set -euo pipefail
cd "$(dirname "$0")/.."
BUDGET=${BUDGET:-10m}
SEEDS=${SEEDS:-0 1 2}
TAG=${TAG:-default}
TRAIN_ARGS=${TRAIN_ARGS:-}
OUT=${OUT:-}
HEATMAPS=${HEATMAPS:-}
if [ $# -eq 0 ]; then
  sed -n '2,16p' "$0" >&2
  exit 2
fi
if [ -z "${CUTPASTE_BIN:-}" ]; then
  cargo build --quiet --features cli --bin cutpaste
  CUTPASTE_BIN=target/debug/cutpaste
fi
runs=()
for dir in "$@"; do
  name="$(basename "$(dirname "$dir")")/$(basename "$dir")"
  for seed in $SEEDS; do
    run="out/bench/$TAG/${name//\//_}-s$seed"
    mkdir -p "$run"
    # shellcheck disable=SC2086
    /usr/bin/time -v -o "$run/time.txt" "$CUTPASTE_BIN" train "$dir" -o "$run/model.safetensors" \
      --budget "$BUDGET" --seed "$seed" --device cpu --force $TRAIN_ARGS > "$run/train.log" 2>&1 ||
      { echo "train failed for $dir seed $seed; see $run/train.log" >&2; tail -3 "$run/train.log" >&2; exit 1; }
    "$CUTPASTE_BIN" eval "$run/model.safetensors" "$dir" --out "$run/eval" --device cpu \
      --image-level-only --embedding-per-group 0 ${HEATMAPS:+--heatmaps "$run/heatmaps"} \
      > "$run/eval.log" 2>&1 ||
      { echo "eval failed for $dir seed $seed; see $run/eval.log" >&2; tail -3 "$run/eval.log" >&2; exit 1; }
    echo "$name $run" >> "out/bench/$TAG/.runs.$$"
    echo "done: $name seed $seed ($(grep -m1 'image AUROC' "$run/eval/report.md"))" >&2
  done
  runs+=("$name")
done
python3 scripts/bench_table.py "out/bench/$TAG/.runs.$$" "$BUDGET" "$TAG" "$TRAIN_ARGS" | tee ${OUT:+"$OUT"}
rm -f "out/bench/$TAG/.runs.$$"
