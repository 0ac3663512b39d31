# Two commands for a fresh machine: `make run` serves the playground, `make test` runs the suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test install install-test install-bench browser lint typecheck bench lock clean

# Dependencies are installed from the pinned, hashed lock files in requirements/ (pip, so the
# machine's pip configuration applies), then the project itself without its dependencies.
# base.txt: runtime; test.txt: runtime + test + lint tools; bench.txt: test + the bench extra.
PIP_LOCKED := $(BIN)/python -m pip install --quiet --require-hashes -r
PIP_PROJECT := $(BIN)/python -m pip install --quiet --no-deps -e .

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# The stamps depend on the lock files, so a changed lock reinstalls.
$(VENV)/.installed: requirements/base.txt pyproject.toml | $(BIN)/python
	$(PIP_LOCKED) requirements/base.txt
	$(PIP_PROJECT)
	touch $@

$(VENV)/.installed-test: requirements/test.txt requirements/base.txt pyproject.toml | $(BIN)/python
	$(PIP_LOCKED) requirements/test.txt
	$(PIP_PROJECT)
	touch $@ $(VENV)/.installed

$(VENV)/.installed-bench: requirements/bench.txt requirements/test.txt requirements/base.txt pyproject.toml | $(BIN)/python
	$(PIP_LOCKED) requirements/bench.txt
	$(PIP_PROJECT)
	touch $@ $(VENV)/.installed-test $(VENV)/.installed

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test
install-bench: $(VENV)/.installed-bench

# `make lock` recompiles requirements/*.txt from pyproject.toml, keeping the current pins where
# they still fit; `make lock UPGRADE=1` moves everything to the newest allowed versions.
# uv's `pip compile` rather than pip-tools: it resolves for a stated target (Python 3.11 on
# Linux) whatever interpreter runs it, writes hashes for every file of a release, and takes
# seconds. Only this target needs uv; installing stays plain pip.
UV_VERSION := 0.13.9
LOCK_TARGET := --python-version 3.11 --python-platform linux
UV_COMPILE = $(BIN)/uv pip compile pyproject.toml $(LOCK_TARGET) --generate-hashes --quiet \
	--custom-compile-command "make lock" $(if $(UPGRADE),--upgrade)

lock: | $(BIN)/python
	$(BIN)/python -m pip install --quiet uv==$(UV_VERSION)
	$(UV_COMPILE) -o requirements/base.txt
	$(UV_COMPILE) --extra test -c requirements/base.txt -o requirements/test.txt
	$(UV_COMPILE) --extra test --extra bench -c requirements/test.txt -o requirements/bench.txt

# The embedded default: SQLite under var/, the in-memory channel layer, secrets generated
# into var/ on first run, one Daphne process and one task worker (experiments run there; it
# stops with Daphne). collectstatic writes the hashed and gzipped static files into
# var/static, which WhiteNoise serves. More workers: `manage.py db_worker` anywhere that
# reaches the same database.
run: install
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py collectstatic --noinput --verbosity 0
	$(BIN)/python manage.py db_worker --no-reload --interval 0.5 & worker=$$!; \
	trap 'kill $$worker 2>/dev/null; wait $$worker' EXIT INT TERM; \
	$(BIN)/daphne -e tcp:port=$(PORT):interface=$(HOST):backlog=4096 --websocket_connect_timeout 30 playground.asgi:application

# Browser tests drive Debian's Chromium (Playwright cannot download its own browser here).
browser:
	@if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else \
	    echo "Chromium is missing: install Debian's 'chromium' package for the browser tests."; \
	  fi; \
	fi

test: install-test browser
	$(BIN)/pytest

# A merge that left conflict markers in a template or a doc would pass every other check.
lint: install-test
	@! git grep -nE '^(<<<<<<<|>>>>>>>)( |$$)' || \
		{ echo "merge conflict markers (above) left in tracked files"; exit 1; }
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

typecheck: install-test
	$(BIN)/mypy

# The relay benchmark with its defaults; see bench/README.md for the options.
bench: install-bench
	$(BIN)/python -m bench.relay $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
