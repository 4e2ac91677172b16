"""`make bench`: the load benchmark of issue 11 on the real stack, in one command.

    .venv/bin/python bench/run.py [--only health,me] [--duration 10] [--port 8100]

Starts what production runs (PostgreSQL, Redis, one Celery worker with beat, the web server
of `make serve`: gunicorn + uvicorn workers, config/gunicorn.py) on a database and a Redis
database of its own, seeds them, drives them with wrk (installed from Debian's packages
when missing) and a few Python clients, and prints one table. Everything it started is
stopped on exit, on Ctrl-C and on failure; a failure is a message and exit status 1.

Isolation (each is overwritten at the start of a run, so give it nothing you need):
  --database-url  BENCH_DATABASE_URL  default postgres://postgres@127.0.0.1:5432/chat_bench
                  (dropped and created again; its name must contain "bench")
  --redis-url     BENCH_REDIS_URL     default redis://127.0.0.1:6379/15 (FLUSHDB), also the
                  Celery broker and the channel layer
  --port          BENCH_PORT          default 8100; the bare baseline listens on port + 1

Rate limits: the bench tenant is on the enterprise tier and the servers run with
RATE_LIMIT_ENTERPRISE=100000000 a minute: the limiter does its full work on every request
(its Redis round trips are part of what is measured) but never refuses one.
The baseline: bench/bare_asgi.py, one async Django view with no middleware, served by the
same command (gunicorn -c config/gunicorn.py) with one worker, measured in the same run:
with `--baseline each` (the default) again right before every table row, and each row's
ratio is to the baseline measured next to it, so the shared machine's drift during the run
(seen: the bare view's own rate moving by 2x within minutes) cancels; `--baseline once`
measures it only first, as the earlier runs did. `--bare-handler app` serves the bare view
by the app's own ASGI handler (config/api/asgi_handler.py, no thread hop a request) instead
of Django's stock one, the issue's baseline: the ratio then shows our middleware, auth and
work alone.
Methods and figures: docs/benchmarks.md.
"""

import argparse
import asyncio
import json
import os
import platform
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / ".venv" / "bin"
LUA = ROOT / "bench" / "wrk" / "scenario.lua"

CHAT_PROMPT = "add a task to buy milk"  # the local agent answers it with one tool call

# name: (label, wrk connections, target ratio to the bare view or None)
TABLE = {
    "bare": ("bare Django async view (baseline)", 50, None),
    "health": ("GET /health", 50, 0.80),
    "me": ("GET /api/v1/auth/me", 50, 0.50),
    "chat": ("POST /api/v1/chat (local agent, one tool call)", 50, 0.20),
    "messages": ("POST .../messages (202), 50 users", 50, 0.35),
    "replay": ("idempotent replay (POST /conversations/ same key)", 50, 0.50),
    "audits": ("GET /api/v1/audits/ page 1", 50, 0.50),
}
EXTRA = ["chat100", "audits100", "deep", "ws500", "sse", "procs2"]
ALL = [*TABLE, *EXTRA]
# What the second web process is measured on (against the same rows with one process).
PROCS2_ROWS = ["health", "me", "messages", "audits"]


