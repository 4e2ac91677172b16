"""Django's deploy checks for the middleware that runs inline (config/api/native.py).

Django's security checks find its middleware by exact dotted path in ``MIDDLEWARE``: with
the ``Inline*`` subclasses there, ``check --deploy`` would warn that Security, CSRF and
X-Frame-Options are missing (security.W001-W003) and silently skip every check that depends
on them (HSTS, SSL redirect, nosniff, referrer and cross-origin-opener policies, the CSRF
cookie, X-Frame-Options DENY). ``SILENCED_SYSTEM_CHECKS`` drops Django's three "missing"
warnings, and this check runs Django's own security checks again with each ``Inline*``
class counted as the Django class it extends, so every one of them still applies. A
middleware really missing is reported as ``config.security.W001``-``W003``.

Registered from ``AccountsConfig.ready`` (the ground floor has no app of its own).
"""

from django.conf import settings
from django.core import checks
from django.test.utils import override_settings

from .native import DJANGO_EQUIVALENTS

# Django's "this middleware is missing" warnings: silenced in settings (they only see dotted
# paths) and emitted again from here, under these ids, when the middleware really is missing.
MISSING_MIDDLEWARE_IDS = {
    "security.W001": "config.security.W001",
    "security.W002": "config.security.W002",
    "security.W003": "config.security.W003",
}


def _django_security_checks():
    from django.core.checks.security import base, csrf

    return [
        check
        for check in checks.registry.registry.get_checks(include_deployment_checks=True)
        if getattr(check, "__module__", "") in (base.__name__, csrf.__name__)
    ]


@checks.register(checks.Tags.security, deploy=True)
def check_inline_middleware_security(app_configs, **kwargs):
    middleware = [DJANGO_EQUIVALENTS.get(path, path) for path in settings.MIDDLEWARE]
    if middleware == list(settings.MIDDLEWARE):
        return []  # nothing inline: Django's own checks saw everything
    messages = []
    with override_settings(MIDDLEWARE=middleware):
        for check in _django_security_checks():
            for message in check(app_configs=app_configs):
                if message.id in MISSING_MIDDLEWARE_IDS:
                    # A copy: Django's messages are module-level constants.
                    messages.append(
                        checks.CheckMessage(
                            message.level,
                            message.msg,
                            hint=message.hint,
                            obj=message.obj,
                            id=MISSING_MIDDLEWARE_IDS[message.id],
                        )
                    )
                elif _depends_on_middleware(message.id):
                    messages.append(message)
    return messages


def _depends_on_middleware(check_id: str) -> bool:
    """The ids Django skips when the middleware's dotted path is absent; the others (secret
    key, DEBUG, ALLOWED_HOSTS...) Django's own run already reported."""
    return check_id in {
        "security.W004",
        "security.W005",
        "security.W006",
        "security.W008",
        "security.W016",
        "security.W019",
        "security.W021",
        "security.W022",
        "security.E023",
        "security.E024",
    }
