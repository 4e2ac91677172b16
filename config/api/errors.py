"""The one error envelope of the public contract.

``{"error": {"code", "message", "details", "request_id"}}`` for every API error:
DRF's own exceptions, our ``ApplicationError`` raised by services, and anything else.
``ApplicationError`` and its subclasses live in ``config.core.errors``: services raise them
without knowing HTTP; this module maps them to responses.
"""

import logging

from django.core.exceptions import BadRequest, RequestDataTooBig, SuspiciousOperation
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.db import InterfaceError as DatabaseInterfaceError
from django.db import OperationalError as DatabaseOperationalError
from django.http import Http404, JsonResponse
from rest_framework import exceptions as drf_exceptions
from rest_framework.response import Response
from rest_framework_simplejwt.exceptions import InvalidToken, TokenError

from config.core.context import current_request_id
from config.core.errors import ApplicationError

logger = logging.getLogger(__name__)


def error_body(code: str, message: str, details=None) -> dict:
    return {
        "error": {
            "code": code,
            "message": message,
            "details": details or {},
            "request_id": current_request_id(),
        }
    }


def error_response(status: int, code: str, message: str, details=None, headers=None) -> JsonResponse:
    response = JsonResponse(error_body(code, message, details), status=status)
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def django_error(exc: BaseException) -> tuple[int, str, str] | None:
    """(status, code, message) for the Django exceptions that mean a client error, which
    Django itself would answer with 4xx (a body over ``DATA_UPLOAD_MAX_MEMORY_SIZE``, 404,
    403, a suspicious or bad request); None for anything else, which is a 500."""
    # RequestDataTooBig is a SuspiciousOperation: test it first.
    if isinstance(exc, RequestDataTooBig):
        return 413, "payload_too_large", "The request body is too large."
    if isinstance(exc, Http404):
        return 404, "not_found", "Not found."
    if isinstance(exc, DjangoPermissionDenied):
        return 403, "permission_denied", "You do not have permission to perform this action."
    if isinstance(exc, (SuspiciousOperation, BadRequest)):
        return 400, "bad_request", "The request is not valid."
    return None


# Seconds a client is told to wait (``Retry-After``) after a 503 dependency_unavailable:
# about how long a Redis restart or a PostgreSQL failover takes.
DEPENDENCY_RETRY_AFTER_SECONDS = 5


def _dependency_exceptions() -> tuple[tuple[tuple[type[BaseException], ...], str], ...]:
    """(exception classes, dependency name) pairs meaning an outside system is unreachable."""
    import psycopg
    import psycopg_pool
    import redis
    from django_redis.exceptions import ConnectionInterrupted
    from kombu.exceptions import OperationalError as BrokerOperationalError

    return (
        # A lost or refused connection, or no pooled connection within the pool's timeout
        # (psycopg_pool.PoolTimeout; Django wraps it as its OperationalError).
        (
            (DatabaseOperationalError, DatabaseInterfaceError, psycopg.OperationalError, psycopg_pool.PoolTimeout),
            "database",
        ),
        ((redis.ConnectionError, redis.TimeoutError, ConnectionInterrupted), "redis"),
        # Celery could not hand a task to the broker (kombu wraps the transport's error).
        ((BrokerOperationalError,), "broker"),
    )


def dependency_failure(exc: BaseException) -> str | None:
    """Which dependency (``database``, ``redis``, ``broker``) ``exc`` says is unavailable,
    or None when it is no outage. Such a failure is the 503 ``dependency_unavailable`` of
    the contract (with ``Retry-After``), not a 500: retrying later will work."""
    for classes, name in _dependency_exceptions():
        if isinstance(exc, classes):
            return name
    return None


def dependency_unavailable_body(dependency: str) -> dict:
    return error_body(
        "dependency_unavailable",
        "A service this request needs is unavailable; retry shortly.",
        {"dependency": dependency},
    )


def dependency_unavailable_response(dependency: str) -> JsonResponse:
    """The 503 envelope for an outage of ``dependency``, outside DRF views."""
    response = JsonResponse(dependency_unavailable_body(dependency), status=503)
    response["Retry-After"] = str(DEPENDENCY_RETRY_AFTER_SECONDS)
    return response


