"""The baseline of bench/overhead.py: one ``async def`` Django view, no middleware, no
database, served by daphne the same way as the app (``daphne bench.bare_asgi:application``)."""

from django.conf import settings

settings.configure(
    DEBUG=False,
    ALLOWED_HOSTS=["*"],
    ROOT_URLCONF=__name__,
    MIDDLEWARE=[],
    INSTALLED_APPS=[],
    SECRET_KEY="bench-only-not-a-secret",
)

import django  # noqa: E402

django.setup()

from django.core.asgi import get_asgi_application  # noqa: E402
from django.http import JsonResponse  # noqa: E402
from django.urls import path  # noqa: E402


async def bare(request):
    return JsonResponse({"status": "ok"})


urlpatterns = [path("bare", bare)]
application = get_asgi_application()
