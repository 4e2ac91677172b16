from .env import env

# Structured JSON logs, one line per event, each carrying the request id; credentials in
# URLs (?token=) and JWTs are redacted from every line.
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_context": {"()": "config.api.logging.RequestContextFilter"}},
    "formatters": {
        "json": {
            "()": "config.api.logging.RedactingJsonFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
        }
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "json", "filters": ["request_context"]},
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        # Our request log replaces Django's own; keep its noise down.
        "django.request": {"level": "ERROR"},
        "django.server": {"level": "WARNING"},
    },
}

# Optional bearer token that /metrics demands when set.
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")

# Seconds the server process may take to stop after SIGTERM before it is ended anyway
# (requests still in flight then are cut off; a rolling deploy waits at most this long).
# 0 disables the bound.
SHUTDOWN_GRACE_SECONDS = env.float("SHUTDOWN_GRACE_SECONDS", default=10.0)
