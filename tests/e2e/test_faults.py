"""Issue 9, faults: Redis and PostgreSQL stopped and started again under a running daphne
and Celery worker (real processes). The servers stopped are PRIVATE ones this test starts
on free ports (never the shared ones): a ``redis-server --save ''`` and a PostgreSQL
cluster made with ``initdb``. Every loop is bounded in count and time, and every private
server is stopped at teardown, also when the test failed."""

import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import connect as ws_connect

from chat.models import AgentRun
from conversations.models import Message

from .conftest import _free_port, register, wait_for

pytestmark = [pytest.mark.faults, pytest.mark.timeout(150)]

DEADLINE = 30.0  # seconds recovery may take before the test fails


class PrivateRedis:
    """One redis-server on a free port, without persistence; stop() and start() again on
    the same port."""

    def __init__(self, tmp: Path):
        self.port = _free_port()
        self.tmp = tmp
        self.proc: subprocess.Popen | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def _answers(self) -> bool:
        import redis

        try:
            return bool(redis.Redis(port=self.port, socket_connect_timeout=0.5).ping())
        except redis.RedisError:
            return False

    def start(self) -> "PrivateRedis":
        log = open(self.tmp / "redis.log", "ab")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            cwd=self.tmp,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        wait_for(self._answers, timeout=10, what="the private redis-server")
        return self

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None


@pytest.fixture
def private_redis(tmp_path):
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed (fault tests start a private one)")
    server = PrivateRedis(tmp_path).start()
    try:
        yield server
    finally:
        server.stop()


def _post_message(http: httpx.Client, conversation_id: int, content: str, key: str | None = None) -> httpx.Response:
    headers = {"Idempotency-Key": key} if key else {}
    return http.post(f"/api/v1/conversations/{conversation_id}/messages", json={"content": content}, headers=headers)


def _completed(run_ids: list[int]) -> bool:
    return AgentRun.objects.filter(pk__in=run_ids, status=AgentRun.Status.COMPLETED).count() == len(run_ids)


def _assert_503_envelope(response: httpx.Response) -> dict:
    assert response.status_code == 503, response.text
    assert int(response.headers["Retry-After"]) >= 1
    error = response.json()["error"]
    assert error["code"] == "dependency_unavailable"
    assert set(error) == {"code", "message", "details", "request_id"}
    return error


def test_redis_stopped_and_started_again_loses_no_accepted_message(stack, private_redis):
    # Arrange: daphne and a worker with beat, both on the private Redis.
    stack.env.update(
        {
            "REDIS_URL": private_redis.url(0),
            "CELERY_BROKER_URL": private_redis.url(1),
            "AGENT_RELAY_SECONDS": "1",
        }
    )
    daphne, worker = stack.spawn_daphne(), stack.spawn_worker(beat=True)
    stack.wait_daphne(daphne)
    stack.wait_worker(worker)
    account = register(stack)
    http = httpx.Client(base_url=stack.base_url, headers=account["headers"], timeout=30, trust_env=False)
    created = http.post("/api/v1/conversations/", json={"title": "faults"})
    assert created.status_code == 201, created.text
    conversation_id = created.json()["id"]
    before = _post_message(http, conversation_id, "before the outage")
    assert before.status_code == 202, before.text
    wait_for(lambda: _completed([before.json()["run"]["id"]]), timeout=DEADLINE, what="the first run")

    # Act 1: Redis goes away while the API is in use.
    private_redis.stop()
    ready = http.get("/health/ready")
    accepted, timings = [], []
    for i in range(4):
        started = time.monotonic()
        response = _post_message(http, conversation_id, f"during the outage {i}", key=f"outage-{i}" if i % 2 else None)
        timings.append(time.monotonic() - started)
        assert response.status_code == 202, response.text  # stored: the answer says so
        accepted.append(response.json()["run"]["id"])
    replay = _post_message(http, conversation_id, "during the outage 1", key="outage-1")
    listed = http.get(f"/api/v1/conversations/{conversation_id}/messages")

    # Assert 1: readiness names redis; the API keeps answering what it can.
    error = _assert_503_envelope(ready)
    assert error["details"]["unavailable"] == ["redis"]
    assert replay.status_code == 202 and replay.headers.get("Idempotent-Replayed") == "true"
    assert replay.json()["run"]["id"] == accepted[1]
    assert listed.status_code == 200
    # The hand-over runs after the answer, on the server's background batcher: the marks
    # follow within the broker client's retries.
    wait_for(
        lambda: AgentRun.objects.filter(pk__in=accepted, status="queued", enqueue_failed_at__isnull=False).count() == 4,
        timeout=DEADLINE,
        what="the runs accepted during the outage marked unsent",
    )
    print(f"POST messages while Redis is down: {[round(t, 2) for t in timings]} s")
    assert max(timings) < 10, timings

    # Act 2: Redis is back on the same port (empty: no persistence).
    private_redis.start()

    # Assert 2: recovery without a restart, and every accepted message is answered once.
    wait_for(lambda: http.get("/health/ready").status_code == 200, timeout=DEADLINE, what="readiness after Redis")
    wait_for(lambda: _completed(accepted), timeout=DEADLINE, what="the runs accepted during the outage")
    after = _post_message(http, conversation_id, "after the outage")
    assert after.status_code == 202, after.text
    wait_for(lambda: _completed([after.json()["run"]["id"]]), timeout=DEADLINE, what="a run after recovery")
    replies = Message.objects.filter(conversation_id=conversation_id, role="assistant").count()
    assert replies == 6  # one per accepted message: nothing lost, nothing answered twice
    assert AgentRun.objects.filter(enqueue_failed_at__isnull=False).count() == 0
    assert '"status": 500' not in daphne.log()


