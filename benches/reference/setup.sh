#!/usr/bin/env bash
# The PyTorch reference of the benches (train_torch.py, score_torch.py) in its own `.venv-ref`:
# the plain `pip install torch==2.11.0` (the same libtorch as the crate's, with the CUDA runtime
# libraries its Python module loads), torchvision 0.26.0, pillow and numpy. About 4.7 GB; the
# crate's own `.venv` (slim libtorch, no Python dependencies) is left alone.
#
#   bash benches/reference/setup.sh
#   cargo bench --profile dev --bench train      # then finds .venv-ref/bin/python
set -euo pipefail
cd "$(dirname "$0")/../.."
[ -x .venv-ref/bin/python ] || python3 -m venv .venv-ref
if ! .venv-ref/bin/python -c 'import torch, torchvision' 2>/dev/null; then
  .venv-ref/bin/python -m pip install -q --disable-pip-version-check \
    torch==2.11.0 torchvision==0.26.0 pillow numpy
fi
# jemalloc for the references' `-jemalloc` configurations (preloaded, as PyTorch's CPU tuning
# guide recommends); skipped where apt-get is not usable.
if [ ! -f /usr/lib/x86_64-linux-gnu/libjemalloc.so.2 ] && command -v apt-get >/dev/null; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq libjemalloc2 >/dev/null ||
    echo "reference: could not install libjemalloc2; the -jemalloc configurations will be skipped" >&2
fi
.venv-ref/bin/python -c 'import torch, torchvision; print("reference: torch", torch.__version__, "torchvision", torchvision.__version__)'
