"""Reading settings from the environment (django-environ), with a clear error for a
malformed value.

django-environ casts with ``int(value)`` / ``float(value)`` and lets the ``ValueError``
through: ``RATE_LIMIT_FREE=60/min`` ended the start in a 40-line traceback that never named
the variable. ``Env`` here raises ``ImproperlyConfigured`` naming the variable, the value
and the expected type, which the entry points (config/startup.py) print as one line and
exit 1. A module of its own so that gunicorn's master (config/gunicorn.py) reads its own
variables the same way without importing the settings.
"""

import environ
from django.core.exceptions import ImproperlyConfigured

_KINDS = {int: "an integer", float: "a number", bool: "a boolean"}


class Env(environ.Env):
    def get_value(self, var, cast=None, default=environ.Env.NOTSET, parse_default=False):
        try:
            return super().get_value(var, cast=cast, default=default, parse_default=parse_default)
        except (ValueError, TypeError) as exc:
            raw = self.ENVIRON.get(var, "")
            kind = _KINDS.get(cast, f"a valid {getattr(cast, '__name__', 'value')}")
            raise ImproperlyConfigured(f"{var} must be {kind}, got {raw!r}") from exc
