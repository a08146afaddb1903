# Newcomer entry points: `make demo` and `make test` (see README).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch is installed first so that the range in pyproject
# (torch>=2.4) is already satisfied and pip never pulls a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0

.PHONY: install demo test lint clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

demo: install
	$(BIN)/kdistill demo

test: install
	$(BIN)/python -m ruff check kdistill tests benchmarks
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/python -m ruff check kdistill tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache kdistill-out
