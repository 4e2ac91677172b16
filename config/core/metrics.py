"""Prometheus metrics of the process (served at /metrics). Every entry point records
through these functions, so names and labels stay in one place."""

from prometheus_client import Counter, Gauge, Histogram

HTTP_REQUESTS = Counter(
    "http_requests_total", "HTTP requests by method, route template and status", ["method", "route", "status"]
)
HTTP_LATENCY = Histogram(
    "http_request_duration_seconds",
    "HTTP request latency by method and route template",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
AGENT_RUNS = Counter("agent_runs_total", "Agent runs by provider and outcome", ["provider", "outcome"])
AGENT_RUN_LATENCY = Histogram(
    "agent_run_duration_seconds",
    "Agent run latency by provider",
    ["provider"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
CELERY_TASKS = Counter("celery_tasks_total", "Celery task outcomes by task name", ["task", "outcome"])
# livesum: in multiprocess mode (the Celery worker's endpoint) the open connections of the
# processes still alive; ignored in daphne's single process.
WEBSOCKET_CONNECTIONS = Gauge(
    "websocket_connections_open", "WebSocket connections currently open", multiprocess_mode="livesum"
)
RATE_LIMIT_REJECTIONS = Counter("rate_limit_rejections_total", "Requests refused by a rate limit", ["scope"])
IDEMPOTENT_REPLAYS = Counter("idempotent_replays_total", "Responses replayed for a repeated Idempotency-Key")


# Methods that get a label value of their own; any other (clients may send anything) is
# "other", so made-up methods cannot grow the series without bound.
STANDARD_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"})
OTHER_METHOD = "other"


def method_label(method: str) -> str:
    return method if method in STANDARD_METHODS else OTHER_METHOD


# The labelled children of the two request metrics, by (method, route, status): the set is
# bounded (standard methods x route templates x statuses) and ``labels()`` takes a lock and
# builds its key on every call; a child, once made, is the same object for good.
_REQUEST_CHILDREN: dict[tuple[str, str, int], tuple] = {}


def observe_request(method: str, route: str, status: int, seconds: float) -> None:
    key = (method, route, status)
    children = _REQUEST_CHILDREN.get(key)
    if children is None:
        label = method_label(method)
        children = (HTTP_REQUESTS.labels(label, route, str(status)), HTTP_LATENCY.labels(label, route))
        if len(_REQUEST_CHILDREN) < 10_000:  # made-up methods all map to "other": bound the keys
            _REQUEST_CHILDREN[key] = children
    children[0].inc()
    children[1].observe(seconds)


def observe_agent_run(provider: str, outcome: str, seconds: float) -> None:
    AGENT_RUNS.labels(provider, outcome).inc()
    AGENT_RUN_LATENCY.labels(provider).observe(seconds)
