#!/usr/bin/env bash
# Idempotent setup of the native dependencies of `cutpaste` (no download.pytorch.org needed):
#   1. Debian's libopenblas-dev (LAPACK backend used by dev/CI through `openblas-system`),
#   2. `.venv` holding libtorch 2.11.0 from the PyPI `torch` wheel (CPU-sufficient slim recipe),
#      with the stable symlink `.venv/libtorch` -> the wheel's `torch/` folder, which
#      `.cargo/config.toml` points `LIBTORCH` at.
# Does nothing when both are already present.
#
#   bash scripts/setup.sh            # slim (CPU) libtorch, ~1.3 GB
#   CUTPASTE_FULL_TORCH=1 bash scripts/setup.sh   # full wheel with CUDA libraries (feature `cuda`)
set -euo pipefail
cd "$(dirname "$0")/.."

TORCH_VERSION=2.11.0

if ! dpkg -s libopenblas-dev >/dev/null 2>&1; then
  echo "setup: installing libopenblas-dev" >&2
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq libopenblas-dev pkg-config >/dev/null
fi

torch_ok() {
  [ -f .venv/libtorch/lib/libtorch_cpu.so ] &&
    # the full wheel (feature `cuda`) also brings cuDNN and the other CUDA libraries
    { [ "${CUTPASTE_FULL_TORCH:-0}" != "1" ] || [ -d .venv/libtorch/../nvidia/cudnn ]; } &&
    .venv/bin/python -c "import importlib.metadata as m,sys; sys.exit(m.version('torch')!='$TORCH_VERSION')" 2>/dev/null
}

if ! torch_ok; then
  echo "setup: installing libtorch $TORCH_VERSION from the PyPI torch wheel into .venv" >&2
  [ -x .venv/bin/python ] || python3 -m venv .venv
  .venv/bin/python -m pip install -q --no-cache-dir --disable-pip-version-check --upgrade pip >/dev/null || true
  if [ "${CUTPASTE_FULL_TORCH:-0}" = "1" ]; then
    .venv/bin/python -m pip install -q --no-cache-dir --disable-pip-version-check "torch==$TORCH_VERSION"
  else
    .venv/bin/python -m pip install -q --no-cache-dir --disable-pip-version-check --no-deps \
      "torch==$TORCH_VERSION" nvidia-cuda-runtime==13.0.96 nvidia-cuda-cupti==13.0.85
  fi
  site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  ln -sfn "${site#"$PWD/.venv/"}/torch" .venv/libtorch
fi
[ -L .venv/libtorch ] || {
  site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  ln -sfn "${site#"$PWD/.venv/"}/torch" .venv/libtorch
}
torch_ok || { echo "setup: libtorch $TORCH_VERSION not usable in .venv/libtorch" >&2; exit 1; }
echo "setup: ok (libtorch $TORCH_VERSION in .venv/libtorch, libopenblas-dev installed)" >&2
