from .env import REDIS_URL, env

# Channel layer for WebSocket/SSE fan-out: Redis across processes, in-memory in one process.
if REDIS_URL:
    # An idle listener waits in channels-redis' blocking read (BZPOPMIN, 5 s) in a loop.
    # redis-py >= 8 gives every socket a 5 s read timeout by default, so that read timed out
    # and killed every idle WebSocket (1011) and SSE stream (channels_redis issue 422). The
    # read timeout must stay above the blocking read; TCP keepalive and a health check
    # notice a dead Redis on idle connections instead.
    CHANNEL_REDIS_HOST = {
        "address": REDIS_URL,
        "socket_timeout": env.float("CHANNEL_LAYER_SOCKET_TIMEOUT", default=15.0),
        "socket_connect_timeout": 5.0,
        "socket_keepalive": True,
        "health_check_interval": 30,
    }
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [CHANNEL_REDIS_HOST], "capacity": 1000, "expiry": 60},
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer", "CONFIG": {"capacity": 1000}}}

# Celery: a Redis broker and separate workers on the real stack; in-process when embedded.
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=REDIS_URL or "memory://")
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
# Workers log through LOGGING (JSON lines with the request id), not Celery's own format.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# Port on which each Celery worker serves Prometheus metrics (task outcomes, agent runs) summed
# over its pool processes; 0 = off. Daphne's /metrics does not see what workers count.
CELERY_METRICS_PORT = env.int("CELERY_METRICS_PORT", default=0)
# Address that endpoint binds to; it has no auth, so keep it private (0.0.0.0 in a container).
CELERY_METRICS_ADDR = env.str("CELERY_METRICS_ADDR", default="127.0.0.1")

# The agent. "local" is the offline task assistant; "openai" uses the official client
# against OpenAI or any compatible server. Defaults to openai when a key is set.
OPENAI_API_KEY = env.str("OPENAI_API_KEY", default="")
# Any OpenAI-compatible server, e.g. http://127.0.0.1:11434/v1
OPENAI_BASE_URL = env.str("OPENAI_BASE_URL", default="")
OPENAI_MODEL = env.str("OPENAI_MODEL", default="gpt-4o-mini")
# Seconds one model call may take before the turn fails (503 agent_unavailable).
OPENAI_TIMEOUT = env.float("OPENAI_TIMEOUT", default=30.0)
AGENT_PROVIDER = env.str("AGENT_PROVIDER", default="openai" if OPENAI_API_KEY else "local")
# Tool rounds one turn may take before the model must answer in words.
AGENT_MAX_TOOL_ROUNDS = env.int("AGENT_MAX_TOOL_ROUNDS", default=5)
# Characters of conversation history fed to the model (newest first, whole messages).
AGENT_HISTORY_CHARS = env.int("AGENT_HISTORY_CHARS", default=16000)
# Attempts a turn gets on Celery (transient provider errors, lost workers) before it fails.
AGENT_MAX_ATTEMPTS = env.int("AGENT_MAX_ATTEMPTS", default=3)
# First retry delay in seconds; doubles with each attempt.
AGENT_RETRY_BACKOFF_SECONDS = env.float("AGENT_RETRY_BACKOFF_SECONDS", default=2.0)
# A run still queued after this many seconds lost its task and is queued again by the sweep.
AGENT_STALE_QUEUED_SECONDS = env.int("AGENT_STALE_QUEUED_SECONDS", default=900)
# Seconds between SSE heartbeat comments (keeps proxies from closing idle streams).
SSE_HEARTBEAT_SECONDS = env.float("SSE_HEARTBEAT_SECONDS", default=15.0)
# An open WebSocket that only listens re-checks its user and tenant before passing on an
# event when the last check is older than this (every client frame re-checks anyway).
REALTIME_RECHECK_SECONDS = env.float("REALTIME_RECHECK_SECONDS", default=10.0)

# Days audit records are kept; older ones are purged daily (the chain stays verifiable).
# 0 keeps everything.
AUDIT_RETENTION_DAYS = env.int("AUDIT_RETENTION_DAYS", default=0)

# Seconds between relays of runs whose enqueue failed (broker down when they were stored).
AGENT_RELAY_SECONDS = env.float("AGENT_RELAY_SECONDS", default=5.0)

# Periodic work, run by `celery worker --beat` (make run / make worker).
CELERY_BEAT_SCHEDULE = {
    "sweep-stuck-runs": {"task": "chat.tasks.sweep_stuck_runs", "schedule": 60.0},
    # Expires after one period: relays that waited out a busy or absent worker do not pile
    # up (the next one does their work).
    "relay-unsent-runs": {
        "task": "chat.tasks.relay_unsent_runs",
        "schedule": AGENT_RELAY_SECONDS,
        "options": {"expires": AGENT_RELAY_SECONDS},
    },
    "purge-idempotency-keys": {"task": "config.api.tasks.purge_idempotency_keys", "schedule": 3600.0},
    "flush-expired-tokens": {"task": "accounts.tasks.flush_expired_tokens", "schedule": 86400.0},
    "purge-old-audits": {"task": "audits.tasks.purge_old_audits", "schedule": 86400.0},
}
