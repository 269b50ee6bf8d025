#!/usr/bin/env bash
# Downstream check: what a new user of the crate sees. Creates a binary crate in a temporary
# folder outside this repository (its own fresh lockfile, a path dependency on this checkout),
# sets it up with only the steps of the README section "Using the crate as a dependency" (the
# Cargo.toml and build.rs blocks are read from the README itself), builds it, and starts the
# binary directly, with LD_LIBRARY_PATH unset, running examples/minimal.rs as its main.rs
# (fit → threshold → score on the synthetic data, a few seconds).
#
#   bash scripts/downstream_check.sh     # called by .ci/run; prints the resolved versions,
#                                        # the program's four lines and "downstream: ok"
#
# LIBTORCH: the exported value, else this checkout's .venv/libtorch (bash scripts/setup.sh).
# Target dir: this checkout's target/ (override with CUTPASTE_DOWNSTREAM_TARGET=DIR). The
# lockfile is still the new crate's own, resolved fresh; sharing only lets identical builds of
# the same dependency versions be reused instead of compiling torch-sys and ~300 crates again.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
export LIBTORCH=${LIBTORCH:-$repo/.venv/libtorch} # README step 3
export CARGO_TARGET_DIR=${CUTPASTE_DOWNSTREAM_TARGET:-$repo/target}

# The fenced block after `<!-- downstream: NAME -->` in the README, without the fences.
readme_block() {
  awk -v marker="<!-- downstream: $1 -->" '
    index($0, marker) { found = 1; next }
    found && /^ *```/ { if (inside) exit; inside = 1; next }
    inside { sub(/^   /, ""); print }
  ' "$repo/README.md"
}

work=$(mktemp -d "${TMPDIR:-/tmp}/cutpaste-downstream.XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$work"
cargo new --quiet --bin --vcs none downstream
cd downstream

[ ! -e Cargo.lock ] || { echo "downstream: a lockfile exists before any step" >&2; exit 1; }
# README step 1, with the path of this checkout instead of the registry (it resolves the fresh
# lockfile).
cargo add --quiet --path "$repo" --features openblas-system
# README steps 2 and 4.
readme_block Cargo.toml >>Cargo.toml
readme_block build.rs >build.rs
for f in Cargo.toml build.rs; do
  grep -q . "$f" || { echo "downstream: README block '$f' not found" >&2; exit 1; }
done
grep -q 'profile.dev.package' Cargo.toml || { echo "downstream: no profile lines added" >&2; exit 1; }
cp "$repo/examples/minimal.rs" src/main.rs

# README step 5.
cargo build --quiet
for crate in cutpaste tch torch-sys ndarray-linalg openblas-src openblas-build image; do
  v=$(awk -v n="name = \"$crate\"" '$0 == n { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)
  echo "downstream: resolved $crate ${v:-(not in lockfile)}"
done
out=$(env -u LD_LIBRARY_PATH "$CARGO_TARGET_DIR/debug/downstream")
echo "$out"
# The four lines of examples/minimal.rs, with finite numbers.
echo "$out" | grep -Eq '^fitted on 12 images in [0-9.]+ s; threshold [0-9.]+$' &&
  echo "$out" | grep -Eq '^image AUROC [0-9.]+ on 4 good \+ 4 defect test images$' &&
  [ "$(echo "$out" | grep -Ec '^test/[a-z]+/[0-9]+\.png: score [0-9.]+, anomalous: (true|false)$')" = 2 ] ||
  { echo "downstream: unexpected output" >&2; exit 1; }
echo "downstream: ok"
