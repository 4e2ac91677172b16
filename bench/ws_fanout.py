"""WebSocket fan-out on the real stack: N clients on one conversation, one REST post.

    .venv/bin/python bench/ws_fanout.py [--clients 500] [--layer core|pubsub]
        [--processes 1] [--turns 0] [--port 18400] [--rounds 1]

Starts what production runs (`make serve`: gunicorn with ``--processes`` uvicorn workers on
``--port``; or ``--server daphne``: daphne processes on ``--port``, ``--port``+1...; one Celery
worker with the local agent) on the DATABASE_URL and REDIS_URL of the environment (run
``manage.py migrate`` there first), registers a user, opens N WebSocket clients on one
conversation (default connect: no ``after_seq``, no pings; spread over the processes; the
clients themselves split over ``--client-processes`` processes, 2 by default),
then posts one message over REST (202) and prints, per round:

- ``created``: time from the post to each client's ``message.created`` (p50, p95, max);
- ``reply``: time from the post to the last client's ``message.completed`` (the agent's
  stored reply) and to the last client's last ``message.delta``;
- ``deltas``: the delta frames one client received for the reply;
- ``web CPU``: the CPU time the web processes used during the round (utime + stime from
  /proc), and that divided by N x 7 events: the figure to compare changes by on a shared
  machine, where the latencies swing 2-3x with the load;

then closes every client at once (half with a close frame, half by dropping the TCP
connection) and prints how long until Redis holds nothing of the conversation's group
(core layer: its sorted set; pubsub: the group's subscriptions and the sockets' own
channels) and whether a client connected afterwards still gets the next message. ``--turns`` first plays that many turns
in the conversation (a conversation with history). Prints figures; asserts nothing.
"""

import argparse
import asyncio
import json
import multiprocessing
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import redis
from websockets.asyncio.client import connect as ws_connect

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
BIN = ROOT / ".venv" / "bin"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def start_stack(args) -> list[subprocess.Popen]:
    env = {
        **os.environ,
        "CHANNEL_LAYER": args.layer,
        "CELERY_TASK_ALWAYS_EAGER": "false",
        "CELERY_BROKER_URL": os.environ.get("BENCH_BROKER_URL", os.environ["REDIS_URL"]),
        "AGENT_PROVIDER": "local",
        "REALTIME_MAX_SOCKETS_PER_USER": str(args.clients * 2),
        "RATE_LIMIT_FREE": "1000000",
        "RATE_LIMIT_AUTH_PER_IP": "100000/m",
        "LOG_LEVEL": "WARNING",
        "DJANGO_SECURE_SSL_REDIRECT": "false",  # plain HTTP on 127.0.0.1
        "PYTHONUNBUFFERED": "1",
    }
    procs = []
    log = open(args.log, "w")  # noqa: SIM115 - closed with the processes
    if args.server == "gunicorn":  # what `make serve` runs: N uvicorn workers on one port
        argv = [str(BIN / "gunicorn"), "-c", "config/gunicorn.py", "-b", f"127.0.0.1:{args.port}"]
        worker_env = {**env, "WEB_CONCURRENCY": str(args.processes)}
        procs.append(
            subprocess.Popen(
                [*argv, "config.asgi:application"], cwd=ROOT, env=worker_env, stdout=log, stderr=subprocess.STDOUT
            )
        )
    else:  # one daphne per process, on consecutive ports
        for i in range(args.processes):
            argv = [
                str(BIN / "daphne"),
                "-v",
                "0",
                "-b",
                "127.0.0.1",
                "-p",
                str(args.port + i),
                "config.asgi:application",
            ]
            procs.append(subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT))
    worker = [
        str(BIN / "celery"), "-A", "config", "worker", "--pool=prefork", "--concurrency=1", "--loglevel=WARNING",
        "-n", f"bench-{uuid.uuid4().hex[:8]}@%h", "--without-mingle", "--without-gossip", "--without-heartbeat",
    ]  # fmt: skip
    procs.append(subprocess.Popen(worker, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT))
    for i in range(web_ports(args)):
        deadline = time.monotonic() + 120  # a loaded machine starts slowly
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{args.port + i}/health", timeout=1, trust_env=False).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                stop_stack(procs)
                sys.exit(f"{args.server} on {args.port + i} did not start; see {args.log}")
            time.sleep(0.2)
    time.sleep(2 + args.processes)  # the worker's pool, gunicorn's other workers
    return procs


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def web_pids(procs: list[subprocess.Popen], args) -> list[int]:
    """The processes that serve the sockets: gunicorn's workers (its master's children) or the daphnes."""
    if args.server != "gunicorn":
        return [proc.pid for proc in procs[: args.processes]]
    master = procs[0].pid
    children = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    if int(stat.read().rsplit(")", 1)[1].split()[1]) == master:
                        children.append(int(entry))
            except (OSError, ValueError, IndexError):
                continue
    return children


