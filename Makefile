# One command to run, one to test. Everything installs into .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test lint worker

# `run` and `worker` install the runtime set only; `test` and `lint` add the test tools.
$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(BIN)/.installed-runtime: requirements.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(BIN)/.installed-dev: requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $(BIN)/.installed-runtime $@

# Migrate and serve HTTP + WebSocket with daphne. With REDIS_URL set (in the environment
# or in .env, as the settings read it), a Celery worker (with the periodic sweeps) runs
# beside it and stops with it. `-v 0` turns daphne's own access log off: each request is
# logged once, as our JSON line (with its request id).
run: $(BIN)/.installed-runtime
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py collectstatic --noinput --verbosity 0
	@set -e; \
	if [ -n "$$($(BIN)/python -c 'from config.settings.env import REDIS_URL; print(REDIS_URL)')" ]; then \
	  $(BIN)/celery -A config worker --beat --loglevel=INFO --concurrency=2 & \
	  trap "kill $$! 2>/dev/null" EXIT INT TERM; \
	fi; \
	$(BIN)/daphne -v 0 -b $(HOST) -p $(PORT) config.asgi:application

worker: $(BIN)/.installed-runtime
	$(BIN)/celery -A config worker --beat --loglevel=INFO

test: $(BIN)/.installed-dev
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(BIN)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