_DRF_CODES = {
    drf_exceptions.ValidationError: "validation_error",
    drf_exceptions.ParseError: "parse_error",
    drf_exceptions.NotAuthenticated: "not_authenticated",
    drf_exceptions.AuthenticationFailed: "authentication_failed",
    drf_exceptions.PermissionDenied: "permission_denied",
    drf_exceptions.NotFound: "not_found",
    drf_exceptions.MethodNotAllowed: "method_not_allowed",
    drf_exceptions.NotAcceptable: "not_acceptable",
    drf_exceptions.UnsupportedMediaType: "unsupported_media_type",
    drf_exceptions.Throttled: "rate_limited",
}


def _flatten_detail(detail):
    """DRF ErrorDetail trees -> plain JSON (strings, lists, dicts)."""
    if isinstance(detail, dict):
        return {key: _flatten_detail(value) for key, value in detail.items()}
    if isinstance(detail, list):
        return [_flatten_detail(value) for value in detail]
    return str(detail)


def validation_message(detail) -> tuple[str, dict]:
    """(headline, details) of a serializer's errors, as every 400 validation_error says them."""
    details = _flatten_detail(detail)
    if isinstance(details, list):
        details = {"non_field_errors": details}
    message = "The request is not valid."
    # One field's single message makes a clearer headline than a generic one.
    if isinstance(details, dict) and len(details) == 1:
        ((field, errors),) = details.items()
        if isinstance(errors, list) and errors and isinstance(errors[0], str):
            message = errors[0] if field == "non_field_errors" else f"{field}: {errors[0]}"
    return message, details


def validation_error_response(detail) -> JsonResponse:
    """The 400 envelope for a serializer's errors, outside DRF views (SSE, WebSocket)."""
    message, details = validation_message(detail)
    return error_response(400, "validation_error", message, details)


def exception_handler(exc, context):
    """The envelope for every error a DRF view raises. DRF calls it through
    ``config.api.ratelimit.exception_handler``, which first counts refused requests."""
    if isinstance(exc, ApplicationError):
        return Response(error_body(exc.code, exc.message, exc.details), status=exc.status)
    if isinstance(exc, (RequestDataTooBig, SuspiciousOperation, BadRequest)):
        # DRF re-raises these (reading request.data over the size limit, say): a 500 otherwise.
        status, code, message = django_error(exc)
        return Response(error_body(code, message), status=status)
    if isinstance(exc, Http404):
        exc = drf_exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = drf_exceptions.PermissionDenied()
    elif isinstance(exc, (InvalidToken, TokenError)) and not isinstance(exc, drf_exceptions.APIException):
        exc = InvalidToken(str(exc))

    dependency = dependency_failure(exc)
    if dependency is not None:
        logger.warning("dependency unavailable: %s", type(exc).__name__, extra={"dependency": dependency})
        return Response(
            dependency_unavailable_body(dependency),
            status=503,
            headers={"Retry-After": str(DEPENDENCY_RETRY_AFTER_SECONDS)},
        )
    if not isinstance(exc, drf_exceptions.APIException):
        return None  # ApiErrorMiddleware turns it into a logged 500 envelope.
    code = next((c for cls, c in _DRF_CODES.items() if isinstance(exc, cls)), None)
    headers = {}
    if isinstance(exc, drf_exceptions.ValidationError):
        message, details = validation_message(exc.detail)
    else:
        detail = exc.detail
        if isinstance(detail, dict):
            # simplejwt puts {"detail", "code", "messages"} here.
            code = code if code not in (None, "authentication_failed") else str(detail.get("code", code))
            message = str(detail.get("detail", exc.default_detail))
            details = {k: _flatten_detail(v) for k, v in detail.items() if k not in ("detail", "code")}
        else:
            message = str(detail)
            details = {}
        if code is None:
            code = getattr(exc, "default_code", "error")
    if getattr(exc, "auth_header", None):
        headers["WWW-Authenticate"] = exc.auth_header
    wait = getattr(exc, "wait", None)
    if isinstance(exc, drf_exceptions.Throttled) and wait is not None:
        headers["Retry-After"] = str(max(1, int(wait + 0.999)))
    response = Response(error_body(code, message, details), status=exc.status_code, headers=headers)
    return response
