from datetime import timedelta

from django.core.exceptions import ImproperlyConfigured

from .env import BASE_DIR, REDIS_URL, env

# Development conveniences (permissive CORS, debug pages off API paths). Never in production.
DEBUG = env.bool("DJANGO_DEBUG", default=False)
# Signs sessions and JWTs. Required on the real stack (DATABASE_URL not SQLite) unless
# DJANGO_DEBUG is on: startup fails without it (checked below, once the database is known).
# The embedded default falls back to a public development key, which is no secret at all.
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="")
_DEV_SECRET_KEY = "dev-only-insecure-secret-key-change-me-0123456789"
# ALLOWED_HOSTS and the HTTPS settings: config/settings/security.py.
# Origins trusted for CSRF (the admin behind HTTPS), e.g. https://chat.example.com
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "corsheaders",
    "rest_framework",
    "rest_framework_simplejwt",
    "rest_framework_simplejwt.token_blacklist",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI's assets, served as our own static files
    "channels",
    # Cross-cutting API plumbing with tables of its own (idempotency keys).
    "config.api",
    "accounts",
    "conversations",
    "chat",
    "hub",
    "audits",
    "files",
]

MIDDLEWARE = [
    # Ours, one layer: the request id, the error envelope on API paths (errors raised in the
    # middleware below included), X-RateLimit-* on the final response, the request log line.
    "config.api.middleware.ApiMiddleware",
    # Django's built-ins with their hooks run in the event loop under ASGI
    # (config/api/native.py; Django's own cost 15 thread hops a request for these seven).
    # config/api/checks.py keeps Django's deploy checks on them.
    "config.api.native.InlineSecurityMiddleware",
    # Serves the admin's static files from daphne without a separate web server; async
    # (WhiteNoise was sync-only: a thread hop on every request).
    "servestatic.middleware.ServeStaticMiddleware",
    # corsheaders, without parsing every request header when there is no Origin header.
    "config.api.native.InlineCorsMiddleware",
    "config.api.native.InlineSessionMiddleware",
    "config.api.native.InlineCommonMiddleware",
    "config.api.native.InlineCsrfViewMiddleware",
    "config.api.native.InlineAuthenticationMiddleware",
    "config.api.native.InlineMessageMiddleware",
    "config.api.native.InlineXFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
# API paths answer with and without a trailing slash themselves; never redirect a POST.
APPEND_SLASH = False

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

# Database: PostgreSQL through DATABASE_URL (psycopg 3 with Django's connection pool),
# else a SQLite file beside the code.
DATABASES = {"default": env.db_url("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # Persistent connections leak under ASGI; the pool replaces them (CONN_MAX_AGE must be 0).
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": env.int("DB_POOL_MIN_SIZE", default=2),
        # Budget: PostgreSQL max_connections >= processes x DB_POOL_MAX_SIZE.
        "max_size": env.int("DB_POOL_MAX_SIZE", default=10),
        "timeout": env.int("DB_POOL_TIMEOUT", default=10),  # DB_POOL_TIMEOUT below
    }
else:
    # SQLite: a writer waits up to 20 s for the lock. Transactions take the write lock at
    # BEGIN (IMMEDIATE): select_for_update is a no-op here, and two deferred transactions
    # that both read and then write fail at once with "database is locked".
    DATABASES["default"].setdefault("OPTIONS", {}).update(timeout=20, transaction_mode="IMMEDIATE")
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
# Seconds a request waits for a pooled database connection (sync pool above, async pool below).
DB_POOL_TIMEOUT = env.int("DB_POOL_TIMEOUT", default=10)
# The event loop's own pool for hot reads (config/api/asyncdb.py; PostgreSQL only), one per
# web process beside the sync pool: budget max_connections >= processes x (DB_POOL_MAX_SIZE +
# ASYNC_DB_POOL_MAX_SIZE). 0 turns it off (those reads go through the ORM in a thread).
ASYNC_DB_POOL_MIN_SIZE = env.int("ASYNC_DB_POOL_MIN_SIZE", default=1)
ASYNC_DB_POOL_MAX_SIZE = env.int("ASYNC_DB_POOL_MAX_SIZE", default=10)

if not SECRET_KEY:
    if DATABASES["default"]["ENGINE"] != "django.db.backends.sqlite3" and not DEBUG:
        raise ImproperlyConfigured(
            "DJANGO_SECRET_KEY must be set (in the environment or in .env) when DATABASE_URL "
            "points at a server database (it signs sessions and JWTs; the development key is "
            "public). Generate one with: python3 -c 'import secrets; print(secrets.token_urlsafe(50))'"
        )
    SECRET_KEY = _DEV_SECRET_KEY
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Cache (rate limits and idempotency locks use it too): Redis when REDIS_URL is set.
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": env.str("CACHE_KEY_PREFIX", default="chat"),
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 2, "SOCKET_TIMEOUT": 2},
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

AUTH_USER_MODEL = "accounts.User"
PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 10}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
# Where collectstatic puts the files ServeStaticMiddleware serves.
STATIC_ROOT = env.path("STATIC_ROOT", default=BASE_DIR / "staticfiles")
# Uploaded files (local folder in the embedded mode).
MEDIA_ROOT = env.path("MEDIA_ROOT", default=BASE_DIR / "media")

SIMPLE_JWT = {
    # Access tokens are never checked against the blacklist, so they stay short-lived.
    "ACCESS_TOKEN_LIFETIME": timedelta(minutes=env.int("JWT_ACCESS_MINUTES", default=10)),
    "REFRESH_TOKEN_LIFETIME": timedelta(days=env.int("JWT_REFRESH_DAYS", default=7)),
    "ROTATE_REFRESH_TOKENS": True,
    "BLACKLIST_AFTER_ROTATION": True,
    "UPDATE_LAST_LOGIN": True,
    "SIGNING_KEY": SECRET_KEY,
}
