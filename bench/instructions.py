"""Instructions per request (valgrind's callgrind: load-independent, unlike any clock on a
shared machine) of one request through a whole ASGI application, against the bare view.

    .venv/bin/python bench/instructions.py [--requests 300] [--before DIR] [--path /health] [KIND ...]

KIND is ``bare`` (bench/bare_asgi.py: Django's handler, no middleware) or ``app``
(config.asgi, ``--path``, default ``/health``); both by default. Each is run twice under
``valgrind --tool=callgrind`` in a child process of the measured checkout: once sending 200
warm-up requests and ``--requests`` more, once the warm-up only; the difference over
``--requests`` is the instructions a request costs, every thread included (the handler's
hop threads run Python too), the kernel's work excluded (thread creation, sockets: no
server here). The app's request log is on (``LOG_LEVEL=INFO``) and written to a file, as in
bench/overhead_health.py. Needs DATABASE_URL/REDIS_URL only to start the app.
"""

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from inprocess import HARNESS, app_env

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import asyncio, os, sys
from inprocess import asgi_request, http_scope
kind, n, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
if kind == "bare":
    os.environ["DJANGO_SETTINGS_MODULE"] = "bench.bare_settings"
    from bench.bare_asgi import application
    path = "/bare"
else:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    from config.asgi import application
SCOPE = http_scope("GET", path, headers=[(b"user-agent", b"wrk"), (b"accept", b"*/*")])


async def main():
    for _ in range(200 + n):
        status = await asgi_request(application, SCOPE)
        assert status == 200, status

asyncio.run(main())
"""


def collected(tree: Path, kind: str, requests: int, path: str, env: dict) -> int:
    prelude = f"import sys; sys.path.append({HARNESS!r})\n"
    with tempfile.TemporaryDirectory() as tmp:
        argv = [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={tmp}/out",
            sys.executable,
            "-c",
            prelude + CHILD,
            kind,
            str(requests),
            path,
        ]
        with open(f"{tmp}/log", "wb") as log:
            done = subprocess.run(argv, cwd=tree, env=env, stdout=subprocess.DEVNULL, stderr=log, check=False)
        text = Path(f"{tmp}/log").read_text(errors="replace")
    if done.returncode:
        raise SystemExit(f"{tree} {kind}: {text[-3000:]}")
    return int(re.search(r"Collected : (\d+)", text).group(1))


def per_request(tree: Path, kind: str, requests: int, path: str) -> float:
    env = app_env(bench_database=False, PYTHONPATH=str(tree), DJANGO_SECURE_SSL_REDIRECT="false")
    return (collected(tree, kind, requests, path, env) - collected(tree, kind, 0, path, env)) / requests


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--before", type=Path, default=None)
    parser.add_argument("--path", default="/health")
    parser.add_argument("kinds", nargs="*", default=["bare", "app"])
    args = parser.parse_args()
    trees = ([("before", args.before)] if args.before else []) + [("this tree", ROOT)]
    for label, tree in trees:
        for kind in args.kinds:
            count = per_request(tree, kind, args.requests, args.path)
            print(
                f"{label:<10} {kind:<5} {args.path if kind == 'app' else '/bare':<14} {count / 1e6:8.3f} M instructions a request"
            )


if __name__ == "__main__":
    main()
