"""The harness the in-process CPU benchmarks share (bench/accept_cpu.py, chat_cpu.py,
read_paths_cpu.py, overhead_inprocess.py, overhead_health.py): one request through a whole
ASGI application, and a checkout measured in a child process of its own.

A child runs in the checkout it measures (``--before DIR`` is another checkout, which may
not have this file): ``run_child`` puts this file's folder at the end of the child's
``sys.path``, so ``from inprocess import asgi_request, http_scope`` is the same harness in
both trees, whatever their own bench/ holds.
"""

import asyncio
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

HARNESS = str(Path(__file__).resolve().parent)


def http_scope(
    method: str,
    path: str,
    *,
    token: str | None = None,
    body: bytes = b"",
    query: bytes = b"",
    headers: Iterable[tuple[bytes, bytes]] = (),
) -> dict:
    """The ASGI scope of one HTTP/1.1 request from 127.0.0.1 (a bearer token and a JSON
    body's headers when given)."""
    all_headers = [(b"host", b"127.0.0.1")]
    if token:
        all_headers.append((b"authorization", f"Bearer {token}".encode()))
    if body:
        all_headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    all_headers += list(headers)
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": all_headers,
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 80),
    }


async def asgi_request(
    application, scope: dict, body: bytes = b"", on_body: Callable[[dict], None] | None = None
) -> int:
    """Sends one request through ``application`` and returns the response's status once its
    last body chunk is out (``on_body`` sees every body message, e.g. an SSE stream's)."""
    status, sent, done = [], [], asyncio.Event()

    async def receive():
        if not sent:
            sent.append(1)
            return {"type": "http.request", "body": body, "more_body": False}
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message):
        if message["type"] == "http.response.start":
            status.append(message["status"])
        elif message["type"] == "http.response.body":
            if on_body is not None:
                on_body(message)
            if not message.get("more_body"):
                done.set()

    await application(dict(scope), receive, send)
    return status[0]


def app_env(*, bench_database: bool = True, **overrides: str) -> dict:
    """The environment of a child serving the app as the load harness does: production
    settings on 127.0.0.1, the request log on (one JSON line a request), the enterprise
    tier never limited, no CI switches; ``bench_database``: BENCH_DATABASE_URL /
    BENCH_REDIS_URL when set, else DATABASE_URL / REDIS_URL."""
    env = {
        **os.environ,
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
        "DJANGO_DEBUG": "false",
        "DJANGO_SECURE": "false",
        "RATE_LIMIT_ENTERPRISE": "100000000",
        "LOG_LEVEL": "INFO",
    }
    if bench_database:
        env["DATABASE_URL"] = os.environ.get("BENCH_DATABASE_URL", os.environ.get("DATABASE_URL", ""))
        env["REDIS_URL"] = os.environ.get("BENCH_REDIS_URL", os.environ.get("REDIS_URL", ""))
    env.pop("CI", None)
    return {**env, **overrides}


def run_child(tree: Path, child: str, args: Iterable[str], env: dict) -> dict:
    """Runs ``child`` (Python source printing one JSON line last) in ``tree`` with ``args``;
    its JSON, or exit with the end of its stderr (the request log goes there too, so it is
    kept in a file rather than in memory)."""
    prelude = f"import sys; sys.path.append({HARNESS!r})\n"
    with tempfile.TemporaryFile() as log:
        done = subprocess.run(
            [sys.executable, "-c", prelude + child, *args],
            cwd=tree,
            env=env,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        if done.returncode:
            log.seek(0)
            raise SystemExit(f"{tree}: {log.read()[-3000:].decode(errors='replace')}")
    return json.loads(done.stdout.strip().splitlines()[-1])
