"""The application error type: what services raise when a request cannot be done.

Plain exceptions with a status and a machine-readable code, so any interface can map
them: the REST error envelope (config/api/errors.py), the SSE views, the WebSocket
consumer's error events, a Celery task's failure.
"""


class ApplicationError(Exception):
    """Raised by services; the API layer maps it to the error envelope."""

    status = 400
    code = "invalid_request"

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None, details=None):
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        if status:
            self.status = status
        self.details = details or {}


class NotFound(ApplicationError):
    status = 404
    code = "not_found"


class Forbidden(ApplicationError):
    status = 403
    code = "permission_denied"


class Conflict(ApplicationError):
    status = 409
    code = "conflict"


class ServiceUnavailable(ApplicationError):
    status = 503
    code = "service_unavailable"