class BenchError(Exception):
    """A failure worth stopping the run for: printed as one message, exit status 1."""


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- processes ---------------------------------------------------------------------------


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log_path: Path

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def children(self) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(self.popen.pid)], capture_output=True, text=True, check=False)
        return [int(pid) for pid in out.stdout.split()]

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM to its process group, SIGKILL to what is left after ``timeout``."""
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            if not self.alive():
                break
            try:
                os.killpg(self.popen.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.popen.wait(wait)
            except subprocess.TimeoutExpired:
                pass
        try:  # a worker's pool children, if the leader went first
            os.killpg(self.popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@dataclass
class Stack:
    env: dict
    tmp: Path
    port: int
    server_kind: str = "gunicorn"
    bare_handler: str = "django"
    procs: list[Proc] = field(default_factory=list)

    def spawn(self, name: str, argv: list[str], **env) -> Proc:
        log_path = self.tmp / f"{name}-{len(self.procs)}.log"
        with open(log_path, "wb") as out:
            popen = subprocess.Popen(
                argv,
                cwd=ROOT,
                env={**self.env, **env},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stopped whole
            )
        proc = Proc(name, popen, log_path)
        self.procs.append(proc)
        return proc

    def server(self, *, workers: int, bare: bool = False) -> Proc:
        port = self.port + 1 if bare else self.port
        if bare:
            app = (
                "bench.bare_asgi:application"
                if self.bare_handler == "django"
                else "bench.bare_hopfree_asgi:application"
            )
        else:
            app = "config.asgi:application"
        extra = {"DJANGO_SETTINGS_MODULE": "bench.bare_settings"} if bare else {}
        if self.server_kind == "daphne":  # for the comparison in docs/serving.md
            if workers != 1:
                raise BenchError("--server daphne runs one process; leave out procs2")
            argv = [str(BIN / "daphne"), "-v", "0", "-b", "127.0.0.1", "-p", str(port), app]
        else:
            argv = [str(BIN / "gunicorn"), "-c", "config/gunicorn.py", "-b", f"127.0.0.1:{port}", app]
        proc = self.spawn("bare" if bare else f"web{workers}", argv, WEB_CONCURRENCY=str(workers), **extra)
        url = f"http://127.0.0.1:{port}" + ("/bare" if bare else "/health")
        deadline = time.monotonic() + 90
        while True:
            if not proc.alive():
                raise BenchError(f"{proc.name} exited with {proc.popen.returncode}:\n{proc.tail()}")
            try:
                if http_get(url) == 200 and (self.server_kind == "daphne" or len(proc.children()) >= workers):
                    return proc
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise BenchError(f"{proc.name} did not answer {url} within 90 s:\n{proc.tail()}")
            time.sleep(0.2)

    def worker(self) -> Proc:
        proc = self.spawn(
            "worker",
            [
                str(BIN / "celery"),
                "-A",
                "config",
                "worker",
                "--beat",
                "--schedule",
                str(self.tmp / "beat-schedule"),
                "--loglevel=INFO",
                "--concurrency=2",
                "-n",
                f"bench-{secrets.token_hex(4)}@%h",
                "--without-mingle",
                "--without-gossip",
            ],
        )
        deadline = time.monotonic() + 60
        while " ready." not in proc.tail(200):
            if not proc.alive():
                raise BenchError(f"the Celery worker exited with {proc.popen.returncode}:\n{proc.tail()}")
            if time.monotonic() > deadline:
                raise BenchError(f"the Celery worker was not ready within 60 s:\n{proc.tail()}")
            time.sleep(0.2)
        return proc

    def run(self, argv: list[str], timeout: float = 600) -> str:
        done = subprocess.run(
            argv, cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if done.returncode != 0:
            raise BenchError(
                f"{' '.join(argv[:3])} failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
            )
        return done.stdout

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()
        self.procs.clear()


def http_get(url: str) -> int:
    import urllib.request

    with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - our own server
        return response.status


# --- environment -------------------------------------------------------------------------


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    log("wrk is missing: installing it from Debian's packages (apt-get install -y wrk)")
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    for argv in (
        sudo + ["apt-get", "install", "-y", "wrk"],
        sudo + ["apt-get", "update"],
        sudo + ["apt-get", "install", "-y", "wrk"],
    ):
        subprocess.run(argv, check=False, capture_output=True, timeout=300)
        if shutil.which("wrk"):
            return shutil.which("wrk")
    raise BenchError("could not install wrk (apt-get install -y wrk); install it and run again")


def reset_database(url: str) -> None:
    import psycopg

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    if "bench" not in name:
        raise BenchError(f"refusing to drop database {name!r}: a bench database's name contains 'bench'")
    admin = urlunsplit((parts.scheme, parts.netloc, "/postgres", parts.query, ""))
    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def reset_redis(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=3)
    try:
        client.flushdb()
    finally:
        client.close()


def bench_env(args) -> dict:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("DJANGO_", "CELERY_", "RATE_LIMIT"))}
    env.update(
        {
            "DATABASE_URL": args.database_url,
            "REDIS_URL": args.redis_url,
            "CELERY_BROKER_URL": args.redis_url,
            "CELERY_TASK_ALWAYS_EAGER": "false",
            "DJANGO_SECRET_KEY": "bench-" + secrets.token_hex(24),
            "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
            "DJANGO_SECURE": "false",
            "DJANGO_DEBUG": "false",
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "AGENT_PROVIDER": "local",
            "RATE_LIMIT_ENTERPRISE": "100000000",
            "RATE_LIMIT_AUTH_PER_IP": "100000/m",
            "JWT_ACCESS_MINUTES": "120",  # the tokens seeded at the start outlive the run
            "LOG_LEVEL": "INFO",  # as production: one JSON line a request
            "PYTHONUNBUFFERED": "1",
        }
    )
    for item in args.server_env:
        key, _, value = item.partition("=")
        env[key] = value
    return env


# --- load generators ---------------------------------------------------------------------


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def wrk(
    base: str,
    targets: list[tuple[str, str]],
    *,
    tmp: Path,
    duration: float,
    connections: int,
    method="GET",
    body="",
    header="",
    expect=(200,),
) -> dict:
    """Runs wrk (one thread; 10 s timeout, so a slow answer counts with its real latency) against ``targets``
    ((path, token) taken in turn); returns requests/s, percentiles in ms and errors."""
    targets_file = tmp / f"targets-{secrets.token_hex(4)}"
    targets_file.write_text("".join(f"{path} {token or '-'}\n" for path, token in targets))
    env = {
        **os.environ,
        "BENCH_TARGETS": str(targets_file),
        "BENCH_METHOD": method,
        "BENCH_BODY": body,
        "BENCH_HEADER": header,
    }
    argv = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{max(int(round(duration)), 1)}s",
        "--timeout",
        "10s",
        "-s",
        str(LUA),
        base,
    ]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=duration + 60, check=False)
    line = next((line for line in done.stdout.splitlines() if line.startswith("WRKJSON ")), None)
    if done.returncode != 0 or line is None:
        raise BenchError(f"wrk failed ({done.returncode}): {done.stdout[-1500:]}{done.stderr[-1500:]}")
    raw = json.loads(line.removeprefix("WRKJSON "))
    statuses = {int(code): count for code, count in raw["status"].items()}
    unexpected = sum(count for code, count in statuses.items() if code not in expect)
    errors = raw["connect"] + raw["read"] + raw["write"] + raw["timeout"] + unexpected
    return {
        "rps": raw["requests"] / (raw["duration_us"] / 1e6),
        "requests": raw["requests"],
        "p50": raw["p50_us"] / 1000,
        "p95": raw["p95_us"] / 1000,
        "p99": raw["p99_us"] / 1000,
        "max": raw["max_us"] / 1000,
        "errors": errors,
        "timeouts": raw["timeout"],
        "statuses": statuses,
    }


class Bench:
    def __init__(self, args, stack: Stack, seed: dict):
        self.args = args
        self.stack = stack
        self.seed = seed
        self.base = f"http://127.0.0.1:{args.port}"
        self.owner = seed["owner_token"]
        self.results: dict = {"table": {}, "extra": {}, "procs2": {}}

    def headers(self, token=None) -> dict:
        return {"Authorization": f"Bearer {token or self.owner}"}

    # One request of each kind first: a scenario that answers the wrong status measures
    # nothing, so it stops the run with what the server said.
    def preflight(self, method: str, path: str, *, token=None, json_body=None, headers=None, expect=200) -> dict:
        import httpx

        # The bytes wrk will send (json.dumps' spacing): an idempotency key's fingerprint is
        # of the raw body.
        content = json.dumps(json_body).encode() if json_body is not None else None
        headers = {**self.headers(token), **(headers or {})}
        if content is not None:
            headers["Content-Type"] = "application/json"
        response = httpx.request(
            method, self.base + path, content=content, headers=headers, timeout=30, trust_env=False
        )
        if response.status_code != expect:
            raise BenchError(
                f"{method} {path} answered {response.status_code}, expected {expect}: {response.text[:500]}"
            )
        return response.json()

    def compared_row(self, name: str, *, connections=None) -> dict:
        """A table row with the bare baseline measured right before it (``--baseline
        each``): ``bare_rps`` is the rate its ratio is taken against."""
        bare = None
        if self.args.baseline == "each" and name != "bare":
            bare = self.table_row("bare")["rps"]
        row = self.table_row(name, connections=connections)
        row["bare_rps"] = bare
        return row

    def table_row(self, name: str, *, connections=None) -> dict:
        connections = connections or TABLE[name][1]
        spec = self.row_spec(name)
        run = lambda duration: wrk(  # noqa: E731
            spec["base"], spec["targets"], tmp=self.stack.tmp, duration=duration, connections=connections,
            method=spec.get("method", "GET"), body=spec.get("body", ""), header=spec.get("header", ""), expect=spec["expect"],
        )  # fmt: skip
        if self.args.warmup:
            run(self.args.warmup)
        result = run(self.args.duration)
        log(
            f"  {name} x{connections}: {result['rps']:.1f} req/s p95 {result['p95']:.0f} ms errors {result['errors']} statuses {result['statuses']}"
        )
        return result

    def row_spec(self, name: str) -> dict:
        owner = self.owner
        if name == "bare":
            return {"base": f"http://127.0.0.1:{self.args.port + 1}", "targets": [("/bare", None)], "expect": (200,)}
        if name == "health":
            self.preflight("GET", "/health")
            return {"base": self.base, "targets": [("/health", None)], "expect": (200,)}
        if name == "me":
            self.preflight("GET", "/api/v1/auth/me")
            return {"base": self.base, "targets": [("/api/v1/auth/me", owner)], "expect": (200,)}
        if name == "chat":
            body = {"message": CHAT_PROMPT}
            answer = self.preflight("POST", "/api/v1/chat", json_body=body)
            if len(answer.get("tool_calls") or []) != 1:
                raise BenchError(
                    f"the local agent made {len(answer.get('tool_calls') or [])} tool calls, expected 1: {answer}"
                )
            return {
                "base": self.base,
                "targets": [("/api/v1/chat", owner)],
                "method": "POST",
                "body": json.dumps(body),
                "expect": (200,),
            }
        if name == "messages":
            body = {"content": "hello from the bench"}
            user = self.seed["users"][0]
            self.preflight(
                "POST",
                f"/api/v1/conversations/{user['conversation']}/messages/",
                token=user["token"],
                json_body=body,
                expect=202,
            )
            targets = [(f"/api/v1/conversations/{u['conversation']}/messages/", u["token"]) for u in self.seed["users"]]
            return {"base": self.base, "targets": targets, "method": "POST", "body": json.dumps(body), "expect": (202,)}
        if name == "replay":
            body = {"title": "replayed"}
            key = "bench-replay-" + secrets.token_hex(4)
            first = self.preflight(
                "POST", "/api/v1/conversations/", json_body=body, headers={"Idempotency-Key": key}, expect=201
            )
            again = self.preflight(
                "POST", "/api/v1/conversations/", json_body=body, headers={"Idempotency-Key": key}, expect=201
            )
            if again.get("id") != first.get("id"):
                raise BenchError(f"the same Idempotency-Key created two conversations: {first} {again}")
            return {
                "base": self.base, "targets": [("/api/v1/conversations/", owner)], "method": "POST",
                "body": json.dumps(body), "header": f"Idempotency-Key: {key}", "expect": (201,),
            }  # fmt: skip
        if name == "audits":
            page = self.preflight("GET", "/api/v1/audits/")
            if not page.get("results"):
                raise BenchError("the audits list is empty: the seed did not reach the bench tenant")
            return {"base": self.base, "targets": [("/api/v1/audits/", owner)], "expect": (200,)}
        raise KeyError(name)

    def purge_queue(self) -> None:
        """The 202 path leaves agent runs queued by the thousand: drop them so they do not
        load the machine during the next scenario."""
        self.stack.run([str(BIN / "celery"), "-A", "config", "purge", "-f"], timeout=60)
        time.sleep(2)

    # --- scenarios beyond the table ---

    async def chat100(self) -> dict:
        import httpx

        limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
        async with httpx.AsyncClient(
            base_url=self.base, headers=self.headers(), timeout=60, limits=limits, trust_env=False
        ) as client:
            gate = asyncio.Event()

            async def one():
                await gate.wait()
                started = time.perf_counter()
                try:
                    response = await client.post("/api/v1/chat", json={"message": CHAT_PROMPT})
                    return response.status_code, time.perf_counter() - started
                except httpx.HTTPError as exc:
                    return type(exc).__name__, time.perf_counter() - started

            tasks = [asyncio.create_task(one()) for _ in range(100)]
            await asyncio.sleep(0.2)
            started = time.perf_counter()
            gate.set()
            outcomes = await asyncio.gather(*tasks)
            wall = time.perf_counter() - started
        latencies = [took for _, took in outcomes]
        answered = sum(1 for status, _ in outcomes if status == 200)
        return {
            "answered": answered,
            "wall_s": wall,
            "p50_s": statistics.median(latencies),
            "max_s": max(latencies),
            "others": sorted({str(status) for status, _ in outcomes if status != 200}),
            "met": answered == 100 and max(latencies) <= 2.0,
        }

    def deep(self) -> dict:
        import httpx

        path = f"/api/v1/audits/?page_size=50&cursor={self.seed['deep_cursor']}"
        samples = []
        with httpx.Client(base_url=self.base, headers=self.headers(), timeout=30, trust_env=False) as client:
            for n in range(10 + self.args.samples):
                started = time.perf_counter()
                response = client.get(path)
                took = (time.perf_counter() - started) * 1000
                if response.status_code != 200 or len(response.json()["results"]) != 50:
                    raise BenchError(f"deep audit page: {response.status_code} {response.text[:300]}")
                if n >= 10:
                    samples.append(took)
        p95 = percentile(samples, 95)
        return {"rows": self.seed.get("audit_rows"), "p50_ms": percentile(samples, 50), "p95_ms": p95, "met": p95 <= 20}

    def sse(self) -> dict:
        import httpx

        samples = []
        with httpx.Client(base_url=self.base, headers=self.headers(), timeout=30, trust_env=False) as client:
            for n in range(3 + self.args.samples // 3):
                started = time.perf_counter()
                first = None
                with client.stream("POST", "/api/v1/chat/stream", json={"message": CHAT_PROMPT}) as response:
                    if response.status_code != 200:
                        raise BenchError(f"chat stream answered {response.status_code}: {response.read()[:300]}")
                    for line in response.iter_lines():
                        if first is None and line.startswith(("event:", "data:")):
                            first = (time.perf_counter() - started) * 1000
                if first is None:
                    raise BenchError("chat stream ended without an event")
                if n >= 3:
                    samples.append(first)
        p50 = percentile(samples, 50)
        return {"p50_ms": p50, "p95_ms": percentile(samples, 95), "samples": len(samples), "met": p50 <= 15}

    async def ws(self, clients: int) -> dict:
        import httpx
        from websockets.asyncio.client import connect

        conversation = self.seed["ws_conversation"]
        uri = f"ws://127.0.0.1:{self.args.port}/ws/v1/conversations/{conversation}/"
        gate = asyncio.Semaphore(50)
        sockets, refused = [], []
        tokens = [self.owner] + [user["token"] for user in self.seed["users"]]

        async def open_one(n):
            async with gate:
                try:
                    token = tokens[n % len(tokens)]
                    ws = await connect(
                        uri, subprotocols=["bearer", token], open_timeout=60, ping_interval=None, max_queue=None
                    )
                    await ws.send(json.dumps({"type": "ping", "ref": str(n)}))
                    while json.loads(await asyncio.wait_for(ws.recv(), 60)).get("type") != "pong":
                        pass  # subscribed: the consumer answers a ping after its connect ran
                    sockets.append(ws)
                except Exception as exc:  # noqa: BLE001 - counted and reported
                    refused.append(type(exc).__name__)

        started = time.perf_counter()
        await asyncio.gather(*(open_one(n) for n in range(clients)))
        connect_s = time.perf_counter() - started
        created: list[float] = []
        replied: list[float] = []
        t0 = 0.0
        message_id = None
        posted = asyncio.Event()

        async def listen(ws):
            got_created = False
            try:
                while True:
                    frame = json.loads(await ws.recv())
                    now = time.perf_counter()
                    kind, data = frame.get("type"), frame.get("data") or {}
                    if kind == "message.created" and not got_created:
                        await posted.wait()
                        if data.get("id") == message_id:
                            created.append(now - t0)
                            got_created = True
                    elif kind == "message.completed" and got_created:
                        replied.append(now - t0)
                        return
            except Exception:  # noqa: BLE001 - a closed socket stops listening
                return

        listeners = [asyncio.create_task(listen(ws)) for ws in sockets]
        await asyncio.sleep(0.5)
        async with httpx.AsyncClient(base_url=self.base, headers=self.headers(), timeout=30, trust_env=False) as client:
            t0 = time.perf_counter()
            response = await client.post(
                f"/api/v1/conversations/{conversation}/messages/", json={"content": CHAT_PROMPT}
            )
            if response.status_code != 202:
                raise BenchError(
                    f"posting to the listened conversation answered {response.status_code}: {response.text[:300]}"
                )
            body = response.json()
            message_id = (body.get("message") or body).get("id")
            posted.set()
        await asyncio.wait(listeners, timeout=self.args.ws_wait)
        for task in listeners:
            task.cancel()
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
        p95 = percentile(created, 95) * 1000 if created else float("nan")
        return {
            "clients": clients,
            "connected": len(sockets),
            "refused": len(refused),
            "connect_s": connect_s,
            "received": len(created),
            "p50_ms": percentile(created, 50) * 1000 if created else float("nan"),
            "p95_ms": p95,
            "last_ms": max(created) * 1000 if created else float("nan"),
            "reply_received": len(replied),
            "reply_last_s": max(replied) if replied else float("nan"),
            "met": len(created) == clients and p95 <= 250 and len(replied) == clients and max(replied) <= 2.0,
        }


# --- report ------------------------------------------------------------------------------


def fmt(value, spec=".0f") -> str:
    return "—" if value is None or value != value else format(value, spec)


def report(results: dict, args, started: float) -> str:
    out = []
    table = results["table"]
    bare = table.get("bare", {}).get("rps")
    out.append(f"\n## Results ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} cores, "
               f"{args.duration:.0f} s per row, one web process ({args.server}), wrk -t1 --timeout 10s, "
               f"bare view on the {args.bare_handler} handler)\n")  # fmt: skip
    out.append(
        "| scenario | conns | requests/s | p50 ms | p95 ms | p99 ms | errors | bare req/s next to it | ratio to bare | target | met |"
    )
    out.append("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, (label, conns, target) in TABLE.items():
        if name not in table:
            continue
        row = table[name]
        neighbour = row.get("bare_rps") or bare
        ratio = row["rps"] / neighbour if neighbour else None
        met = "" if target is None or ratio is None else ("met" if ratio >= target else "NOT met")
        errors = f"{row['errors']}" + (f" ({row['timeouts']} timeouts)" if row["timeouts"] else "")
        out.append(
            f"| {label} | {conns} | {row['rps']:.1f} | {row['p50']:.0f} | {row['p95']:.0f} | {row['p99']:.0f} | {errors} | "
            f"{fmt(neighbour, '.1f') if name != 'bare' else ''} | {fmt(ratio, '.2f')} | {'≥ ' + format(target, '.2f') if target else ''} | {met} |"
        )
    extra = results["extra"]
    lines = []
    yes = lambda ok: "met" if ok else "NOT met"  # noqa: E731
    if "chat100" in extra:
        r = extra["chat100"]
        lines.append(f"| 100 concurrent `POST /api/v1/chat` | {r['answered']}/100 answered (200); wall {r['wall_s']:.2f} s, "
                     f"median {r['p50_s']:.2f} s, slowest {r['max_s']:.2f} s{'; other outcomes: ' + ', '.join(r['others']) if r['others'] else ''} "
                     f"| all within 2 s | {yes(r['met'])} |")  # fmt: skip
    if "messages" in table:
        r = table["messages"]
        lines.append(f"| 202 acceptance, 50 concurrent users | p95 {r['p95']:.0f} ms ({r['rps']:.1f} req/s, {r['errors']} errors) "
                     f"| p95 < 500 ms | {yes(r['p95'] < 500 and not r['errors'])} |")  # fmt: skip
    if "audits100" in extra:
        r = extra["audits100"]
        lines.append(f"| 100 concurrent audit lists (page 1) | p95 {r['p95']:.0f} ms, p50 {r['p50']:.0f} ms ({r['rps']:.1f} req/s, "
                     f"{r['errors']} errors) | p95 < 200 ms | {yes(r['p95'] < 200 and not r['errors'])} |")  # fmt: skip
    if "deep" in extra:
        r = extra["deep"]
        lines.append(f"| audits deep page (100 records from the oldest) on {r['rows']:,} rows, one client | p95 {r['p95_ms']:.1f} ms, "
                     f"p50 {r['p50_ms']:.1f} ms | p95 ≤ 20 ms | {yes(r['met'])} |")  # fmt: skip
    if "ws500" in extra:
        r = extra["ws500"]
        lines.append(f"| {r['clients']} WebSocket clients on one conversation | {r['connected']} connected ({r['refused']} refused, "
                     f"{r['connect_s']:.1f} s), {r['received']} received the posted message: p50 {fmt(r['p50_ms'])} ms, "
                     f"p95 {fmt(r['p95_ms'])} ms, last {fmt(r['last_ms'])} ms; agent reply reached {r['reply_received']}, "
                     f"the last after {fmt(r['reply_last_s'], '.2f')} s | p95 ≤ 250 ms, reply to all within 2 s | {yes(r['met'])} |")  # fmt: skip
    if "sse" in extra:
        r = extra["sse"]
        lines.append(f"| SSE time to first event, `POST /api/v1/chat/stream` | p50 {r['p50_ms']:.1f} ms, p95 {r['p95_ms']:.1f} ms "
                     f"({r['samples']} turns, one client) | p50 ≤ 15 ms | {yes(r['met'])} |")  # fmt: skip
    if lines:
        out.append("\n| scenario | figures | target | met |")
        out.append("|---|---|---|---|")
        out.extend(lines)
    if results["procs2"]:
        out.append("\n1 vs 2 web processes (WEB_CONCURRENCY), 50 connections:\n")
        out.append("| scenario | 1 process req/s (p95 ms) | 2 processes req/s (p95 ms) | speed-up |")
        out.append("|---|---|---|---|")
        for name, two in results["procs2"].items():
            one = table.get(name)
            if one:
                out.append(f"| {TABLE[name][0]} | {one['rps']:.1f} ({one['p95']:.0f}) | {two['rps']:.1f} ({two['p95']:.0f}) | "
                           f"{two['rps'] / one['rps']:.2f}× |")  # fmt: skip
    out.append(f"\nwall time of the run: {time.monotonic() - started:.0f} s")
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="", help=f"comma-separated subset of: {','.join(ALL)} (bare always runs)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of load per wrk row (default 10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of load before each row, not counted")
    parser.add_argument("--samples", type=int, default=100, help="sequential requests for the deep page (SSE: a third)")
    parser.add_argument("--ws-clients", type=int, default=500)
    parser.add_argument("--ws-wait", type=float, default=30.0, help="seconds to wait for every WebSocket client")
    parser.add_argument("--audit-rows", type=int, default=1_000_000)
    parser.add_argument(
        "--database-url", default=os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/chat_bench")
    )
    parser.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/15"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("BENCH_PORT", "8100")))
    parser.add_argument(
        "--server-env", action="append", default=[], metavar="KEY=VALUE", help="extra setting for the servers"
    )
    parser.add_argument(
        "--server",
        choices=["gunicorn", "daphne"],
        default="gunicorn",
        help="daphne: one daphne process instead (comparison)",
    )
    parser.add_argument(
        "--baseline",
        choices=["each", "once"],
        default="each",
        help="each (default): the bare view measured again right before every table row, each ratio to its neighbour; "
        "once: measured first only",
    )
    parser.add_argument(
        "--bare-handler",
        choices=["django", "app"],
        default="django",
        help="django (default, the issue's baseline): the bare view on Django's stock ASGI handler, with its two "
        "thread hops a request; app: on the app's handler (config/api/asgi_handler.py), which makes none",
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    selected = [name.strip() for name in args.only.split(",") if name.strip()] or ALL
    unknown = sorted(set(selected) - set(ALL))
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; choose from {','.join(ALL)}")
    selected = ["bare", *selected] if "bare" not in selected else selected
    if "procs2" in selected:
        selected += [name for name in PROCS2_ROWS if name not in selected]
    started = time.monotonic()

    def interrupted(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    tmp = Path(tempfile.mkdtemp(prefix="bench-"))
    stack = Stack(env=bench_env(args), tmp=tmp, port=args.port, server_kind=args.server, bare_handler=args.bare_handler)
    try:
        ensure_wrk()
        log(
            f"machine: {platform.platform()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}; logs in {tmp}"
        )
        log(f"fresh database {urlsplit(args.database_url).path.lstrip('/')} and Redis {args.redis_url}")
        reset_database(args.database_url)
        reset_redis(args.redis_url)
        stack.run([str(BIN / "python"), "manage.py", "migrate", "--noinput", "-v", "0"])
        needs_audits = {"audits", "audits100", "deep"} & set(selected)
        rows = args.audit_rows if needs_audits else 0
        log(f"seeding (audit rows: {rows:,})")
        out = stack.run([str(BIN / "python"), "bench/seed.py", "--audit-rows", str(rows)])
        seed = json.loads(next(line for line in out.splitlines() if line.startswith("SEED ")).removeprefix("SEED "))
        if rows:
            log(f"  {rows:,} audit rows in {seed['audit_seed_seconds']} s")
        log("starting the Celery worker, the bare baseline and the app (1 web process)")
        stack.worker()
        stack.server(workers=1, bare=True)
        web = stack.server(workers=1)
        bench = Bench(args, stack, seed)
        results = bench.results
        # Order: the 202 path last among the rows, so its queued agent runs load nothing else.
        for name in ["bare", "health", "me", "replay", "audits", "chat"]:
            if name in selected:
                results["table"][name] = bench.compared_row(name)
        if "audits100" in selected:
            results["extra"]["audits100"] = bench.table_row("audits", connections=100)
        if "deep" in selected:
            results["extra"]["deep"] = bench.deep()
            log(f"  deep page p95 {results['extra']['deep']['p95_ms']:.1f} ms")
        if "chat100" in selected:
            results["extra"]["chat100"] = asyncio.run(bench.chat100())
            log(f"  chat100: {results['extra']['chat100']}")
        if "sse" in selected:
            results["extra"]["sse"] = bench.sse()
            log(f"  sse: {results['extra']['sse']}")
        if "ws500" in selected:
            results["extra"]["ws500"] = asyncio.run(bench.ws(args.ws_clients))
            log(f"  ws: {results['extra']['ws500']}")
        if "messages" in selected:
            results["table"]["messages"] = bench.compared_row("messages")
            bench.purge_queue()
        if "procs2" in selected:
            log("restarting the app with 2 web processes")
            web.stop()
            stack.procs.remove(web)
            stack.server(workers=2)
            for name in PROCS2_ROWS:
                results["procs2"][name] = bench.table_row(name)
                if name == "messages":
                    # Its queued runs would load the rows after it (the worker executing
                    # them on the same cores), as in the one-process order above.
                    bench.purge_queue()
        for proc in stack.procs:
            if not proc.alive():
                raise BenchError(f"{proc.name} died during the run:\n{proc.tail()}")
        print(report(results, args, started))
        if args.json:
            args.json.write_text(json.dumps(results, indent=2, default=str))
        return 0
    except BenchError as exc:
        print(f"bench failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench interrupted", file=sys.stderr)
        return 130
    finally:
        stack.stop_all()


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
