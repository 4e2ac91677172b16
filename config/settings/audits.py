"""The audit trail."""

from .env import env

# Days audit records are kept; older ones are purged daily (the chain stays verifiable).
# 0 keeps everything.
AUDIT_RETENTION_DAYS = env.int("AUDIT_RETENTION_DAYS", default=0)
