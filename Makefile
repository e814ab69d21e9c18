# Everything a fresh machine needs: `make run` and `make test` create .venv and install first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
EXTRAS ?= test,ray,export,parquet

.PHONY: install run test bench gpu-check reproduce clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/lrsweep run configs/quickstart.yaml

test: $(STAMP)
	$(PY) -m pytest

# The engine benchmark (issue 5): plain PyTorch loop vs lrsweep's engines; prints a table, writes
# bench.json. BENCH_ARGS=--quick for the small grid.
bench: $(STAMP)
	$(VENV)/bin/lrsweep bench $(BENCH_ARGS)

# Where a CUDA GPU is: the CUDA tests, `lrsweep bench --device cuda` and the Fashion-MNIST grid
# timing, in one command (about 8 minutes on one H100/H200); writes gpu-check.json.
# GPU_CHECK_ARGS=--quick for a shorter run.
gpu-check: $(STAMP)
	$(PY) -m lrsweep.benchmark.gpu_check $(GPU_CHECK_ARGS)

# The source documents' experiments (issue 7): runs every configs/o*.small.yaml into runs/,
# range-tests and summarizes them, rewrites the tables and figures of docs/reproductions.md
# (~20 minutes on 2 CPU cores; finished runs are kept, so a rerun only redoes the reports).
# REPRO_ARGS=--only o1,o8 for some observations.
reproduce: $(STAMP)
	$(PY) docs/reproduce.py $(REPRO_ARGS)

clean:
	rm -rf $(VENV) runs/*/ .pytest_cache