def test_a_worker_holding_a_countdown_task_survives_a_redis_restart(stack, private_redis):
    # Arrange: a worker on the private Redis, holding a task that waits for its countdown
    # (as a hub delivery's or an agent run's retry does): unacknowledged in the worker.
    from celery import Celery

    stack.env.update({"REDIS_URL": private_redis.url(0), "CELERY_BROKER_URL": private_redis.url(1)})
    daphne, worker = stack.spawn_daphne(), stack.spawn_worker()
    stack.wait_daphne(daphne)
    stack.wait_worker(worker)
    # Not the current app: the tests after this one publish through the project's app (a
    # current app on this private Redis sent their tasks to it, stopped by then).
    sender = Celery(broker=private_redis.url(1), set_as_current=False)
    held = sender.send_task("audits.tasks.seal_chains", countdown=600, queue="default")
    sender.close()
    wait_for(lambda: f"[{held.id}] received" in worker.log(), timeout=DEADLINE, what="the countdown task held")

    # Act: Redis restarts (empty: no persistence) while the worker holds it.
    private_redis.stop()
    time.sleep(2)
    private_redis.start()

    # Assert: the worker did not exit (kombu's restore on a released connection used to end
    # it: "Unrecoverable error"), reconnected, and runs what is accepted after the restart.
    account = register(stack)
    http = httpx.Client(base_url=stack.base_url, headers=account["headers"], timeout=30, trust_env=False)
    wait_for(lambda: http.get("/health/ready").status_code == 200, timeout=DEADLINE, what="readiness after Redis")
    created = http.post("/api/v1/conversations/", json={"title": "after the restart"})
    assert created.status_code == 201, created.text
    after = _post_message(http, created.json()["id"], "after the restart")
    assert after.status_code == 202, after.text
    wait_for(lambda: _completed([after.json()["run"]["id"]]), timeout=DEADLINE, what="a run after the restart")
    assert worker.alive(), worker.log()[-3000:]
    assert "Unrecoverable error" not in worker.log()
    assert "unacknowledged message(s) left to the visibility timeout" in worker.log()


# ---------------------------------------------------------------- PostgreSQL

PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))


