"""Real processes over real sockets: a daphne server and a Celery worker started by the
test, both on the test database pytest-django created and on the run's Redis, with the
``openai`` provider pointed at a fake OpenAI-compatible server in the test process.

Only the subprocesses talk to the Celery broker (the test posts messages over HTTP), and
that broker is a Redis database of its own (``E2E_BROKER_URL``, by default the test
run's Redis, ``TEST_REDIS_URL`` in tests/redis_isolation.py, with db index + 7, which is
``REDIS_URL``'s index + 8 when the test database is derived from it), so no other test
run takes these tasks nor leaves tasks for them. Its Celery keys are deleted before and
after each test. Every process is killed at teardown, also when the test failed, and its
log is printed then (pytest shows it with the failure).
"""

import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest

from tests.chat.fake_openai import FakeOpenAI
from tests.redis_isolation import redis_db, with_redis_db

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / ".venv" / "bin"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 5.0


def wait_for(predicate: Callable[[], object], *, timeout: float, interval: float = 0.1, what: str = "condition"):
    """Polls ``predicate`` until it returns something truthy (returned), or fails after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _with_path(url: str, path: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, parts.fragment))


def broker_url() -> str:
    """The e2e run's own Redis database for the Celery broker (REDIS_URL here is already
    the test run's Redis: tests/conftest.py set it)."""
    if os.environ.get("E2E_BROKER_URL"):
        return os.environ["E2E_BROKER_URL"]
    test_redis = os.environ["REDIS_URL"]
    return with_redis_db(test_redis, redis_db(test_redis) + 7)


def _empty_broker(url: str) -> None:
    """Drops queued and unacknowledged tasks (kombu's keys) left by an earlier e2e run or
    by a worker this run killed: their run ids would point into another database."""
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=2)
    try:
        for pattern in ("default*", "unacked*", "_kombu.binding*"):
            keys = list(client.scan_iter(match=pattern, count=500))
            if keys:
                client.delete(*keys)
    finally:
        client.close()


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.popen.poll() is None

    def children(self) -> list[int]:
        """Pids of the direct children (for a prefork worker: its pool processes)."""
        out = subprocess.run(["pgrep", "-P", str(self.pid)], capture_output=True, text=True, check=False).stdout
        return [int(pid) for pid in out.split()]

    def kill_group(self, sig: int = signal.SIGKILL) -> None:
        try:
            os.killpg(self.pid, sig)  # started in a session of its own: pgid == pid
        except ProcessLookupError:
            pass

    def signal(self, sig: int) -> None:
        if self.alive():
            self.kill_group(sig)

    def wait(self, timeout: float) -> None:
        try:
            self.popen.wait(max(timeout, 0.01))
        except subprocess.TimeoutExpired:
            pass

    def fail_with_log(self, why: str):
        tail = "\n".join(self.log().splitlines()[-60:])
        pytest.fail(f"{self.name}: {why}\n--- {self.name} log (tail) ---\n{tail}", pytrace=False)


