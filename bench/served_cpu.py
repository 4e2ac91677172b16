"""CPU per request of the served process (gunicorn + uvicorn worker, as bench/run.py serves
them) for ``GET /health`` of the app and for the bare view, and the share of a core each
worker got: the worker's utime + stime (all its threads, from /proc) over a wrk run,
divided by the requests wrk counted. Alternates bare / app ``--rounds`` times.

    .venv/bin/python bench/served_cpu.py [--port 18510] [--seconds 6] [--rounds 3] [--connections 50] [--hop-free-bare]

``--hop-free-bare`` also serves the bare view through the app's handler
(bench/bare_hopfree_asgi.py), a third server measured in the same rotation.

Needs DATABASE_URL and REDIS_URL for the app (``/health`` touches neither). On a shared
machine requests/s follows the CPU share the scheduler gives the worker; CPU per request
is the app's own cost, and what decides the ratio when both get the same share.
"""

import argparse
import os
import re
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / ".venv" / "bin"
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def worker_pid(master: int) -> int:
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return int(children[0])


def start(bare: bool, port: int, log: Path, app: str = "") -> subprocess.Popen:
    env = {
        **os.environ,
        "DJANGO_SECRET_KEY": "bench-" + secrets.token_hex(24),
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
        "DJANGO_SECURE": "false",
        "DJANGO_DEBUG": "false",
        "LOG_LEVEL": "INFO",
        "PYTHONUNBUFFERED": "1",
        "WEB_CONCURRENCY": "1",
        "DJANGO_SETTINGS_MODULE": "bench.bare_settings" if bare else "config.settings",
    }
    app = app or ("bench.bare_asgi:application" if bare else "config.asgi:application")
    argv = [str(BIN / "gunicorn"), "-c", "config/gunicorn.py", "-b", f"127.0.0.1:{port}", app]
    proc = subprocess.Popen(
        argv, cwd=ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}" + ("/bare" if bare else "/health")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if urllib.request.urlopen(url, timeout=2).status == 200:
                return proc
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"{app} did not start: {log.read_text()[-2000:]}")


def run_wrk(url: str, seconds: int, connections: int) -> int:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return int(re.search(r"(\d+) requests in", out).group(1))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=18510)
    parser.add_argument("--seconds", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--hop-free-bare", action="store_true")
    args = parser.parse_args()
    logs = Path(os.environ.get("TMPDIR", "/tmp"))
    servers = {
        "bare": (start(True, args.port + 1, logs / "served-bare.log"), f"http://127.0.0.1:{args.port + 1}/bare"),
        "app": (start(False, args.port, logs / "served-app.log"), f"http://127.0.0.1:{args.port}/health"),
    }
    if args.hop_free_bare:
        proc = start(True, args.port + 2, logs / "served-bare0.log", "bench.bare_hopfree_asgi:application")
        servers["bare0"] = (proc, f"http://127.0.0.1:{args.port + 2}/bare")
    try:
        print(f"{'server':<6} {'req/s':>8} {'cpu us/req':>11} {'core share':>11} {'load':>6}")
        for _ in range(args.rounds):
            for name, (proc, url) in servers.items():
                pid = worker_pid(proc.pid)
                run_wrk(url, 1, args.connections)  # warm
                cpu, wall = cpu_seconds(pid), time.monotonic()
                requests = run_wrk(url, args.seconds, args.connections)
                cpu, wall = cpu_seconds(pid) - cpu, time.monotonic() - wall
                print(
                    f"{name:<6} {requests / wall:8.1f} {cpu / requests * 1e6:11.0f} {cpu / wall:11.2f} {os.getloadavg()[0]:6.1f}",
                    flush=True,
                )
    finally:
        for proc, _ in servers.values():
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(20)


if __name__ == "__main__":
    sys.exit(main())
