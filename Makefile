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

test: setup data
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/python -m pytest -q -n auto

lint: setup
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples

$(VENV)/.bench-installed: pyproject.toml | $(VENV)/.installed
	$(BIN)/pip install --quiet -e ".[dev,bench]"
	touch $@

# Speed and memory benchmarks (not tests): benchmarks/results/<name>.json + .md and SUMMARY.md.
bench: setup data $(VENV)/.bench-installed
	$(BIN)/python -m benchmarks.run_all

clean:
	rm -rf $(VENV) runs .pytest_cache
