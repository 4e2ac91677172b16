"""One ASGI app for HTTP and WebSocket (served by daphne)."""

import os

from channels.routing import ProtocolTypeRouter

from config import startup

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
# A missing secret key or database stops the server with one line, before it listens.
startup.load_settings_or_exit()
startup.check_database(unreachable_is_fatal=False)

from config.api.asgi_handler import get_asgi_application  # noqa: E402

# Django's handler, hopping to a thread at a request's start and end only when the request
# has sync work of its own (config/api/asgi_handler.py).
django_asgi_app = get_asgi_application()

from django.conf import settings  # noqa: E402

from config.api.backpressure import BackpressureMiddleware  # noqa: E402
from config.routing import websocket_application  # noqa: E402  (needs the app registry)
from config.shutdown import install_shutdown_watchdog  # noqa: E402

# SIGTERM stops daphne within SHUTDOWN_GRACE_SECONDS, whatever is still in flight.
install_shutdown_watchdog(settings.SHUTDOWN_GRACE_SECONDS)

application = ProtocolTypeRouter(
    {
        # Streamed responses wait for the socket to drain (daphne has no flow control).
        "http": BackpressureMiddleware(django_asgi_app),
        "websocket": websocket_application,
    }
)
