"""Settings of the bare baseline app (bench/bare_asgi.py): Django with no middleware, no
apps, no database. What the benchmark's ratios divide by."""

SECRET_KEY = "bench-bare-baseline-not-a-secret"  # noqa: S105 - serves one constant view
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "bench.bare_asgi"
MIDDLEWARE: list[str] = []
INSTALLED_APPS: list[str] = []
DATABASES = {"default": {"ENGINE": "django.db.backends.dummy"}}
USE_TZ = True
LOGGING_CONFIG = None
