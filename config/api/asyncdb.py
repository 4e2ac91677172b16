"""Read-only PostgreSQL queries from the event loop, without a thread hop.

Django's ORM is sync: under ASGI an async view reaches it through a thread (asgiref's
per-request executor), and each query pays the hop there and back plus the ORM's SQL
compilation. For a hot read whose SQL is known in advance (the audit list page,
``audits.selectors.audit_record_page_statement``) this module runs the statement on a
psycopg ``AsyncConnection`` in the event loop itself.

What callers may rely on:

- **Same values as the ORM.** Connections are made from Django's own connection
  parameters for the alias (``DATABASES[alias]``: database, user, host, port, OPTIONS) with
  Django's adapters (``jsonb`` comes back as text, for ``json.loads`` as ``JSONField``
  does; ``timestamptz`` as aware datetimes in Django's connection time zone) and in
  autocommit, as Django's connections are.
- **One pool per event loop** (``psycopg_pool.AsyncConnectionPool``), opened at first use
  with ``ASYNC_DB_POOL_MIN_SIZE``/``ASYNC_DB_POOL_MAX_SIZE`` connections and
  ``DB_POOL_TIMEOUT`` to wait for one. It is separate from Django's sync pool: budget
  PostgreSQL ``max_connections`` >= processes x (``DB_POOL_MAX_SIZE`` +
  ``ASYNC_DB_POOL_MAX_SIZE``). A pool whose loop has closed is discarded (its connections
  closed) when the next loop opens one (the test suite runs a loop per test); a server
  process has one loop and keeps its pool until it exits.
- **Outages are errors, not hangs.** PostgreSQL stopped: no connection within the pool's
  timeout raises ``psycopg_pool.PoolTimeout``; a connection lost mid-query raises
  ``psycopg.OperationalError``. Both are the 503 ``dependency_unavailable`` envelope of
  the API (``config.api.errors.dependency_failure``). A statement that fails because its
  pooled connection died (a PostgreSQL restart since it was opened) is retried once on
  another connection: it is a read, running it twice changes nothing.
- Only for reads that need no transaction of the request (autocommit, one statement).

``available()`` says whether the alias is PostgreSQL (with ``ASYNC_DB_POOL_MAX_SIZE`` > 0);
elsewhere (the embedded SQLite default, or the switch off) callers keep their ORM path.
"""

from __future__ import annotations

import asyncio
import logging

from django.conf import settings
from django.db import connections

logger = logging.getLogger(__name__)

# What the pool's connections are called in pg_stat_activity.
APPLICATION_NAME = "asyncdb"

# (loop, alias) -> pool. A loop is only compared by identity and asked is_closed().
_pools: dict[tuple[asyncio.AbstractEventLoop, str], object] = {}


def available(alias: str = "default") -> bool:
    """Whether ``fetch_all`` serves ``alias``: PostgreSQL, and the async pool not turned off."""
    # From the settings, not ``connections[alias]``: in the event loop that would build a
    # DatabaseWrapper for each request's context.
    engine = settings.DATABASES[alias]["ENGINE"]
    return engine == "django.db.backends.postgresql" and getattr(settings, "ASYNC_DB_POOL_MAX_SIZE", 0) > 0


def _connection_kwargs(alias: str) -> dict:
    """psycopg.connect's arguments for ``alias`` as Django computes them, for an async
    connection: Django's adapters (its ``context``), autocommit, no sync cursor class.

    One change to the adapters: with a UTC session (``USE_TZ``, Django's default) a
    ``timestamptz`` is loaded by psycopg's compiled loader, which gives the same aware UTC
    datetime (``datetime.timezone.utc``) as Django's loader, a Python subclass of the
    pure-Python one: half the CPU of reading a page of audit rows."""
    import psycopg
    from psycopg import adapt, postgres
    from psycopg.pq import Format

    wrapper = connections[alias]
    params = wrapper.get_connection_params()
    params.pop("cursor_factory", None)  # Django's sync Cursor; the async default is wanted
    params["autocommit"] = True
    # Named in pg_stat_activity (unless OPTIONS names the application already).
    params.setdefault("application_name", APPLICATION_NAME)
    if settings.USE_TZ and wrapper.timezone_name == "UTC":
        context = adapt.AdaptersMap(params["context"])
        oid = postgres.types["timestamptz"].oid
        context.register_loader(oid, psycopg.adapters.get_loader(oid, Format.TEXT))
        params["context"] = context
    return params


