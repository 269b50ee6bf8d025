#!/usr/bin/env bash
# Trains and evaluates one MVTec category for several seeds and variants with the `mvtec` example,
# then prints a Markdown table of image AUROC (mean ± standard error over seeds).
#
#   bash scripts/bottle_seeds.sh                       # bottle, three-way, seeds 0 1 2
#   VARIANTS="three-way cutpaste scar" SEEDS="0 1 2" STEPS=150 SIZE=64 bash scripts/bottle_seeds.sh
#
# Each run writes out/seeds/<category>-<variant>-s<seed>/report.json and a wall-time line.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=${ROOT:-../shared/data/mvtec}
CATEGORY=${CATEGORY:-bottle}
VARIANTS=${VARIANTS:-three-way}
SEEDS=${SEEDS:-0 1 2}
STEPS=${STEPS:-150}
SIZE=${SIZE:-64}
BATCH=${BATCH:-32}
cargo build --release --example mvtec
for v in $VARIANTS; do
  for s in $SEEDS; do
    out=out/seeds/$CATEGORY-$v-s$s
    mkdir -p "$out"
    start=$(date +%s)
    target/release/examples/mvtec "$ROOT" "$CATEGORY" --steps "$STEPS" --size "$SIZE" \
      --batch-images "$BATCH" --seed "$s" --variant "$v" --out "$out" > "$out/log.txt" 2>&1
    echo "$(( $(date +%s) - start ))" > "$out/wall_seconds"
    echo "$CATEGORY $v seed $s: $(grep 'image AUROC' "$out/report.md") in $(cat "$out/wall_seconds") s"
  done
done
python3 - "$CATEGORY" "$STEPS" "$SIZE" "$BATCH" $VARIANTS <<'PY'
import json, math, pathlib, sys
cat, steps, size, batch, *variants = sys.argv[1:]
print(f"\n{cat}, {steps} steps, {size}², {batch} images/step\n")
print("| variant | seeds | image AUROC (mean ± s.e.) | per seed | wall s/seed (mean) |")
print("|---|---|---|---|---|")
for v in variants:
    runs = sorted(pathlib.Path("out/seeds").glob(f"{cat}-{v}-s*"))
    a = [100 * json.loads((r / "report.json").read_text())["image_auroc"] for r in runs]
    w = [float((r / "wall_seconds").read_text()) for r in runs]
    m = sum(a) / len(a)
    se = math.sqrt(sum((x - m) ** 2 for x in a) / (len(a) - 1) / len(a)) if len(a) > 1 else float("nan")
    print(f"| {v} | {len(a)} | {m:.1f} ± {se:.1f} | {', '.join(f'{x:.1f}' for x in a)} | {sum(w)/len(w):.0f} |")
PY
