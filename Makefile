# Two commands on a fresh machine:  make demo  |  make test
# Both create .venv, install the package with its test tools, and install mosquitto
# (Debian package) if it is missing; tests start their own broker on a free port. make test
# also installs chromium (Debian package) for the dashboard's browser tests, and postgresql
# (Debian package) for the storage and integration tests' second pass on PostgreSQL: they use
# the server on 127.0.0.1:5432 when it answers (a scratch database per test, dropped after),
# else start a throwaway one from the package's binaries (leadrouter/postgres.py).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test lint bench chaos mosquitto chromium postgresql clean

demo: $(STAMP) mosquitto
	$(BIN)/leadrouter demo

test: $(STAMP) mosquitto chromium postgresql
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/pytest

# Issue 11's figures in one run (python -m bench --json for the JSON, --quick for a short one);
# the modules under bench/ each run alone too, with more detail.
bench: $(STAMP)
	$(BIN)/python -m bench
	$(BIN)/python -m bench.lead_import
	$(BIN)/python -m bench.webhook_load

# Issue 6's bar: every invariant 0 through 20 kill -9, 10 AMI faults, 3 PBX restarts, a 60 s broker outage.
chaos: $(STAMP) mosquitto
	$(BIN)/python -m bench.chaos --leads 5000 --kills 20 --ami-drops 10 --pbx-restarts 3 --broker-outage 60

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/mypy

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "leadrouter needs Python 3.11 or newer (set PYTHON=...)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	touch $(STAMP)

mosquitto:
	@command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || \
		{ echo "installing mosquitto (Debian package)"; \
		  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq mosquitto >/dev/null; }

# The dashboard's browser tests drive the Debian chromium through Playwright (Playwright's own
# browser download is not used).
chromium:
	@command -v chromium >/dev/null 2>&1 || \
		{ echo "installing chromium (Debian package)"; \
		  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium >/dev/null; }

postgresql:
	@command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || \
		{ echo "installing postgresql (Debian package)"; \
		  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq postgresql >/dev/null; }

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache
