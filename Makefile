# Switchboard: `make run` runs the system, `make test` runs the whole suite.
# Both set up everything they need on a fresh machine (venv, pip, Debian packages).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
APT_STAMP := $(VENV)/.apt-installed
# Debian packages the tests need: a real PostgreSQL server for the store tests and
# Chromium for the console's browser tests (Playwright drives /usr/bin/chromium),
# and Prometheus's promtool to check the monitoring config.
PG_BIN = $$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)

.PHONY: run test bench lint typecheck install clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/switchboard run

test: $(STAMP) $(APT_STAMP)
	PATH="$(PG_BIN):$$PATH" $(PY) -m pytest $(PYTEST_ARGS)

$(APT_STAMP): | $(PY)
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
		echo "installing Debian package postgresql (the store tests run a real server)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; \
	fi
	@if [ ! -x /usr/bin/chromium ]; then \
		echo "installing Debian package chromium (the console's browser tests)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	fi
	@if ! command -v promtool >/dev/null 2>&1; then \
		echo "installing Debian package prometheus (promtool checks monitoring/)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus; \
	fi
	touch $@

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check switchboard

typecheck: $(STAMP)
	$(VENV)/bin/mypy switchboard

bench: $(STAMP) $(APT_STAMP)
	PATH="$(PG_BIN):$$PATH" $(PY) -m bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
