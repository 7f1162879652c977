# vimgeo build and test entry points. Everything a fresh machine needs is installed from here.
#
#   make test     install what is missing, then lint and run every Rust and Python test (CI runs this)
#   make setup    only the installs: Debian packages, the cached Python environment
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
# Debian packages the build needs (none beyond the stock toolchains yet; later stages add theirs here).
APT_PACKAGES :=
# The PyPI onnxruntime wheel ships the shared library that the `ort` crate loads at run time.
ORT_DYLIB = $(firstword $(wildcard $(VENV)/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so*))
PYTHONPATH_MODELS := $(CURDIR)/models

.PHONY: print-python setup apt venv test test-rust test-python lint lint-rust lint-python fmt clean-venv

setup: apt venv

apt:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

venv: $(VENV)/.complete

$(VENV)/.complete: $(REQUIREMENTS)
	@echo "creating Python environment $(VENV) (first run downloads PyTorch, ~3 GB)"
	rm -rf "$(VENV).partial"
	mkdir -p "$(dir $(VENV))"
	python3 -m venv "$(VENV).partial"
	"$(VENV).partial/bin/python" -m pip install --quiet --disable-pip-version-check -r $(REQUIREMENTS)
	touch "$(VENV).partial/.complete"
	rm -rf "$(VENV)"
	mv "$(VENV).partial" "$(VENV)"

test: setup lint test-rust test-python

test-rust: venv
	ORT_DYLIB_PATH="$(ORT_DYLIB)" cargo test --all-targets

test-python: venv
	cd models && PYTHONPATH=$(PYTHONPATH_MODELS) "$(PY)" -m pytest -q

lint: lint-rust lint-python

lint-rust:
	cargo fmt --check
	cargo clippy --all-targets --quiet -- -D warnings

lint-python: venv
	"$(PY)" -m ruff check models
	"$(PY)" -m ruff format --check models

fmt: venv
	cargo fmt
	"$(PY)" -m ruff format models

# The cached environment's python, for commands in the READMEs: PY=$(make -s print-python)
print-python:
	@echo "$(PY)"
