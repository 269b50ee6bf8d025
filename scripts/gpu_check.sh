#!/usr/bin/env bash
# The GPU check of issue 17 (docs/gpu.md). Runs on a GPU machine with no Rust and no internet:
# it needs only the `gpu_check` example binary, built elsewhere with CUDA
#     CUTPASTE_FULL_TORCH=1 bash scripts/setup.sh
#     cargo build --release --features cuda --example gpu_check
# and a PyTorch 2.11 installation (its torch/lib folder; the CUDA libraries next to it are found
# through that folder's own rpath). The binary also needs OpenBLAS (libopenblas.so.0 and its
# libgfortran.so.5, libquadmath.so.0): when the GPU machine lacks them, copy them from the build
# machine into a lib/ folder next to the binary (docs/gpu.md).
#
#   bash scripts/gpu_check.sh [BIN] [CATEGORY_DIR]
#     BIN           default target/release/examples/gpu_check
#     CATEGORY_DIR  default ../shared/data/mvtec/bottle
#
# Environment (all optional):
#   TORCH_LIB     PyTorch 2.11's lib/ folder (default: asked from `python3 -c 'import torch'`)
#   LIBS_DIR      more libraries for the binary (default: lib/ next to the binary, if any)
#   STEPS         steps of the measurement run, image model and patch localizer each (200)
#   SIZE          image side (256)
#   FULL          auto: run the paper's protocol when the projection fits FULL_LIMIT_S;
#                 always; never                                                         (auto)
#   FULL_LIMIT_S  600
#   GPU_INDEX     GPU to sample with nvidia-smi (0)
#   OUT           folder for the logs and JSON lines (out/gpu_check)
#   EXTRA         more options for both runs, e.g. "--workers 12" (see examples/gpu_check.rs)
#
# Prints one JSON line for the measurement (the example's figures plus peak_gpu_mem_mib and
# gpu_busy_pct_training from nvidia-smi samples) and, when the full protocol runs, a second one
# with its image and pixel AUROC. Exits non-zero, with one line saying why, when the binary, the
# data or PyTorch's lib/ is missing.
set -euo pipefail

BIN=${1:-target/release/examples/gpu_check}
DATA=${2:-../shared/data/mvtec/bottle}
STEPS=${STEPS:-200}
SIZE=${SIZE:-256}
FULL=${FULL:-auto}
FULL_LIMIT_S=${FULL_LIMIT_S:-600}
GPU_INDEX=${GPU_INDEX:-0}
OUT=${OUT:-out/gpu_check}
read -r -a EXTRA_ARGS <<<"${EXTRA:-}"

die() { echo "gpu_check.sh: $*" >&2; exit 1; }

[ -x "$BIN" ] || die "no executable $BIN; build it with CUDA: cargo build --release --features cuda --example gpu_check"
[ -d "$DATA/train/good" ] || die "$DATA is not an MVTec category folder (no train/good)"
case "$FULL" in auto | always | never) ;; *) die "FULL=$FULL: use auto, always or never" ;; esac

if [ -z "${TORCH_LIB:-}" ]; then
  TORCH_LIB=$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))' 2>/dev/null) ||
    die "set TORCH_LIB to the lib/ folder of PyTorch 2.11 (python3 cannot import torch here)"
fi
[ -f "$TORCH_LIB/libtorch_cuda.so" ] || die "$TORCH_LIB has no libtorch_cuda.so; point TORCH_LIB at a CUDA build of PyTorch 2.11's lib/"
version=$(sed -n "s/^__version__ = '\([^']*\)'.*/\1/p" "$TORCH_LIB/../version.py" 2>/dev/null || true)
case "$version" in
  2.11.*) ;;
  *) echo "gpu_check.sh: warning: PyTorch at $TORCH_LIB is '${version:-unknown}', the binary was built for 2.11" >&2 ;;
