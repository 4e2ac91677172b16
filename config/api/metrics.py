"""Moved to ``config.core.metrics`` (services and tasks record into them too); these names
stay importable from here until the imports are updated."""

from config.core.metrics import (  # noqa: F401 - re-exported
    AGENT_RUN_LATENCY,
    AGENT_RUNS,
    CELERY_TASKS,
    HTTP_LATENCY,
    HTTP_REQUESTS,
    IDEMPOTENT_REPLAYS,
    OTHER_METHOD,
    RATE_LIMIT_REJECTIONS,
    STANDARD_METHODS,
    WEBSOCKET_CONNECTIONS,
    method_label,
    observe_agent_run,
    observe_request,
)
