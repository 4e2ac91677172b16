"""Per-request context (request id, tenant, user, client) readable from logs, tasks and audits.

Set by the HTTP middleware and authentication (config/api), by the WebSocket consumer and
by Celery task hooks (config/celery.py); read by logging and the audit trail."""

import contextvars
import uuid

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
tenant_id_var: contextvars.ContextVar[int | None] = contextvars.ContextVar("tenant_id", default=None)
user_id_var: contextvars.ContextVar[int | None] = contextvars.ContextVar("user_id", default=None)
# The client's address is REMOTE_ADDR: X-Forwarded-For is not trusted here. Behind a proxy,
# run daphne with --proxy-headers so REMOTE_ADDR is the client's (docs/audits.md).
client_ip_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("client_ip", default=None)
user_agent_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("user_agent", default=None)


def new_request_id() -> str:
    return uuid.uuid4().hex


def current_request_id() -> str | None:
    return request_id_var.get()
