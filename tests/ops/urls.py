from django.core.exceptions import BadRequest, PermissionDenied, SuspiciousOperation
from django.http import Http404
from django.urls import path
from rest_framework.decorators import api_view, permission_classes
from rest_framework.permissions import AllowAny

from config.urls import urlpatterns as base_patterns


@api_view(["GET"])
@permission_classes([AllowAny])
def boom(request):
    raise RuntimeError("secret internal detail")


def plain_boom(request):
    raise ValueError("another secret")


_PLAIN_RAISES = {
    "not-found": Http404("secret 404 detail"),
    "forbidden": PermissionDenied("secret 403 detail"),
    "suspicious": SuspiciousOperation("secret 400 detail"),
    "bad-request": BadRequest("secret 400 detail"),
}


def plain_raise(request, kind):
    raise _PLAIN_RAISES[kind]


@api_view(["GET"])
@permission_classes([AllowAny])
def drf_raise(request, kind):
    raise _PLAIN_RAISES[kind]


urlpatterns = [
    path("api/v1/test/boom", boom),
    path("api/v1/test/plain-boom", plain_boom),
    path("api/v1/test/plain-raise/<str:kind>", plain_raise),
    path("api/v1/test/drf-raise/<str:kind>", drf_raise),
    *base_patterns,
]
