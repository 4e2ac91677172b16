"""Celery: the broker, how tasks run and are acknowledged, and the periodic work (beat)."""

from .agent import AGENT_RELAY_SECONDS
from .audits import AUDIT_SEAL_INTERVAL_SECONDS
from .env import REDIS_URL, env
from .hub import HUB_DELIVERY_QUEUE, HUB_SWEEP_SECONDS

# Celery: a Redis broker and separate workers on the real stack; in-process when embedded.
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=REDIS_URL or "memory://")
# kombu's Redis transport, with a worker that survives a broker restart while it holds a
# task waiting for its countdown (config/broker.py).
if CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
    CELERY_BROKER_TRANSPORT = "config.broker:Transport"
CELERY_RESULT_BACKEND = None
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=not REDIS_URL)
CELERY_TASK_EAGER_PROPAGATES = False
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Hard limit on one task; the broker's visibility timeout stays above it so a running
# task is never handed to a second worker.
CELERY_TASK_TIME_LIMIT = env.int("CELERY_TASK_TIME_LIMIT", default=300)
CELERY_TASK_SOFT_TIME_LIMIT = CELERY_TASK_TIME_LIMIT - max(1, min(30, CELERY_TASK_TIME_LIMIT // 10))
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": CELERY_TASK_TIME_LIMIT * 2}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_DEFAULT_QUEUE = "default"
# Deliveries wait on the platforms, not the CPU: a queue of their own (docs/hub.md).
CELERY_TASK_ROUTES = {"hub.tasks.deliver_message": {"queue": HUB_DELIVERY_QUEUE}}
# Workers log through LOGGING (JSON lines with the request id), not Celery's own format.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# Port on which each Celery worker serves Prometheus metrics (task outcomes, agent runs) summed
# over its pool processes; 0 = off. Daphne's /metrics does not see what workers count.
CELERY_METRICS_PORT = env.int("CELERY_METRICS_PORT", default=0)
# Address that endpoint binds to; it has no auth, so keep it private (0.0.0.0 in a container).
CELERY_METRICS_ADDR = env.str("CELERY_METRICS_ADDR", default="127.0.0.1")

# Periodic work, run by `celery worker --beat` (make run / make worker).
CELERY_BEAT_SCHEDULE = {
    # Abandoned uploads expire and their chunks go (files app).
    "purge-stale-uploads": {"task": "files.tasks.purge_stale_uploads", "schedule": 3600.0},
    "sweep-stuck-runs": {"task": "chat.tasks.sweep_stuck_runs", "schedule": 60.0},
    # Expires after one period: relays that waited out a busy or absent worker do not pile
    # up (the next one does their work).
    "relay-unsent-runs": {
        "task": "chat.tasks.relay_unsent_runs",
        "schedule": AGENT_RELAY_SECONDS,
        "options": {"expires": AGENT_RELAY_SECONDS},
    },
    # Deliveries whose worker died, whose task was lost or never reached the broker.
    "sweep-deliveries": {
        "task": "hub.tasks.sweep_deliveries",
        "schedule": HUB_SWEEP_SECONDS,
        "options": {"expires": HUB_SWEEP_SECONDS},
    },
    "purge-idempotency-keys": {"task": "config.api.tasks.purge_idempotency_keys", "schedule": 3600.0},
    "flush-expired-tokens": {"task": "accounts.tasks.flush_expired_tokens", "schedule": 86400.0},
    "purge-old-audits": {"task": "audits.tasks.purge_old_audits", "schedule": 86400.0},
    # Safety net of audit sealing (each commit asks for a seal itself): seals a backlog a
    # lost request left behind. Expires after one period, like the relay above.
    "seal-audit-chains": {
        "task": "audits.tasks.seal_chains",
        "schedule": AUDIT_SEAL_INTERVAL_SECONDS,
        "options": {"expires": AUDIT_SEAL_INTERVAL_SECONDS},
    },
}
