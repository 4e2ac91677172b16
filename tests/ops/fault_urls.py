"""Views that reach a dependency that is not there (a closed port on 127.0.0.1), through
the real clients: the errors they raise are the ones an outage raises."""

import socket

from django.urls import path
from rest_framework.decorators import api_view, permission_classes
from rest_framework.permissions import AllowAny

from config.urls import urlpatterns as base_patterns


def closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _database():
    from django.db.backends.postgresql.base import DatabaseWrapper

    wrapper = DatabaseWrapper(
        {
            "NAME": "gone",
            "USER": "postgres",
            "PASSWORD": "",
            "HOST": "127.0.0.1",
            "PORT": str(closed_port()),
            "OPTIONS": {"connect_timeout": 2},
            "TIME_ZONE": None,
            "CONN_MAX_AGE": 0,
            "CONN_HEALTH_CHECKS": False,
            "AUTOCOMMIT": True,
            "ATOMIC_REQUESTS": False,
            "TEST": {},
        }
    )
    wrapper.ensure_connection()  # django.db.OperationalError


def _pool():
    from psycopg_pool import ConnectionPool

    with ConnectionPool(
        f"host=127.0.0.1 port={closed_port()} connect_timeout=1", min_size=0, max_size=1, open=True
    ) as pool:
        pool.getconn(timeout=0.3)  # psycopg_pool.PoolTimeout


def _redis():
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    redis.Redis(
        port=closed_port(), socket_connect_timeout=1, retry=Retry(NoBackoff(), 0)
    ).ping()  # redis.ConnectionError


def _broker():
    from kombu import Connection

    with Connection(f"redis://127.0.0.1:{closed_port()}/0") as conn:
        conn.ensure_connection(max_retries=1, timeout=1)  # kombu.exceptions.OperationalError


OUTAGES = {"database": _database, "pool": _pool, "redis": _redis, "broker": _broker}


def plain_outage(request, kind):
    OUTAGES[kind]()


@api_view(["GET"])
@permission_classes([AllowAny])
def drf_outage(request, kind):
    OUTAGES[kind]()


urlpatterns = [
    path("api/v1/test/plain-outage/<str:kind>", plain_outage),
    path("api/v1/test/drf-outage/<str:kind>", drf_outage),
    *base_patterns,
]
