# Everything a fresh machine needs: `make run`, `make test` and `make docs` create .venv and install first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
# Extras of pyproject.toml. `make install`/`run`/`docs` install EXTRAS (Ray is optional: not in it);
# `make test` adds the test tools and Ray, whose executor the tests exercise. Both can be overridden:
# `make install EXTRAS=export`. The stamp names the extras, so other extras install again.
EXTRAS ?= export,parquet
TEST_EXTRAS ?= test,ray,$(EXTRAS)
comma := ,
STAMP := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))
TEST_STAMP := $(VENV)/.installed-$(subst $(comma),-,$(TEST_EXTRAS))

.PHONY: install run test docs bench gpu-check reproduce clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	touch $@

$(TEST_STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q -e ".[$(TEST_EXTRAS)]"
	touch $@

install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/lrsweep run configs/quickstart.yaml

test: $(TEST_STAMP)
	$(PY) -m pytest

# README's example output, numbers and figures from a real run of its quickstart (docs/make_docs.py);
# finished runs are kept, so a rerun only redoes the reports (and the range test after a code change).
# DOCS_ARGS=--fresh retrains them (after a change that alters the numbers), --no-run trains nothing.
docs: $(STAMP)
	$(PY) docs/make_docs.py $(DOCS_ARGS)

# The engine benchmark: plain PyTorch loop vs lrsweep's engines; prints a table, writes
# bench.json. BENCH_ARGS=--quick for the small grid.
bench: $(STAMP)
	$(VENV)/bin/lrsweep bench $(BENCH_ARGS)

# Where a CUDA GPU is: the CUDA tests, `lrsweep bench --device cuda` and the Fashion-MNIST grid
# timing, in one command; writes gpu-check.json. GPU_CHECK_ARGS=--quick for a shorter run.
gpu-check: $(TEST_STAMP)
	$(PY) -m lrsweep.benchmark.gpu_check $(GPU_CHECK_ARGS)

# The experiments of docs/science.md: runs every configs/o*.small.yaml into runs/, range-tests and
# summarizes them, rewrites the tables and figures of docs/reproductions.md (finished runs are
# kept, so a rerun only redoes the reports). REPRO_ARGS=--only o1,o8 for some observations.
reproduce: $(STAMP)
	$(PY) docs/reproduce.py $(REPRO_ARGS)

clean:
	rm -rf $(VENV) runs/*/ .pytest_cache
