# `make test` and `make demo` each set everything up (idempotent, fast when done).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: test demo lint bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test,demo,bench]"
	rm -f $(VENV)/.installed-* && touch $@

# The official AsyncAPI parser (Node), which tests/test_asyncapi.py runs on /__asyncapi.
NODE_STAMP := tests/asyncapi/node_modules/.installed
$(NODE_STAMP): tests/asyncapi/package-lock.json
	cd tests/asyncapi && npm ci --no-audit --no-fund --loglevel=error
	touch $@

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

test: lint $(NODE_STAMP)
	$(VENV)/bin/pytest

demo: $(STAMP)
	$(PY) demo_project/run.py

bench: $(STAMP)
	for b in benchmarks/bench_*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) .redis .test-db.sqlite3 test-artifacts tests/asyncapi/node_modules