esac
LIBS_DIR=${LIBS_DIR:-$(dirname "$BIN")/lib}
[ -d "$LIBS_DIR" ] && TORCH_LIB="$TORCH_LIB:$LIBS_DIR"
export LD_LIBRARY_PATH="$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# Debian's OpenBLAS mis-detects some CPUs; its Haswell kernels run on every AVX2 machine.
export OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-Haswell}
if command -v ldd >/dev/null; then
  missing=$(ldd "$BIN" 2>/dev/null | awk '/not found/ { print $1 }' | tr '\n' ' ')
  [ -z "$missing" ] || die "$BIN cannot find: $missing(copy them from the build machine into $LIBS_DIR, or set TORCH_LIB)"
fi
mkdir -p "$OUT"

# nvidia-smi sampler: "unix_ms utilization_pct memory_used_mib" every ~0.2 s into $1.
SAMPLER=""
start_sampler() {
  : >"$1"
  command -v nvidia-smi >/dev/null || return 0
  (
    while :; do
      line=$(nvidia-smi -i "$GPU_INDEX" --query-gpu=utilization.gpu,memory.used \
        --format=csv,noheader,nounits 2>/dev/null | tr -d ' ' | tr ',' ' ') || true
      [ -n "$line" ] && echo "$(date +%s%3N) $line"
      sleep 0.2
    done
  ) >>"$1" &
  SAMPLER=$!
}
stop_sampler() {
  if [ -n "$SAMPLER" ]; then kill "$SAMPLER" 2>/dev/null || true; wait "$SAMPLER" 2>/dev/null || true; fi
  SAMPLER=""
}
trap stop_sampler EXIT

# Value of a numeric JSON field of the one-line object in $2 (empty when absent or null).
field() { grep -o "\"$1\":[-0-9.eE+]*" "$2" | head -n1 | cut -d: -f2; }

# Adds the peak memory and, between the unix-ms bounds $3 and $4, the mean utilisation of the
# samples in $2 to the JSON line in $1; prints the result.
with_gpu_stats() {
  local peak busy
  peak=$(awk 'BEGIN { m = "null" } { if (m == "null" || $3 > m) m = $3 } END { print m }' "$2")
  busy=$(awk -v a="${3:-0}" -v b="${4:-0}" '$1 >= a && $1 <= b { s += $2; n++ }
    END { if (n) printf "%.1f", s / n; else print "null" }' "$2")
  sed "s/}\$/,\"peak_gpu_mem_mib\":$peak,\"gpu_busy_pct_training\":$busy}/" "$1"
}

echo "gpu_check.sh: measuring ($STEPS steps at ${SIZE}²; logs in $OUT)" >&2
start_sampler "$OUT/smi_measure.log"
"$BIN" "$DATA" --size "$SIZE" --steps "$STEPS" "${EXTRA_ARGS[@]}" >"$OUT/measure.json" 2> >(tee "$OUT/measure.log" >&2) ||
  die "the measurement failed (see $OUT/measure.log)"
stop_sampler
with_gpu_stats "$OUT/measure.json" "$OUT/smi_measure.log" \
  "$(field train_start_unix_ms "$OUT/measure.json")" "$(field train_end_unix_ms "$OUT/measure.json")" |
  tee "$OUT/measure_gpu.json"

projected=$(field projected_full_s "$OUT/measure.json")
run_full=$FULL
if [ "$FULL" = auto ]; then
  if [ -n "$projected" ] && awk -v p="$projected" -v l="$FULL_LIMIT_S" 'BEGIN { exit !(p <= l) }'; then
    run_full=always
  else
    echo "gpu_check.sh: projected full protocol ${projected:-unknown} s > ${FULL_LIMIT_S} s: not running it" >&2
    run_full=never
  fi
fi
[ "$run_full" = always ] || exit 0

echo "gpu_check.sh: the paper's protocol (65,536 steps, image model and patch localizer; projected ${projected:-?} s)" >&2
start_sampler "$OUT/smi_full.log"
"$BIN" "$DATA" --size "$SIZE" --full "${EXTRA_ARGS[@]}" >"$OUT/full.json" 2> >(tee "$OUT/full.log" >&2) ||
  die "the full protocol failed (see $OUT/full.log)"
stop_sampler
with_gpu_stats "$OUT/full.json" "$OUT/smi_full.log" \
  "$(field train_start_unix_ms "$OUT/full.json")" "$(field train_end_unix_ms "$OUT/full.json")" | tee "$OUT/full_gpu.json"
