# The two entry points of the README: `make quick` (install + the main job) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install test test-slow quick bench gpu-check lint clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip -c constraints.txt
	$(PY) -m pip install -c constraints.txt -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest

test-slow: $(STAMP)
	$(PY) -m pytest -m slow

quick: $(STAMP)
	$(PY) -m nas.evolve --reference resnet34 --preset quick

bench: $(STAMP)
	$(PY) -m nas.bench

# CUDA tests, nas.bench on the GPU, children sharing one GPU, a short timed search (docs/gpu.md);
# one line and exit 0 on a machine without CUDA.
gpu-check: $(STAMP)
	$(PY) -m nas.gpucheck

lint: $(STAMP)
	$(PY) -m ruff check nas genome search_spaces defenses tests

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
