# `make test` and `make demo` each set everything up (idempotent, fast when done).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
LOCK   := requirements/dev.txt
# The venv is rebuilt from scratch whenever the lock (or the project's metadata) changes, so it holds exactly the lock.
STAMP  := $(VENV)/.installed-$(shell cat $(LOCK) pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: test demo lint bench budget budget-update clean lock test-matrix

$(STAMP): $(LOCK) pyproject.toml
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --require-hashes --no-deps -r $(LOCK)
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

# The official AsyncAPI parser (Node), which tests/gateway/test_asyncapi.py runs on /__asyncapi.
NODE_STAMP := tests/asyncapi/node_modules/.installed
$(NODE_STAMP): tests/asyncapi/package-lock.json
	cd tests/asyncapi && npm ci --no-audit --no-fund --loglevel=error
	touch $@

# Re-resolve the development lock from pyproject.toml's ranges (newest releases that fit); commit the result.
lock: $(STAMP)
	$(VENV)/bin/uv pip compile pyproject.toml --extra dev --generate-hashes --python-version 3.11 --upgrade \
		--quiet -o $(LOCK)

# The fast subset against the lowest and the newest releases pyproject.toml allows (noxfile.py); not part of CI.
test-matrix: $(STAMP) $(NODE_STAMP)
	$(VENV)/bin/nox

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/mkdocs build --strict --site-dir .site  # not --quiet: it hides the warnings strict counts

# Serial by default. PYTEST_ARGS="-n 2 --dist loadfile" runs two pytest-xdist workers, each with its own Redis
# servers (docs/development.md, "Running the suite").
PYTEST_ARGS ?=

test: lint $(NODE_STAMP)
	$(VENV)/bin/pytest $(PYTEST_ARGS)
	$(PY) benchmarks/budget.py

# Instructions per hot-path operation under valgrind, against benchmarks/budget.json (fails at +10%).
budget: $(STAMP)
	$(PY) benchmarks/budget.py

# Rewrite benchmarks/budget.json from this tree; a commit that does so says why.
budget-update: $(STAMP)
	$(PY) benchmarks/budget.py --update

demo: $(STAMP)
	$(PY) demo_project/run.py

bench: $(STAMP)
	for b in benchmarks/bench_*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) .nox .redis .site .test-db.sqlite3* test-artifacts tests/asyncapi/node_modules
