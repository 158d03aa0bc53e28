# Switchboard: `make run` runs the system, `make test` runs the whole suite.
# Both set up everything they need on a fresh machine (venv, pip, Debian packages).

# The Python to make the venv with: the first of python3.11, python3.12, python3 that runs
# and is a version pyproject.toml allows (>=3.11,<3.13); else python3, which the venv
# step then refuses with a clear message. Set PYTHON=/path/to/python to choose.
SUPPORTED_PY := import sys; sys.exit(not (3, 11) <= sys.version_info[:2] < (3, 13))
PYTHON ?= $(shell for p in python3.11 python3.12 python3; do \
	$$p -c '$(SUPPORTED_PY)' >/dev/null 2>&1 && { echo $$p; exit 0; }; done; echo python3)
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
	@$(PYTHON) -c '$(SUPPORTED_PY)' 2>/dev/null || { \
		echo "Switchboard needs Python 3.11 or 3.12, and '$(PYTHON)' is not one:" \
			"install python3.11 or python3.12, or run make with PYTHON=/path/to/python3.1x" >&2; \
		exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/switchboard run

test: $(STAMP) $(APT_STAMP)
	PATH="$(PG_BIN):$$PATH:$(CURDIR)/$(VENV)/bin" $(PY) -m pytest $(PYTEST_ARGS)

$(APT_STAMP): | $(PY)
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
		echo "installing Debian package postgresql (the store tests run a real server)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; \
	fi
	@if [ ! -x /usr/bin/chromium ]; then \
		echo "installing Debian package chromium (the console's browser tests)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	fi
	@# promtool alone, unpacked from Debian's prometheus package into the venv: installing
	@# the package would start a Prometheus service on :9090, where monitoring/ runs its own.
	@if ! command -v promtool >/dev/null 2>&1 && [ ! -x $(VENV)/bin/promtool ]; then \
		echo "unpacking promtool from Debian package prometheus (it checks monitoring/)"; \
		apt-get update -qq && rm -rf $(VENV)/prometheus-deb && mkdir -p $(VENV)/prometheus-deb && \
		(cd $(VENV)/prometheus-deb && apt-get download -qq prometheus 2>/dev/null && \
			dpkg-deb -x prometheus_*.deb . && rm prometheus_*.deb) && \
		ln -sf ../prometheus-deb/usr/bin/promtool $(VENV)/bin/promtool; \
	fi
	touch $@

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy switchboard actors serve agent sim bench

bench: $(STAMP) $(APT_STAMP)
	PATH="$(PG_BIN):$$PATH" $(PY) -m bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