def _configure(alias: str):
    timezone_name = connections[alias].timezone_name

    async def configure(connection) -> None:
        """Django's session time zone on a new connection (as
        ``DatabaseWrapper._configure_timezone``): the ORM's connections' session."""
        if timezone_name and connection.info.parameter_status("TimeZone") != timezone_name:
            await connection.execute("SELECT set_config('TimeZone', %s, false)", [timezone_name])

    return configure


def _discard(pool) -> None:
    """Closes the connections of a pool whose event loop has closed (its workers died with
    the loop; ``close()`` cannot be awaited there). libpq's ``finish`` is synchronous."""
    for connection in list(getattr(pool, "_pool", ())):
        try:
            connection.pgconn.finish()
        except Exception:  # noqa: BLE001 - already gone
            pass
    pool._closed = True  # noqa: SLF001 - so that nothing hands out or returns to it again


async def _pool(alias: str):
    from psycopg_pool import AsyncConnectionPool

    loop = asyncio.get_running_loop()
    pool = _pools.get((loop, alias))
    if pool is not None:
        return pool
    for key in [key for key in _pools if key[0].is_closed()]:
        _discard(_pools.pop(key))
    pool = AsyncConnectionPool(
        kwargs=_connection_kwargs(alias),
        min_size=settings.ASYNC_DB_POOL_MIN_SIZE,
        max_size=settings.ASYNC_DB_POOL_MAX_SIZE,
        timeout=settings.DB_POOL_TIMEOUT,
        configure=_configure(alias),
        name=f"async-{alias}",
        open=False,
    )
    _pools[(loop, alias)] = pool
    await pool.open(wait=False)  # PostgreSQL down at start: the first checkout times out
    return pool


async def fetch_all(sql: str, params, *, alias: str = "default") -> list[tuple]:
    """The rows of one read-only statement (``%s`` placeholders), run in the event loop on a
    pooled connection of ``alias``. Raises ``PoolTimeout``/``OperationalError`` on an outage
    (see the module docstring)."""
    import psycopg

    pool = await _pool(alias)
    for attempt in (1, 2):
        async with pool.connection() as connection:
            try:
                cursor = await connection.execute(sql, params)
                return await cursor.fetchall()
            except psycopg.OperationalError:
                if attempt == 2 or not connection.broken:
                    raise
        # The server dropped a pooled connection (a restart): its idle siblings are likely
        # dead too. Check them (one round trip each, only now), then run it again.
        logger.info("retrying a read on another connection: the pooled one was broken")
        await pool.check()
    raise AssertionError("unreachable")


def fetch_all_sync(sql: str, params, *, alias: str = "default") -> list[tuple]:
    """``fetch_all`` on Django's own connection of ``alias`` (sync code, the WSGI handler):
    the same statement and values, inside the caller's transaction if there is one."""
    with connections[alias].cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


async def aclose_all() -> None:
    """Closes the running loop's pools (tests; a server process keeps its pool)."""
    loop = asyncio.get_running_loop()
    for key in [key for key in _pools if key[0] is loop]:
        await _pools.pop(key).close()


def discard_all() -> None:
    """Closes every pool, from sync code between uses of its loop (tests' teardown): on
    its loop when that loop is idle (workers stopped, connections closed), else its
    connections at once."""
    for key in list(_pools):
        loop, pool = key[0], _pools.pop(key)
        if loop.is_closed() or loop.is_running():
            _discard(pool)
            continue
        try:
            loop.run_until_complete(pool.close(timeout=2))
        except Exception:  # noqa: BLE001 - then at least its connections go
            _discard(pool)
