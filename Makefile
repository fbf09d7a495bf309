# `make demo` and `make test` do all set-up on a fresh machine, then run.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
FMNIST := /usr/share/datasets/fashion-mnist
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup data demo test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade --quiet pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

data:
	@if [ ! -d $(FMNIST) ]; then \
	  echo "Installing Debian package dataset-fashion-mnist (offline Fashion-MNIST)"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq dataset-fashion-mnist; \
	fi

demo: setup data
	$(BIN)/compmod train --config configs/demo.yaml

# The suite runs on every core (pytest-xdist). glibc hands freed memory above its trim threshold back to
# the kernel, and the next test's tensors fault every page in again: a train-and-evaluate test spent 3.5 s
# of its 12 s in the kernel (1.08 M page faults); keeping freed memory (trim threshold 4 GiB, heap grown
# 1 GiB at a time) made it 0.7 s (0.18 M faults). Environment only: the code and its results are the same.
TEST_MALLOC := MALLOC_TRIM_THRESHOLD_=4294967296 MALLOC_TOP_PAD_=1073741824 MALLOC_MMAP_THRESHOLD_=33554432

test: setup data
	$(BIN)/ruff check src tests benchmarks examples
	env $(TEST_MALLOC) $(BIN)/python -m pytest -q -n auto

lint: setup
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples

$(VENV)/.bench-installed: pyproject.toml | $(VENV)/.installed
	$(BIN)/pip install --quiet -e ".[dev,bench]"
	touch $@

# Speed and memory benchmarks (not tests): benchmarks/results/<name>.json + .md and SUMMARY.md.
bench: setup data $(VENV)/.bench-installed
	$(BIN)/python -m benchmarks.run_all

# Does the library train on this device? benchmarks/gpu_check.py: every method x CompMod mode, precisions and
# compile, exact vs jvp hypergradients, fp16 overflow, DDP, throughput, host syncs, `compmod train` end to
# end; data generated, nothing installed (the source tree only). DEVICE=cpu runs tiny sizes (CI runs that).
# Writes benchmarks/results/gpu_check/<device kind>/gpu_check.{json,md}; exit code 1 if a section failed.
DEVICE ?= auto
.PHONY: gpu-check
gpu-check:  # the project's venv where it exists, else $(PYTHON) (a GPU machine with nothing installed)
	PYTHONPATH=src:. $$(test -x $(BIN)/python && echo $(BIN)/python || echo $(PYTHON)) -m benchmarks.gpu_check --device $(DEVICE)

clean:
	rm -rf $(VENV) runs .pytest_cache
