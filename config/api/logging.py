import logging

from .context import request_id_var, tenant_id_var, user_id_var


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
