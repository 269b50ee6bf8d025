#!/usr/bin/env bash
# Rescores the benchmark's trained models (scripts/benchmark.sh) two ways with the benchmark's own
# eval command, and prints one Markdown row per model: image AUROC, pixel AUROC, AUPRO and scoring
# ms/image each way. COMPARE=fused (default): the fused inference backbone on and off
# (CUTPASTE_FUSED=1 / 0; reports in <run>/eval-fused and <run>/eval-eager); COMPARE=streams: the
# scoring streams as the library picks them and one stream (CUTPASTE_SCORE_STREAMS=1; reports in
# <run>/eval-streams and <run>/eval-1stream). The models are not changed.
#
#   cargo build --release --features cli --bin cutpaste
#   TAG=paced3 SEEDS="0" CUTPASTE_BIN=target/release/cutpaste bash scripts/fused_rescore.sh \
#       ../shared/data/bsdata/ball_screw ../shared/data/elpv/mono ../shared/data/mpdd/metal_plate \
#       ../shared/data/mvtec/bottle
#   COMPARE=streams TAG=paced3 SEEDS="0" bash scripts/fused_rescore.sh DIR...
set -euo pipefail
COMPARE=${COMPARE:-fused}
case "$COMPARE" in
  fused) A=fused; B=eager ;;
  streams) A=streams; B=1stream ;;
  *) echo "COMPARE must be fused or streams, not $COMPARE" >&2; exit 2 ;;
esac
TAG=${TAG:-paced3}
SEEDS=${SEEDS:-0}
BIN=${CUTPASTE_BIN:-target/release/cutpaste}
[ $# -gt 0 ] || { echo "usage: TAG=... bash scripts/fused_rescore.sh DIR..." >&2; exit 2; }

field() { # report.json field × 100 (or as is for ms), "—" when absent
  python3 - "$1" "$2" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
v = d.get(sys.argv[2])
if v is None:
    print("—")
elif sys.argv[2] == "score_ms_per_image":
    print(f"{v:.1f}")
else:
    print(f"{100 * v:.1f}")
EOF
}

echo "| model | image AUROC $A / $B | pixel AUROC | AUPRO | score ms/image $A / $B |"
echo "|---|---|---|---|---|"
for dir in "$@"; do
  name="$(basename "$(dirname "$dir")")/$(basename "$dir")"
  for seed in $SEEDS; do
    run="out/bench/$TAG/${name//\//_}-s$seed"
    [ -f "$run/model.safetensors" ] || { echo "no model in $run (run scripts/benchmark.sh first)" >&2; exit 1; }
    for mode in "$A" "$B"; do
      env=(CUTPASTE_FUSED=1)
      case "$mode" in
        eager) env=(CUTPASTE_FUSED=0) ;;
        1stream) env+=(CUTPASTE_SCORE_STREAMS=1) ;;
      esac
      rm -rf "$run/eval-$mode"
      env -u CUTPASTE_SCORE_STREAMS "${env[@]}" "$BIN" eval "$run/model.safetensors" "$dir" --out "$run/eval-$mode" \
        --device cpu --image-level-only --embedding-per-group 0 > "$run/eval-$mode.log" 2>&1 ||
        { echo "eval ($mode) failed for $run; see $run/eval-$mode.log" >&2; exit 1; }
    done
    row="| $name s$seed"
    for f in image_auroc pixel_auroc aupro score_ms_per_image; do
      row="$row | $(field "$run/eval-$A/report.json" $f) / $(field "$run/eval-$B/report.json" $f)"
    done
    echo "$row |"
  done
done
