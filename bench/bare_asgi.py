"""The bare baseline: one async Django view, no middleware, served by the same server
command as the app (config/gunicorn.py), in the same benchmark run.

    DJANGO_SETTINGS_MODULE=bench.bare_settings gunicorn -c config/gunicorn.py bench.bare_asgi:application

It answers what `GET /health` answers, so the ratio of an endpoint to it is what our
middleware, auth and work cost on top of Django's own request handling and the server.
"""

import os

from django.http import JsonResponse
from django.urls import path

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.bare_settings")


async def bare(request):
    return JsonResponse({"status": "ok"})


urlpatterns = [path("bare", bare)]

from django.core.asgi import get_asgi_application  # noqa: E402

application = get_asgi_application()
