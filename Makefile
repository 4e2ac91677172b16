# One command to run, one to test. Everything installs into .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
# Slots of the hub's delivery worker (threads; each waits on a platform most of its time).
HUB_WORKER_CONCURRENCY ?= 32
# Its Prometheus port (CELERY_METRICS_PORT is the general worker's; 0 = off).
HUB_WORKER_METRICS_PORT ?= 0
HUB_WORKER_ARGS = -Q hub --pool=threads --concurrency=$(HUB_WORKER_CONCURRENCY) -n hub@%h

# Web processes: `WEB_CONCURRENCY=2 make run` (or in .env; default 1, read by
# config/gunicorn.py); more than 1 needs REDIS_URL.
.PHONY: run serve test lint worker hub-worker bench

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

# Migrate and serve HTTP, SSE and WebSocket: gunicorn with WEB_CONCURRENCY uvicorn worker
# processes (config/gunicorn.py; docs/serving.md). With REDIS_URL set (in the environment
# or in .env, as the settings read it), the Celery workers run beside it and stop with it:
# the general one (with the periodic sweeps) and the hub's delivery worker. No access log
# of the server's own: each request is logged once, as our JSON line (with its request id).
run: $(BIN)/.installed-runtime
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py collectstatic --noinput --verbosity 0
	@set -e; \
	if [ -n "$$($(BIN)/python -c 'from config.settings.env import REDIS_URL; print(REDIS_URL)')" ]; then \
	  $(BIN)/celery -A config worker --beat --loglevel=INFO --concurrency=2 -Q default -n default@%h & \
	  pids="$$!"; \
	  CELERY_METRICS_PORT=$(HUB_WORKER_METRICS_PORT) $(BIN)/celery -A config worker --loglevel=INFO $(HUB_WORKER_ARGS) & \
	  pids="$$pids $$!"; \
	  trap "kill $$pids 2>/dev/null" EXIT INT TERM; \
	fi; \
	$(BIN)/gunicorn -c config/gunicorn.py -b $(HOST):$(PORT) config.asgi:application

# The web processes alone, as production runs them (migrations, collectstatic and the
# Celery workers are the deploy's and `make worker`'s business).
serve: $(BIN)/.installed-runtime
	exec $(BIN)/gunicorn -c config/gunicorn.py -b $(HOST):$(PORT) config.asgi:application

worker: $(BIN)/.installed-runtime
	$(BIN)/celery -A config worker --beat --loglevel=INFO -Q default -n default@%h

# The delivery worker of the messaging hub (docs/hub.md): the `hub` queue on a threads pool
# with many slots, since a delivery mostly waits on the platform. Run beside `make worker`.
hub-worker: $(BIN)/.installed-runtime
	CELERY_METRICS_PORT=$(HUB_WORKER_METRICS_PORT) $(BIN)/celery -A config worker --loglevel=INFO $(HUB_WORKER_ARGS)

test: $(BIN)/.installed-dev
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(BIN)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The load benchmark on the real stack (PostgreSQL, Redis, a Celery worker, the server of
# `make serve`), on a database and Redis db of its own; prints the table of
# docs/benchmarks.md. `make bench ONLY=health,me` runs a subset; see bench/run.py --help.
bench: $(BIN)/.installed-dev
	$(BIN)/python bench/run.py $(if $(ONLY),--only $(ONLY)) $(BENCH_ARGS)
