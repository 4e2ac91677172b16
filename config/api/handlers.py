"""Django's error handlers: the envelope on API paths, plain pages elsewhere."""

from django.views import defaults

from .errors import error_response
from .middleware import is_api_path


def not_found(request, exception=None):
    if is_api_path(request.path):
        return error_response(404, "not_found", "Not found.")
    return defaults.page_not_found(request, exception)


def server_error(request):
    if is_api_path(request.path):
        return error_response(500, "internal_error", "An unexpected error occurred.")
    return defaults.server_error(request)
