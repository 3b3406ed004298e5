# Every target creates .venv and installs rayvisor into it on first use, and again
# whenever pyproject.toml changes.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench services-down clean browser

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/rayvisor demo

# The browser test (tests/e2e/test_ui.py) drives Debian's chromium through Playwright.
browser:
	@test -x /usr/bin/chromium || { test "$$(id -u)" = 0 || { \
		echo "tests/e2e/test_ui.py needs /usr/bin/chromium: run 'sudo apt-get install -y --no-install-recommends chromium'" >&2; exit 1; }; \
		apt-get update -q && apt-get install -y -q --no-install-recommends chromium; }

# The tests that time a recovery (the chaos run, the node loss) run last, one at a time:
# on a 2-core machine the load of anything beside them would be in their figures.
test: $(STAMP) browser
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest -q -n 2 --dist loadfile --durations=60 -m "not quiet"
	$(BIN)/pytest -q -n 0 --durations=10 -m quiet
	$(BIN)/python tests/bench_smoke.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(STAMP)
	@for script in bench/*.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done

services-down: $(STAMP)
	$(BIN)/rayvisor services down

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
