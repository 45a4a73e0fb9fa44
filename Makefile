# Two commands on a fresh machine:  make demo  |  make test
# Both create .venv, install the package with its test tools, and install mosquitto
# (Debian package) if it is missing; tests start their own broker on a free port.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test lint bench mosquitto clean

demo: $(STAMP) mosquitto
	$(BIN)/leadrouter demo

test: $(STAMP) mosquitto
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/pytest

bench: $(STAMP)
	$(BIN)/python -m bench.ami_ingest
	$(BIN)/python -m bench.simulator_load
	$(BIN)/python -m bench.routing_select
	$(BIN)/python -m bench.api_idle
	$(BIN)/python -m bench.reload_stall

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

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache
