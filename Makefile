# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.sas3d-installed

.PHONY: demo test env clean-env bench

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first and pinned, so nothing later resolves a CUDA build.
	$(PY) -m pip install -q -c constraints.txt torch==2.13.0
	# the CPU spconv build: this Makefile sets up CPU machines (GPU users: pip install -e ".[cu12]")
	$(PY) -m pip install -q -c constraints.txt -e ".[dev,cpu]"
	touch $(STAMP)

env: $(STAMP)

demo: $(STAMP)
	$(PY) -m sas3d demo --out runs/demo

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) benchmarks/fusion.py

clean-env:
	rm -rf $(VENV)
