# The two commands of the README. Each does its own set-up (libopenblas-dev + libtorch 2.11 in .venv).
.PHONY: setup demo test
setup:
	bash scripts/setup.sh

# The main job on the embedded synthetic dataset.
demo: setup
	cargo run --example quickstart

# The whole test suite (unit, integration, doc tests; examples are built).
test: setup
	cargo test --features cli,html
