# The set-up commands: `make demo`, `make test` and `make docs`. Each creates .venv on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The demo's own stamp: `make demo` installs the server and the Redis client, not the test tools (Playwright, psycopg,
# ruff, Channels); `make test` installs those on top of it.
DEMO_STAMP := $(VENV)/.installed-demo

.PHONY: test test-django test-matrix docs demo demo-redis screenshots chromium lint format clean bench

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

$(DEMO_STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[server,redis,metrics]'
	touch $(DEMO_STAMP)

# The suite runs on $(TEST_WORKERS) pytest-xdist workers (one per core here); `make test TEST_WORKERS=0` runs it in one
# process, and PYTEST_ARGS passes anything else to pytest (a file, -k, -x).
TEST_WORKERS ?= 2

test: $(STAMP) chromium
	$(BIN)/ruff check src tests
	$(BIN)/mypy
	$(BIN)/python -m pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

# `make test-django DJANGO=4.2`: the whole suite on another Django release, in a virtualenv of its own
# (.venv-django-4.2); `make test-matrix` runs it on every release the classifiers in pyproject.toml name. CI runs the
# oldest here and the newest through `make test`. Django 6.0 needs Python 3.12, which these machines do not have yet.
DJANGO ?= 4.2
DJANGO_VERSIONS := 4.2 5.2
DJANGO_VENV = .venv-django-$(DJANGO)

test-django: chromium
	test -x $(DJANGO_VENV)/bin/python || $(PYTHON) -m venv $(DJANGO_VENV)
	$(DJANGO_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(DJANGO_VENV)/bin/python -m pip install --quiet -e '.[test]' 'Django==$(DJANGO).*'
	$(DJANGO_VENV)/bin/python -m pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

test-matrix:
	for version in $(DJANGO_VERSIONS); do $(MAKE) test-django DJANGO=$$version || exit 1; done

# `make docs`: the documentation site (mkdocs.yml: docs/ and the API reference from the docstrings) into site/.
# --strict turns every warning into a failure: a link to a missing page or anchor, a docstring griffe cannot read.
DOCS_STAMP := $(VENV)/.installed-docs

$(DOCS_STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[docs]'
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	$(BIN)/mkdocs build --strict

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff check --fix src tests
	$(BIN)/ruff format src tests

chromium:
	@test -x $(CHROMIUM) || { $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium; }

# The port of `make demo` and `make demo-redis`: `make demo PORT=8001` when 8000 is taken.
PORT ?= 8000
# The Redis server of `make demo-redis`, read by the example's settings too. Only at this default address does the
# target start a redis-server of its own when nothing answers; any other address must be up already.
LOCAL_REDIS_URL := redis://127.0.0.1:6379/0
CHAT_REDIS_URL ?= $(LOCAL_REDIS_URL)

# The example project (examples/chat) on http://127.0.0.1:$(PORT) with the in-memory layer: one process, the
# dashboard ticker runs inside it. Existing demo users keep their password, so a restart keeps everyone logged in.
demo: $(DEMO_STAMP)
	$(MANAGE) migrate --verbosity 0
	$(MANAGE) demo_users demo friend
	$(MANAGE) demo_data
	@echo "Open http://127.0.0.1:$(PORT) and log in as demo; log in as friend in a private window to chat with yourself."
	$(MANAGE) runserver 127.0.0.1:$(PORT)

# The same with the Redis layer: two uvicorn worker processes and the dashboard worker (`runworker`), which all talk
# through Redis at $(CHAT_REDIS_URL) (a local redis-server is started when that is the default address, nothing
# answers there and redis-server is installed).
demo-redis: $(DEMO_STAMP)
	$(MANAGE) migrate --verbosity 0
	$(MANAGE) demo_users demo friend
	$(MANAGE) demo_data
	@echo "Open http://127.0.0.1:$(PORT) and log in as demo (two web processes, one dashboard worker, Redis at $(CHAT_REDIS_URL))."
	cd $(EXAMPLE) && export CHAT_LAYER=redis CHAT_REDIS_URL='$(CHAT_REDIS_URL)' && pids="" && \
	if ! redis-cli -u "$$CHAT_REDIS_URL" ping >/dev/null 2>&1; then \
		if [ "$$CHAT_REDIS_URL" != '$(LOCAL_REDIS_URL)' ]; then \
			echo "Nothing answers at $$CHAT_REDIS_URL: start that Redis server, or unset CHAT_REDIS_URL." >&2; exit 1; fi; \
		redis-server --bind 127.0.0.1 --port 6379 --save "" --appendonly no & pids="$$!"; sleep 0.5; fi; \
	../../$(BIN)/python manage.py runworker dashboard-ticker & pids="$$pids $$!"; \
	trap 'kill $$pids 2>/dev/null' EXIT INT TERM; \
	../../$(BIN)/python -m uvicorn chatsite.asgi:application --host 127.0.0.1 --port $(PORT) --workers 2

# PNGs of the lobby, a room and the dashboard for the README, taken by the browser tests' page helpers.
screenshots: $(STAMP) chromium
	$(BIN)/python -m tests.example.screenshots docs/images

clean:
	rm -rf $(VENV) .venv-django-* build dist site src/*.egg-info

# `make bench`: tether against the Channels stack, side by side (benchmarks/). Its own virtualenv holds the peer stack
# and the measuring tools, never dependencies of the package. `make bench BENCH=echo` runs one benchmark.
BENCH_VENV := .venv-bench
BENCH_STAMP := $(BENCH_VENV)/.installed

$(BENCH_STAMP): pyproject.toml benchmarks/requirements.txt
	test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(BENCH_VENV)/bin/python -m pip install --quiet -e '.[redis,metrics]' -r benchmarks/requirements.txt
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BENCH_VENV)/bin/python -m benchmarks $(if $(BENCH),--only $(BENCH))
