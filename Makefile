# One command to run, one to test. Everything installs into .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test lint worker

$(BIN)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

# Migrate and serve HTTP + WebSocket with daphne. With REDIS_URL set, a Celery worker
# (with the periodic sweeps) runs beside it and stops with it. `-v 0` turns daphne's own
# access log off: each request is logged once, as our JSON line (with its request id).
run: $(BIN)/.installed
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py collectstatic --noinput --verbosity 0
	@set -e; \
	if [ -n "$$REDIS_URL" ]; then \
	  $(BIN)/celery -A config worker --beat --loglevel=INFO --concurrency=2 & \
	  trap "kill $$! 2>/dev/null" EXIT INT TERM; \
	fi; \
	$(BIN)/daphne -v 0 -b $(HOST) -p $(PORT) config.asgi:application

worker: $(BIN)/.installed
	$(BIN)/celery -A config worker --beat --loglevel=INFO

test: $(BIN)/.installed
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
