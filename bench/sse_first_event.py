"""Time to the first event of ``POST /api/v1/chat/stream`` on a real daphne.

    .venv/bin/python bench/sse_first_event.py [--requests 100] [--port 18450]

Starts one daphne on ``--port`` (the local agent, no worker needed: the SSE turn runs in
the request) on the DATABASE_URL and REDIS_URL of the environment (``manage.py migrate``
there first), registers a user, and posts ``--requests`` chat turns one after another into
one conversation, timing from the request to the first byte and to the end of the first
event (``message.created``), and to the end of the stream. Prints p50/p95/max; asserts
nothing.
"""

import argparse
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / ".venv" / "bin"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main(args) -> None:
    env = {
        **os.environ,
        "AGENT_PROVIDER": "local",
        "RATE_LIMIT_FREE": "1000000",
        "RATE_LIMIT_AUTH_PER_IP": "100000/m",
        "LOG_LEVEL": "WARNING",
        "DJANGO_SECURE_SSL_REDIRECT": "false",  # plain HTTP on 127.0.0.1
    }
    argv = [str(BIN / "daphne"), "-v", "0", "-b", "127.0.0.1", "-p", str(args.port), "config.asgi:application"]
    log = open(args.log, "w")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{args.port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=1, trust_env=False).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                sys.exit(f"daphne did not start; see {args.log}")
            time.sleep(0.2)
        with httpx.Client(base_url=base, timeout=30, trust_env=False) as http:
            email, password = f"bench-{uuid.uuid4().hex[:10]}@example.com", "analytical-engine-1843"
            http.post(
                "/api/v1/auth/register",
                json={"email": email, "password": password, "display_name": "B", "tenant_name": email},
            ).raise_for_status()
            token = http.post("/api/v1/auth/token", json={"email": email, "password": password}).json()["access"]
            http.headers["Authorization"] = f"Bearer {token}"
            conversation_id = http.post("/api/v1/conversations/", json={"title": "sse"}).json()["id"]
            first_byte, first_event, whole = [], [], []
            for i in range(args.warmup + args.requests):
                body = {"message": "hello", "conversation_id": conversation_id}
                t0 = time.perf_counter()
                with http.stream("POST", "/api/v1/chat/stream", json=body) as response:
                    response.raise_for_status()
                    got_byte = got_event = None
                    text = ""
                    for chunk in response.iter_text():
                        now = time.perf_counter()
                        got_byte = got_byte or now
                        text += chunk
                        if (
                            got_event is None
                            and "event: message.created" in text
                            and "\n\n" in text.split("event: message.created", 1)[1]
                        ):
                            got_event = now
                    done = time.perf_counter()
                if i >= args.warmup:
                    first_byte.append((got_byte - t0) * 1000)
                    first_event.append((got_event - t0) * 1000)
                    whole.append((done - t0) * 1000)
        for name, values in (("first byte", first_byte), ("first event", first_event), ("whole turn", whole)):
            print(
                f"{name:12} p50 {percentile(values, 0.5):6.1f} ms  p95 {percentile(values, 0.95):6.1f} ms  "
                f"max {max(values):6.1f} ms  (n={len(values)})"
            )
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--port", type=int, default=18450)
    parser.add_argument("--log", default="/tmp/sse_first_event.log")
    main(parser.parse_args())
