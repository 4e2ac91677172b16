"""Host validation and HTTPS settings.

"Production" is the real stack (``DATABASE_URL`` names a server database) without
``DJANGO_DEBUG``. There, ``DJANGO_ALLOWED_HOSTS`` is required (startup fails without it)
and every HTTPS setting below is on by default, so ``manage.py check --deploy`` is clean.
The embedded default (SQLite) and ``DJANGO_DEBUG`` keep them off: ``make run`` serves plain
http on 127.0.0.1. A plain-http run of the real stack (a local daphne, the e2e tests, CI)
sets ``DJANGO_SECURE=false``; the test suite does so in pyproject.toml.
"""

from django.core.exceptions import ImproperlyConfigured

from .base import DATABASES, DEBUG
from .env import env

_PRODUCTION = DATABASES["default"]["ENGINE"] != "django.db.backends.sqlite3" and not DEBUG

# Host names this server answers to (comma-separated; a leading dot matches subdomains).
# Required in production: Django builds absolute URLs (pagination links) from the Host
# header, so any host is a poisoning risk. Elsewhere the default is the loopback names.
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=[])
if not ALLOWED_HOSTS:
    if _PRODUCTION:
        raise ImproperlyConfigured(
            "DJANGO_ALLOWED_HOSTS must be set when DATABASE_URL points at a server database and DJANGO_DEBUG is off "
            "(comma-separated host names this server answers to, e.g. chat.example.com)."
        )
    ALLOWED_HOSTS = ["localhost", "127.0.0.1", "[::1]"]

# Master switch for the HTTPS-only settings below (each can still be set on its own).
# Default: on in production, off for the embedded default and with DJANGO_DEBUG.
SECURE = env.bool("DJANGO_SECURE", default=_PRODUCTION)

# Behind a TLS-terminating proxy: "HEADER=value" the proxy sets on https requests, e.g.
# HTTP_X_FORWARDED_PROTO=https. Only set it when the proxy always sets (or strips) that
# header, or clients can claim https. Without it behind such a proxy, SSL redirect loops.
_proxy_header = env.str("DJANGO_SECURE_PROXY_SSL_HEADER", default="")
if _proxy_header:
    _name, _sep, _value = _proxy_header.partition("=")
    if not (_name and _sep and _value):
        raise ImproperlyConfigured("DJANGO_SECURE_PROXY_SSL_HEADER must look like HTTP_X_FORWARDED_PROTO=https.")
    SECURE_PROXY_SSL_HEADER = (_name.strip(), _value.strip())

# Redirect plain-http requests to https.
SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=SECURE)
# Paths served over plain http too (regexes, no leading slash): probes and scrapers that
# reach the process directly, not through the TLS proxy.
SECURE_REDIRECT_EXEMPT = env.list("DJANGO_SECURE_REDIRECT_EXEMPT", default=[r"^health(/ready)?/?$", r"^metrics/?$"])
# Strict-Transport-Security max-age in seconds (sent on https responses); 0 = no header.
SECURE_HSTS_SECONDS = env.int("DJANGO_SECURE_HSTS_SECONDS", default=31_536_000 if SECURE else 0)
# HSTS covers every subdomain too: only if all of them serve https.
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", default=SECURE)
# The "preload" HSTS directive (takes effect only once the domain is submitted to hstspreload.org).
SECURE_HSTS_PRELOAD = env.bool("DJANGO_SECURE_HSTS_PRELOAD", default=SECURE)
# Session and CSRF cookies (the admin) only travel over https.
SESSION_COOKIE_SECURE = env.bool("DJANGO_SESSION_COOKIE_SECURE", default=SECURE)
CSRF_COOKIE_SECURE = env.bool("DJANGO_CSRF_COOKIE_SECURE", default=SECURE)

# Django's "SecurityMiddleware / CsrfViewMiddleware / XFrameOptionsMiddleware missing"
# warnings look for Django's dotted paths only; the inline subclasses in MIDDLEWARE
# (config/api/native.py) are checked by config/api/checks.py instead, which runs every
# deploy check that depends on them and reports a really missing one as config.security.W00N.
SILENCED_SYSTEM_CHECKS = ["security.W001", "security.W002", "security.W003"]
