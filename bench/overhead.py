"""Per-request overhead: the app's cheapest requests against a bare async view, both served
by one daphne process, loaded with wrk (50 connections).

    .venv/bin/python bench/overhead.py [--seconds 10] [--connections 50] [--port 18201]
        [--before DIR]

``--before DIR``: also serve another checkout of the code (e.g. ``git archive <commit> |
tar -x -C DIR``) on --port+2 and measure it in the same run, scenario by scenario
alternating with this tree, so both see the same load of a shared machine.

Uses DATABASE_URL and REDIS_URL as given (migrates that database, adds a bench tenant).
Starts two daphnes (the app on --port, the bare view on --port+1) and stops them. Prints
requests/s, p50 and p99 per scenario and the ratio to the bare view measured in the same run:

- ``bare``: bench/bare_asgi.py, no middleware, no database;
- ``GET /health``: the whole middleware chain, no auth;
- ``GET /api/v1/auth/me``: JWT auth (user and tenant), the tenant's rate limit, a serializer;
- ``429``: ``/api/v1/auth/me`` by a tenant whose budget is spent (auth + rate limit, refused).

Needs ``wrk`` (Debian package ``wrk``). Asserts nothing about the figures.
"""

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


def _seed() -> tuple[str, str]:
    """An enterprise tenant's token (never limited here) and a free tenant's (limit 1/min)."""
    code = (
        "import django,os;os.environ.setdefault('DJANGO_SETTINGS_MODULE','config.settings');django.setup()\n"
        "from accounts.models import Tenant, User\n"
        "from accounts.services import tokens_for\n"
        "out=[]\n"
        "for slug, tier in (('bench-big','enterprise'),('bench-small','free')):\n"
        "    t,_=Tenant.objects.get_or_create(slug=slug, defaults={'name':slug,'tier':tier})\n"
        "    u=User.objects.filter(email=slug+'@example.com').first() or User.objects.create_user(slug+'@example.com','bench-passphrase-123',tenant=t)\n"
        "    out.append(tokens_for(u).access)\n"
        "print(' '.join(out))\n"
    )
    result = subprocess.run([PYTHON, "-c", code], cwd=ROOT, check=True, capture_output=True, text=True)
    big, small = result.stdout.split()[-2:]
    return big, small


def _wait(url: str) -> None:
    for _ in range(600):  # a minute: a loaded machine starts slowly
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"server at {url} did not start")


def _wrk(url: str, seconds: int, connections: int, token: str | None) -> dict:
    cmd = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", url]
    if token:
        cmd[1:1] = ["-H", f"Authorization: Bearer {token}"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))

    def latency(label):
        m = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)", out, re.M)
        value, unit = float(m.group(1)), m.group(2)
        return value * {"us": 0.001, "ms": 1, "s": 1000}[unit]

    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: .*?timeout (\d+)", out)
    return {
        "rps": rps,
        "p50": latency(50),
        "p99": latency(99),
        "non2xx": int(non2xx.group(1)) if non2xx else 0,
        "timeouts": int(errors.group(1)) if errors else 0,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--port", type=int, default=18201)
    parser.add_argument("--before", type=Path, default=None, help="another checkout to compare with")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (apt-get install wrk)")

    subprocess.run([PYTHON, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, check=True)
    big, small = _seed()
    env = {
        **os.environ,
        "RATE_LIMIT_ENTERPRISE": "100000000",
        "RATE_LIMIT_FREE": "1",
        # Plain http on 127.0.0.1: no redirect to https.
        "DJANGO_SECURE_SSL_REDIRECT": "false",
        "LOG_LEVEL": os.environ.get("LOG_LEVEL", "WARNING"),
    }
    daphne = str(Path(PYTHON).with_name("daphne"))
    app_port, bare_port = args.port, args.port + 1
    servers = [
        subprocess.Popen(
            [daphne, "-v", "0", "-b", "127.0.0.1", "-p", str(app_port), "config.asgi:application"], cwd=ROOT, env=env
        ),
        subprocess.Popen(
            [daphne, "-v", "0", "-b", "127.0.0.1", "-p", str(bare_port), "bench.bare_asgi:application"],
            cwd=ROOT,
            env={**env, "DJANGO_SETTINGS_MODULE": "bench.bare_settings"},
        ),
    ]
    if args.before:
        servers.append(
            subprocess.Popen(
                [daphne, "-v", "0", "-b", "127.0.0.1", "-p", str(args.port + 2), "config.asgi:application"],
                cwd=args.before,
                env=env,
            )
        )
    try:
        app, bare = f"http://127.0.0.1:{app_port}", f"http://127.0.0.1:{bare_port}"
        _wait(f"{app}/health")
        _wait(f"{bare}/bare")
        apps = [("", app)]
        if args.before:
            apps.insert(0, ("before: ", f"http://127.0.0.1:{args.port + 2}"))
            _wait(f"{apps[0][1]}/health")
        scenarios = [("bare async view", f"{bare}/bare", None)]
        for path, label, token in (
            ("/health", "GET /health", None),
            ("/api/v1/auth/me", "GET /api/v1/auth/me", big),
            ("/api/v1/auth/me", "429 (budget spent)", small),
        ):
            scenarios += [(prefix + label, base + path, token) for prefix, base in apps]
        results = []
        for name, url, token in scenarios:
            _wrk(url, 2, args.connections, token)  # warm up (and spend the small budget)
            results.append((name, _wrk(url, args.seconds, args.connections, token)))
        base = results[0][1]["rps"]
        print(f"{'scenario':<32} {'req/s':>8} {'ratio':>6} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8} {'timeouts':>8}")
        for name, r in results:
            print(
                f"{name:<32} {r['rps']:>8.0f} {r['rps'] / base:>6.2f} {r['p50']:>8.1f} {r['p99']:>8.1f}"
                f" {r['non2xx']:>8} {r['timeouts']:>8}"
            )
    finally:
        for server in servers:
            server.send_signal(signal.SIGTERM)
        for server in servers:
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()


if __name__ == "__main__":
    main()