@dataclass
class Stack:
    """The processes of one test, started on demand and all stopped at teardown."""

    env: dict
    tmp: Path
    fake: FakeOpenAI
    procs: list[Proc] = field(default_factory=list)
    base_url: str | None = None
    worker_metrics_url: str | None = None

    def _spawn(self, name: str, argv: list[str]) -> Proc:
        log_path = self.tmp / f"{name}-{len(self.procs)}.log"
        with open(log_path, "wb") as log:
            popen = subprocess.Popen(
                argv,
                cwd=ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: teardown kills it whole
            )
        proc = Proc(name, popen, log_path)
        self.procs.append(proc)
        return proc

    def start_daphne(self) -> Proc:
        return self.wait_daphne(self.spawn_daphne())

    def spawn_daphne(self) -> Proc:
        port = _free_port()
        proc = self._spawn(
            # -v 0: no access log of daphne's own, as `make run` (our JSON line is the one).
            "daphne",
            [str(BIN / "daphne"), "-v", "0", "-b", "127.0.0.1", "-p", str(port), "config.asgi:application"],
        )
        self.base_url = f"http://127.0.0.1:{port}"
        return proc

    def wait_daphne(self, proc: Proc) -> Proc:
        """Returns once daphne answers ``GET /health``; fails with its log otherwise."""

        def healthy():
            if not proc.alive():
                proc.fail_with_log(f"exited with {proc.popen.returncode} before answering /health")
            try:
                return httpx.get(f"{self.base_url}/health", timeout=1.0, trust_env=False).status_code == 200
            except httpx.HTTPError:
                return False

        deadline = time.monotonic() + START_TIMEOUT
        while not healthy():
            if time.monotonic() > deadline:
                proc.fail_with_log(f"no answer on /health within {START_TIMEOUT:.0f}s")
            time.sleep(0.1)
        return proc

    def start_worker(self) -> Proc:
        return self.wait_worker(self.spawn_worker())

    def spawn_worker(self, *, beat: bool = False) -> Proc:
        """A worker; with ``beat`` it also runs the periodic tasks (the outbox relay, the
        sweeps), as ``make worker`` does."""
        # Each worker serves its Prometheus metrics on a port of its own.
        self.env["CELERY_METRICS_PORT"] = str(_free_port())
        self.worker_metrics_url = f"http://127.0.0.1:{self.env['CELERY_METRICS_PORT']}/metrics"
        beat_args = ["--beat", "--schedule", str(self.tmp / "beat-schedule")] if beat else []
        return self._spawn(
            "worker",
            [
                str(BIN / "celery"),
                "-A",
                "config",
                "worker",
                *beat_args,
                "--pool=prefork",
                "--concurrency=1",
                "--loglevel=INFO",
                "-Q",
                # Deliveries have a queue of their own (make hub-worker); one worker serves both here.
                "default,hub",
                "-n",
                f"e2e-{uuid.uuid4().hex[:8]}@%h",
                # Nothing to synchronise with: start in a second, not after mingle's wait.
                "--without-mingle",
                "--without-gossip",
                "--without-heartbeat",
            ],
        )

    def wait_worker(self, proc: Proc) -> Proc:
        """Returns once the worker logged that it is ready and its pool process exists."""
        deadline = time.monotonic() + START_TIMEOUT
        while " ready." not in proc.log():
            if not proc.alive():
                proc.fail_with_log(f"exited with {proc.popen.returncode} before it was ready")
            if time.monotonic() > deadline:
                proc.fail_with_log(f"not ready within {START_TIMEOUT:.0f}s")
            time.sleep(0.1)
        # The pool child must exist before a test can kill it.
        wait_for(proc.children, timeout=10, what="the worker's pool process")
        return proc

    def start_all(self) -> "Stack":
        """daphne and one Celery worker, started side by side; returns once both are up."""
        daphne, worker = self.spawn_daphne(), self.spawn_worker()
        self.wait_daphne(daphne)
        self.wait_worker(worker)
        return self

    def worker(self) -> Proc:
        """The worker started last."""
        return [proc for proc in self.procs if proc.name == "worker"][-1]

    def run_python(self, code: str, timeout: float = 30.0) -> str:
        """Runs Django code in a separate short-lived process on the same stack (as a
        beat-scheduled job would run); returns its stdout."""
        script = "import django\ndjango.setup()\n" + code
        done = subprocess.run(
            [str(BIN / "python"), "-c", script],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            pytest.fail(f"python subprocess failed ({done.returncode}):\n{done.stdout}\n{done.stderr}", pytrace=False)
        return done.stdout

    def stop_all(self) -> None:
        """Signals every process at once, gives them STOP_TIMEOUT to exit, then kills what
        is left of each process group (pool children, a process that ignored the signal)."""
        for proc in self.procs:
            # A worker's warm shutdown would wait for a hanging turn: shut it down cold.
            proc.signal(signal.SIGQUIT if proc.name == "worker" else signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for proc in self.procs:
            proc.wait(deadline - time.monotonic())
        for proc in self.procs:
            proc.kill_group(signal.SIGKILL)
            proc.wait(STOP_TIMEOUT)


@pytest.fixture
def fake_model():
    server = FakeOpenAI().start()
    yield server
    server.stop()


@pytest.fixture
def stack(real_stack, transactional_db, fake_model, tmp_path):
    """Starts nothing by itself: ``stack.start_all()``, ``start_daphne()``, ``start_worker()``
    (a test may change ``stack.env`` first).

    Depends on ``transactional_db`` so the rows the test and the processes write are
    committed, and so the processes are stopped before the tables are flushed."""
    from django.db import connection

    db_url = _with_path(os.environ["DATABASE_URL"], "/" + connection.settings_dict["NAME"])
    broker = broker_url()
    env = {
        **os.environ,
        "DATABASE_URL": db_url,
        "DB_POOL_MIN_SIZE": "1",
        "DB_POOL_MAX_SIZE": "4",
        "CELERY_BROKER_URL": broker,
        "CELERY_TASK_ALWAYS_EAGER": "false",
        "AGENT_PROVIDER": "openai",
        "OPENAI_API_KEY": "sk-test",
        "OPENAI_BASE_URL": fake_model.base_url,
        "OPENAI_MODEL": "fake-model",
        "OPENAI_TIMEOUT": "30",
        "AGENT_RETRY_BACKOFF_SECONDS": "0.2",
        "SSE_HEARTBEAT_SECONDS": "2",
        # A handful of requests per test; keep the per-tenant budget out of the way.
        "RATE_LIMIT_FREE": "1000",
        "RATE_LIMIT_AUTH_PER_IP": "1000/m",
        "PYTHONUNBUFFERED": "1",
        "LOG_LEVEL": "INFO",
    }
    _empty_broker(broker)
    running = Stack(env=env, tmp=tmp_path, fake=fake_model)
    try:
        yield running
    finally:
        running.stop_all()
        _empty_broker(broker)
        for proc in running.procs:
            print(f"--- {proc.name} (pid {proc.pid}, exit {proc.popen.returncode}) log tail ---")
            print("\n".join(proc.log().splitlines()[-40:]))


@pytest.fixture
def server(stack) -> Stack:
    """daphne and one Celery worker, both up."""
    return stack.start_all()


def register(stack: Stack) -> dict:
    """A new tenant's owner, registered and logged in over HTTP: ``{"headers", "access",
    "user"}``."""
    email = f"e2e-{uuid.uuid4().hex[:10]}@example.com"
    response = httpx.post(
        f"{stack.base_url}/api/v1/auth/register",
        json={
            "email": email,
            "password": "analytical-engine-1843",
            "display_name": "Ada",
            "tenant_name": f"E2E {email}",
        },
        timeout=10,
        trust_env=False,
    )
    assert response.status_code == 201, response.text
    login = httpx.post(
        f"{stack.base_url}/api/v1/auth/token",
        json={"email": email, "password": "analytical-engine-1843"},
        timeout=10,
        trust_env=False,
    )
    assert login.status_code == 200, login.text
    access = login.json()["access"]
    return {"access": access, "headers": {"Authorization": f"Bearer {access}"}, "user": response.json()["user"]}


@pytest.fixture
def account(server) -> dict:
    return register(server)