def web_ports(args) -> int:
    """Ports the web processes listen on: gunicorn's workers share one."""
    return 1 if args.server == "gunicorn" else args.processes


def stop_stack(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


class Listener:
    def __init__(self, url: str):
        self.url = url
        self.ws = None
        self.seen: dict[str, float] = {}
        self.deltas = 0
        self.last_delta = 0.0
        self.task = None

    async def open(self):
        self.ws = await ws_connect(self.url, max_queue=None, ping_interval=None, open_timeout=60)
        self.task = asyncio.ensure_future(self.read())

    async def read(self):
        try:
            async for raw in self.ws:
                frame = json.loads(raw)
                now = time.perf_counter()
                if frame["type"] == "message.delta":
                    self.deltas += 1
                    self.last_delta = now
                elif frame["seq"] is not None:
                    self.seen[f"{frame['type']}:{frame['seq']}"] = now
        except Exception:  # noqa: BLE001 - closed under us at the end
            pass

    def reset(self):
        self.seen.clear()
        self.deltas, self.last_delta = 0, 0.0


async def open_all(urls: list[str], args_gate: int = 20) -> list[Listener]:
    gate = asyncio.Semaphore(args_gate)
    listeners = [Listener(url) for url in urls]

    async def one(listener):
        async with gate:
            await listener.open()

    await asyncio.gather(*(one(listener) for listener in listeners))
    return listeners


async def wait_until(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


async def one_round(http, listeners, conversation_id: int, timeout: float) -> dict:
    for listener in listeners:
        listener.reset()
    t0 = time.perf_counter()
    response = await http.post(f"/api/v1/conversations/{conversation_id}/messages", json={"content": "list my tasks"})
    response.raise_for_status()
    seq = response.json()["message"]["seq"]
    created, completed = f"message.created:{seq}", f"message.completed:{seq + 1}"
    await wait_until(lambda: all(created in lsn.seen and completed in lsn.seen for lsn in listeners), timeout)
    got = [lsn.seen[created] - t0 for lsn in listeners if created in lsn.seen]
    replies = [lsn.seen[completed] - t0 for lsn in listeners if completed in lsn.seen]
    last_deltas = [lsn.last_delta - t0 for lsn in listeners if lsn.last_delta]
    return summary(got, replies, last_deltas, listeners[0].deltas)


def summary(got: list[float], replies: list[float], last_deltas: list[float], deltas: int) -> dict:
    return {
        "received": len(got),
        "p50": percentile(got, 0.5) * 1000 if got else None,
        "p95": percentile(got, 0.95) * 1000 if got else None,
        "max": max(got) * 1000 if got else None,
        "replies": len(replies),
        "reply_last": max(replies) * 1000 if replies else None,
        "delta_last": max(last_deltas) * 1000 if last_deltas else None,
        "deltas": deltas,
    }


def client_process(conn, urls: list[str], connect_concurrency: int, timeout: float) -> None:
    """One load-client process: opens its share of the sockets and answers the parent's
    commands over ``conn``. The times it returns are ``time.perf_counter()`` values, which on
    Linux (CLOCK_MONOTONIC) the parent can compare with its own."""

    async def run():
        listeners = await open_all(urls, connect_concurrency)
        conn.send(len(listeners))
        while True:
            command, *params = await asyncio.to_thread(conn.recv)
            if command == "reset":
                for listener in listeners:
                    listener.reset()
                conn.send(None)
            elif command == "wait":
                created, completed = params
                await wait_until(
                    lambda c=created, d=completed: all(c in lsn.seen and d in lsn.seen for lsn in listeners), timeout
                )
                conn.send(
                    (
                        [lsn.seen[created] for lsn in listeners if created in lsn.seen],
                        [lsn.seen[completed] for lsn in listeners if completed in lsn.seen],
                        [lsn.last_delta for lsn in listeners if lsn.last_delta],
                        listeners[0].deltas if listeners else 0,
                    )
                )
            elif command == "drop":  # half close politely, half drop the TCP connection
                await asyncio.gather(
                    *(
                        lsn.ws.close() if i % 2 == 0 else asyncio.sleep(0, lsn.ws.transport.abort())
                        for i, lsn in enumerate(listeners)
                    ),
                    return_exceptions=True,
                )
                conn.send(None)
                return

    asyncio.run(run())


class ClientPool:
    """The listening sockets, split over ``--client-processes`` processes: 500 sockets parsed
    by one Python process on the same cores as the server measured the client as much as the
    server."""

    def __init__(self, urls: list[str], processes: int, connect_concurrency: int, timeout: float):
        ctx = multiprocessing.get_context("spawn")
        self.conns, self.procs = [], []
        for k in range(processes):
            parent, child = ctx.Pipe()
            share = urls[k::processes]
            proc = ctx.Process(
                target=client_process,
                args=(child, share, max(1, connect_concurrency // processes), timeout),
                daemon=True,
            )
            proc.start()
            self.conns.append(parent)
            self.procs.append(proc)

    async def ask(self, *command) -> list:
        for conn in self.conns:
            if command:
                conn.send(command)
        return await asyncio.gather(*(asyncio.to_thread(conn.recv) for conn in self.conns))

    async def opened(self) -> int:
        return sum(await self.ask())

    async def round(self, http, conversation_id: int) -> dict:
        await self.ask("reset")
        t0 = time.perf_counter()
        response = await http.post(
            f"/api/v1/conversations/{conversation_id}/messages", json={"content": "list my tasks"}
        )
        response.raise_for_status()
        seq = response.json()["message"]["seq"]
        answers = await self.ask("wait", f"message.created:{seq}", f"message.completed:{seq + 1}")
        got = [t - t0 for a in answers for t in a[0]]
        replies = [t - t0 for a in answers for t in a[1]]
        last_deltas = [t - t0 for a in answers for t in a[2]]
        return summary(got, replies, last_deltas, answers[0][3])

    async def drop(self) -> None:
        await self.ask("drop")
        for proc in self.procs:
            proc.join(timeout=10)


def pubsub_prefix(name: str, redis_url: str) -> str:
    from config.settings.channels import pubsub_prefix as prefix

    return prefix(name, redis_url)


async def main(args) -> None:
    procs = start_stack(args)
    try:
        base = f"http://127.0.0.1:{args.port}"
        async with httpx.AsyncClient(base_url=base, timeout=30, trust_env=False) as http:
            email = f"bench-{uuid.uuid4().hex[:10]}@example.com"
            password = "analytical-engine-1843"
            registered = await http.post(
                "/api/v1/auth/register",
                json={"email": email, "password": password, "display_name": "B", "tenant_name": email},
            )
            registered.raise_for_status()
            token = (await http.post("/api/v1/auth/token", json={"email": email, "password": password})).json()[
                "access"
            ]
            http.headers["Authorization"] = f"Bearer {token}"
            conversation_id = (await http.post("/api/v1/conversations/", json={"title": "fan-out"})).json()["id"]
            for _ in range(args.turns):  # history: each turn is a message and a reply
                await http.post(f"/api/v1/conversations/{conversation_id}/messages", json={"content": "hello"})
            if args.turns:
                await asyncio.sleep(1 + args.turns * 0.1)
            urls = [
                f"ws://127.0.0.1:{args.port + i % web_ports(args)}/ws/v1/conversations/{conversation_id}/?token={token}"
                for i in range(args.clients)
            ]
            t = time.perf_counter()
            pool = ClientPool(urls, args.client_processes, args.connect_concurrency, args.timeout)
            opened = await pool.opened()
            print(
                f"server={args.server} layer={args.layer} processes={args.processes} clients={args.clients} "
                f"turns_before={args.turns} client_processes={args.client_processes}"
            )
            print(f"connect: {opened} open in {time.perf_counter() - t:.1f} s")
            await asyncio.sleep(1)
            pids = web_pids(procs, args)
            for r in range(args.rounds):
                cpu_before = sum(cpu_seconds(pid) for pid in pids)
                res = await pool.round(http, conversation_id)
                # The web processes' CPU for the round (the post, 7 events x N sockets): far less
                # noisy than the latencies on a shared machine.
                cpu_ms = (sum(cpu_seconds(pid) for pid in pids) - cpu_before) * 1000
                print(
                    f"round {r + 1}: created received {res['received']}/{args.clients} "
                    f"p50 {res['p50']:.0f} ms p95 {res['p95']:.0f} ms max {res['max']:.0f} ms | "
                    f"reply to all {res['replies']}/{args.clients}: last message.completed {res['reply_last']:.0f} ms, "
                    f"last delta {res['delta_last']:.0f} ms, {res['deltas']} delta frames per client | "
                    f"web CPU {cpu_ms:.0f} ms ({cpu_ms * 1000 / (args.clients * 7):.0f} us per socket and event)"
                )
                await asyncio.sleep(0.5)

            # Mass disconnect: half close politely, half drop the TCP connection.
            store = redis.Redis.from_url(os.environ["REDIS_URL"])

            def members() -> int:
                """core: the group's sorted set; pubsub: the processes subscribed to the
                group's channel plus the sockets' own channels still subscribed."""
                if args.layer == "core":
                    return store.zcard(f"asgi:group:conversation.{conversation_id}")
                prefix = pubsub_prefix("asgi", os.environ["REDIS_URL"])
                [(_, processes)] = store.pubsub_numsub(f"{prefix}__group__conversation.{conversation_id}")
                return processes + len(store.pubsub_channels(f"{prefix}specific.*"))

            members_before = members()
            t = time.perf_counter()
            await pool.drop()
            emptied = await wait_until(lambda: members() == 0, 30)
            print(
                f"mass disconnect: in Redis before {members_before} "
                f"({'members' if args.layer == 'core' else 'group subscriptions + socket channels'}), "
                f"{'0 after' if emptied else f'{members()} left after'} "
                f"{time.perf_counter() - t:.2f} s"
            )
            [late] = await open_all(urls[:1])
            res = await one_round(http, [late], conversation_id, args.timeout)
            print(f"after the disconnect: a new client got message.created in {res['max']:.0f} ms")
            await late.ws.close()
    finally:
        stop_stack(procs)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=500)
    parser.add_argument("--layer", choices=["core", "pubsub"], default="pubsub")
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument(
        "--server",
        choices=["gunicorn", "daphne"],
        default="gunicorn",
        help="gunicorn + uvicorn workers (make serve, the default) or one daphne per process",
    )
    parser.add_argument("--turns", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--port", type=int, default=18400)
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument(
        "--client-processes", type=int, default=2, help="load-client processes the sockets are split over"
    )
    parser.add_argument("--connect-concurrency", type=int, default=20, help="handshakes in flight at once")
    parser.add_argument("--log", default="/tmp/ws_fanout.log")
    asyncio.run(main(parser.parse_args()))
