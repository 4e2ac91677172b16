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


urlpatterns = [path("api/v1/test/boom", boom), path("api/v1/test/plain-boom", plain_boom), *base_patterns]
