# The two set-up commands: `make demo` and `make test`. Both create .venv on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test demo demo-redis screenshots chromium lint format clean bench

EXAMPLE := examples/chat
# manage.py of the example project, run from its directory with the venv's Python.
MANAGE := cd $(EXAMPLE) && ../../$(BIN)/python manage.py
# Debian's Chromium, which the browser tests drive through Playwright (`playwright install` cannot download here).
CHROMIUM := /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

test: $(STAMP) chromium
	$(BIN)/ruff check src tests
	$(BIN)/mypy
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff check --fix src tests
	$(BIN)/ruff format src tests

chromium:
	@test -x $(CHROMIUM) || { $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium; }

# The example project (examples/chat) on http://127.0.0.1:8000 with the in-memory layer: one process, the dashboard
# ticker runs inside it.
demo: $(STAMP)
	$(MANAGE) migrate --verbosity 0
	$(MANAGE) demo_users demo friend
	$(MANAGE) demo_data
	@echo "Open http://127.0.0.1:8000 and log in as demo; log in as friend in a private window to chat with yourself."
	$(MANAGE) runserver 127.0.0.1:8000

# The same with the Redis layer: two uvicorn worker processes and the dashboard worker (`runworker`), which all talk
# through Redis on 127.0.0.1:6379 (started here when nothing answers there and redis-server is installed).
demo-redis: $(STAMP)
	$(MANAGE) migrate --verbosity 0
	$(MANAGE) demo_users demo friend
	$(MANAGE) demo_data
	@echo "Open http://127.0.0.1:8000 and log in as demo (two web processes, one dashboard worker, Redis layer)."
	cd $(EXAMPLE) && export CHAT_LAYER=redis && pids="" && \
	if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then \
		redis-server --bind 127.0.0.1 --port 6379 --save "" --appendonly no & pids="$$!"; sleep 0.5; fi; \
	../../$(BIN)/python manage.py runworker dashboard-ticker & pids="$$pids $$!"; \
	trap 'kill $$pids 2>/dev/null' EXIT INT TERM; \
	../../$(BIN)/python -m uvicorn chatsite.asgi:application --host 127.0.0.1 --port 8000 --workers 2

# PNGs of the lobby, a room and the dashboard for the README, taken by the browser tests' page helpers.
screenshots: $(STAMP) chromium
	$(BIN)/python -m tests.example.screenshots docs/images

clean:
	rm -rf $(VENV) build dist src/*.egg-info

# `make bench`: tether against the Channels stack, side by side (benchmarks/). Its own virtualenv holds the peer stack
# and the measuring tools, never dependencies of the package. `make bench BENCH=echo` runs one benchmark.
BENCH_VENV := .venv-bench
BENCH_STAMP := $(BENCH_VENV)/.installed

$(BENCH_STAMP): pyproject.toml benchmarks/requirements.txt
	test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(BENCH_VENV)/bin/python -m pip install --quiet -e '.[redis]' -r benchmarks/requirements.txt
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BENCH_VENV)/bin/python -m benchmarks $(if $(BENCH),--only $(BENCH))