class PrivatePostgres:
    """A PostgreSQL cluster of its own (``initdb`` in a temporary directory, run as the
    ``postgres`` OS user when the tests run as root), on a free port; stop() and start()."""

    def __init__(self):
        self.port = _free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="faults-pg-"))
        self.data = self.dir / "data"

    def _run(self, *argv: str, timeout: float = 60) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        done = subprocess.run(
            [*prefix, *argv], cwd=self.dir, capture_output=True, text=True, timeout=timeout, check=False
        )
        if done.returncode != 0:
            pytest.fail(f"{argv[0]} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}", pytrace=False)

    def init(self) -> "PrivatePostgres":
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        self._run(str(PG_BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        return self

    def start(self) -> None:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=40"
        self._run(
            str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.dir / "pg.log"), "-w", "start"
        )

    def stop(self) -> None:
        # fast: open connections are terminated, as in a restart or a failover
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def url(self, name: str) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{name}"

    def create_database(self, name: str) -> None:
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')

    def destroy(self) -> None:
        if (self.data / "postmaster.pid").exists():
            prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
            subprocess.run(
                [*prefix, str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"],
                capture_output=True,
                timeout=30,
                check=False,
            )
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def private_postgres():
    if not (PG_BIN / "initdb").exists():
        pytest.fail(f"no PostgreSQL server binaries in {PG_BIN} (set PG_BIN)")
    server = PrivatePostgres()
    try:
        server.init().start()
        server.create_database("app")
        yield server
    finally:
        server.destroy()


def _load(base_url: str, headers: dict, stop: threading.Event, results: list, worker: int) -> None:
    """One client: creates and lists conversations until ``stop`` (at most 2,000 requests)."""
    with httpx.Client(base_url=base_url, headers=headers, timeout=30, trust_env=False) as http:
        for i in range(2000):
            if stop.is_set():
                return
            try:
                if i % 2:
                    response = http.post("/api/v1/conversations/", json={"title": f"load {worker}-{i}"})
                else:
                    response = http.get("/api/v1/conversations/")
            except httpx.HTTPError as exc:  # a dropped connection would be a failure too
                results.append((time.monotonic(), 0, repr(exc), {}))
                continue
            results.append((time.monotonic(), response.status_code, response.text, dict(response.headers)))


def test_postgres_restarted_under_load_answers_503_envelopes_then_recovers(stack, private_postgres):
    # Arrange: daphne on the private cluster, migrated; a short pool wait so an outage shows.
    stack.env.update({"DATABASE_URL": private_postgres.url("app"), "DB_POOL_TIMEOUT": "2", "DB_POOL_MAX_SIZE": "4"})
    stack.run_python("from django.core.management import call_command\ncall_command('migrate', verbosity=0)", 120)
    stack.start_daphne()
    account = register(stack)
    conversation = httpx.post(
        f"{stack.base_url}/api/v1/conversations", json={}, headers=account["headers"], timeout=10, trust_env=False
    ).json()
    ws_url = (
        f"{stack.base_url.replace('http', 'ws', 1)}/ws/v1/conversations/{conversation['id']}/?token={account['access']}"
    )
    stop, results = threading.Event(), []
    clients = [
        threading.Thread(target=_load, args=(stack.base_url, account["headers"], stop, results, n)) for n in range(3)
    ]
    for client in clients:
        client.start()

    # Act: the database goes away for a few seconds under load, then comes back.
    with ws_connect(ws_url, open_timeout=10, proxy=None) as ws:
        try:
            wait_for(lambda: len(results) >= 10, timeout=DEADLINE, what="load before the outage")
            private_postgres.stop()
            down_at = time.monotonic()
            # Down for as long as it takes the clients to be refused a few times (seconds).
            wait_for(
                lambda: sum(1 for r in results if r[0] > down_at and r[1] == 503) >= 6, timeout=DEADLINE, what="503s"
            )
            # A WebSocket frame meanwhile: the caller cannot be re-checked, so the frame is
            # refused with an error frame and the socket stays open.
            ws.send(json.dumps({"type": "ping", "ref": "during"}))
            during = json.loads(ws.recv(timeout=DEADLINE))
            private_postgres.start()
            up_at = time.monotonic()
            wait_for(
                lambda: sum(1 for r in results if r[0] > up_at + 3 and r[1] in (200, 201)) >= 10,
                timeout=DEADLINE,
                what="recovery after the restart",
            )
            ws.send(json.dumps({"type": "ping", "ref": "after"}))
            after_frame = json.loads(ws.recv(timeout=DEADLINE))
        finally:
            stop.set()
            for client in clients:
                client.join(35)

    # Assert: every answer was a success or a 503 envelope with Retry-After; never a 500.
    statuses = sorted({r[1] for r in results})
    assert set(statuses) <= {200, 201, 503}, statuses
    for _, status, body, headers in results:
        if status == 503:
            assert int(headers["retry-after"]) >= 1
            error = httpx.Response(503, text=body).json()["error"]
            assert (error["code"], error["details"]) == ("dependency_unavailable", {"dependency": "database"})
    after = [r[1] for r in results if r[0] > up_at + 3]
    assert after and set(after) <= {200, 201}, after  # the pool recovered without a restart
    assert during["type"] == "error" and during["data"]["code"] == "dependency_unavailable", during
    assert during["data"]["details"] == {"dependency": "database"}
    assert after_frame == {"type": "pong", "seq": None, "data": {"ref": "after"}}  # the same socket served on
    print(f"requests: {len(results)}, 503s: {sum(1 for r in results if r[1] == 503)}")
