"""The messaging hub: delivery attempts and backoff, the delivery lease, inbound webhook
checks, and where the simulators report statuses back."""

from .base import SECRET_KEY
from .env import env

# Attempts one outbound delivery gets (transient connector errors, lost workers) before the
# message is `failed`.
HUB_MAX_ATTEMPTS = env.int("HUB_MAX_ATTEMPTS", default=5)
# First retry delay in seconds; doubles with each attempt, times a random jitter in [0.5, 1].
HUB_RETRY_BACKOFF_SECONDS = env.float("HUB_RETRY_BACKOFF_SECONDS", default=1.0)
# Longest retry delay in seconds, whatever the attempt.
HUB_RETRY_BACKOFF_MAX_SECONDS = env.float("HUB_RETRY_BACKOFF_MAX_SECONDS", default=300.0)
# Seconds a worker's claim on a delivery in progress holds; past it the holder is taken for
# dead and the sweep (or any redelivery) sends it again. Above any connector's timeout.
HUB_DELIVERY_LEASE_SECONDS = env.int("HUB_DELIVERY_LEASE_SECONDS", default=120)
# A delivery still waiting for a worker after this many seconds lost its task: the sweep
# hands it to the broker again.
HUB_STALE_PENDING_SECONDS = env.int("HUB_STALE_PENDING_SECONDS", default=120)
# Seconds between sweeps of deliveries (lapsed leases, lost or unsent tasks).
HUB_SWEEP_SECONDS = env.float("HUB_SWEEP_SECONDS", default=10.0)
# Inbound webhooks: a payload timestamp older than this many seconds is refused (400).
HUB_WEBHOOK_MAX_AGE_SECONDS = env.int("HUB_WEBHOOK_MAX_AGE_SECONDS", default=300)
# Seconds a web process keeps a connected account's id and secret for verifying its status
# reports without a query (0: read it on every webhook). A disconnect is seen at once in the
# process that made it, within this bound elsewhere (docs/hub.md "Inbound").
HUB_WEBHOOK_ACCOUNT_CACHE_SECONDS = env.float("HUB_WEBHOOK_ACCOUNT_CACHE_SECONDS", default=30.0)
# Seconds the outbound `webhook` connector waits for the account's URL.
HUB_WEBHOOK_TIMEOUT_SECONDS = env.float("HUB_WEBHOOK_TIMEOUT_SECONDS", default=10.0)
# Where the simulators POST their signed status reports, e.g. http://127.0.0.1:8000 (the
# app's own public URL). Empty: they call the same inbound service in-process (embedded).
HUB_WEBHOOK_BASE_URL = env.str("HUB_WEBHOOK_BASE_URL", default="")
# Key that encrypts channel-account secrets at rest (any string; hashed to a Fernet key).
# Defaults to DJANGO_SECRET_KEY; changing it makes stored secrets unreadable.
HUB_SECRET_KEY = env.str("HUB_SECRET_KEY", default="") or SECRET_KEY
# The Celery queue deliveries go to, served by a worker of its own (`make hub-worker`: a
# threads pool, many slots: a delivery mostly waits on the platform). "default" sends them
# to the general worker instead.
HUB_DELIVERY_QUEUE = env.str("HUB_DELIVERY_QUEUE", default="hub")
