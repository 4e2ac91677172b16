"""The audit trail."""

from .env import env

# Days audit records are kept; older ones are purged daily (the chain stays verifiable).
# 0 keeps everything.
AUDIT_RETENTION_DAYS = env.int("AUDIT_RETENTION_DAYS", default=0)

# Sealing (docs/audits.md): a request only INSERTs its audit record; a Celery task chains
# the records in order shortly after. Seconds a commit waits for the next seal task at most
# (commits within one window share one task). Lower = fresher seals, more tasks.
AUDIT_SEAL_DELAY_SECONDS = env.float("AUDIT_SEAL_DELAY_SECONDS", default=0.2)
# Seconds between the periodic seal (beat entry "seal-audit-chains"): the safety net for a
# seal request lost to a broker outage or a dead worker. Bounds the delay in that case.
AUDIT_SEAL_INTERVAL_SECONDS = env.float("AUDIT_SEAL_INTERVAL_SECONDS", default=5.0)
# Records sealed per chain per transaction (the chain row is locked for one batch at a time).
AUDIT_SEAL_BATCH_SIZE = env.int("AUDIT_SEAL_BATCH_SIZE", default=1000)
