# Newcomer entry points: `make demo` and `make test` (see README).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch is installed first so that the range in pyproject
# (torch>=2.4) is already satisfied and pip never pulls a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
# What the tests exercise: the test tools and every optional extra, the vision extra (torchvision, timm)
# and mlflow included; their pins keep the torch installed above.
EXTRAS ?= dev,vision,mlflow
# The real data sets (MNIST, Fashion-MNIST, SST-2) where CI lays them out, in a copy of shared/ beside
# the checkout; a KDISTILL_DATA set by the caller wins, and without the folder those tests skip.
SHARED_DATA := $(abspath ../shared/data)
ifeq ($(origin KDISTILL_DATA),undefined)
ifneq ($(wildcard $(SHARED_DATA)/.),)
export KDISTILL_DATA := $(SHARED_DATA)
endif
endif

.PHONY: install demo test lint clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS)]"
	$(BIN)/python -c "import torch; print('torch', torch.__version__)"
	touch $@

demo: install
	$(BIN)/kdistill demo

test: install
	@echo "KDISTILL_DATA=$${KDISTILL_DATA:-<not set: the real-data tests skip>}"
	$(BIN)/python -m ruff check kdistill tests benchmarks
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/python -m ruff check kdistill tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache kdistill-out
