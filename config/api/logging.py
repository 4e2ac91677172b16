import logging
import re

from pythonjsonlogger.json import JsonFormatter

from config.core.context import request_id_var, tenant_id_var, user_id_var

# Query parameters whose values are credentials (SSE and WebSocket take ``?token=``).
_SECRET_QUERY_PARAM = re.compile(
    r"(?i)([?&;](?:token|access_token|refresh_token|access|refresh|password|secret|api_key|jwt)=)"
    r"[^&;\s\"'\\<>]+"
)
# A JWT wherever it turns up (three base64url parts, the first two JSON objects). It starts
# a base64url run and its parts are possessive: client text (a 16 KB path of "eyJeyJ...")
# is scanned once, not once from every "eyJ" in it.
_JWT = re.compile(r"(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]{4,}+\.eyJ[A-Za-z0-9_-]{4,}+\.[A-Za-z0-9_-]*+")
REDACTED = "[redacted]"


def redact(text: str) -> str:
    """``text`` with credential query values and JWTs replaced by ``[redacted]``."""
    if "=" not in text and "eyJ" not in text:
        # Neither pattern can match (a credential parameter needs its "=", a JWT starts
        # "eyJ"): most lines, the request line among them, skip both scans.
        return text
    return _JWT.sub(REDACTED, _SECRET_QUERY_PARAM.sub(rf"\1{REDACTED}", text))


class RequestContextFilter(logging.Filter):
    """Stamps every log record with the request id, tenant and user of the current context."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id_var.get()
        if not hasattr(record, "tenant_id"):
            record.tenant_id = tenant_id_var.get()
        if not hasattr(record, "user_id"):
            record.user_id = user_id_var.get()
        return True


class RedactingJsonFormatter(JsonFormatter):
    """JSON lines with no credential in them. Tokens reach log text by many roads: the URL
    in a request's repr (Django's ``django.request`` lines carry the request, whose repr has
    the query string), a server's protocol repr, an exception message, a traceback. So the
    finished line is cleaned, whatever field the token hid in."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))
