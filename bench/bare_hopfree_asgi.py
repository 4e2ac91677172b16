"""The bare baseline (bench/bare_asgi.py: one async view, no middleware) served by the app's
handler (config/api/asgi_handler.py) instead of Django's: what a request costs here with
neither middleware nor the handler's thread hops. For `bench/run.py --bare-handler app` and
bench/served_cpu.py ``--hop-free-bare``.

    DJANGO_SETTINGS_MODULE=bench.bare_settings gunicorn -c config/gunicorn.py bench.bare_hopfree_asgi:application
"""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.bare_settings")

from bench.bare_asgi import urlpatterns  # noqa: E402, F401  (Django set up, the view's URL)
from config.api.asgi_handler import get_asgi_application  # noqa: E402

application = get_asgi_application()
