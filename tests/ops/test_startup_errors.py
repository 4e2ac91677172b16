"""A first run with a mistake in the environment ends at once with one line saying what to
do: no traceback, no pool timeout (manage.py commands and the ASGI server)."""

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNREACHABLE_DB = "postgres://nobody@127.0.0.1:1/never_connected"
FAST = 5.0  # seconds; the pool would wait DB_POOL_TIMEOUT (10 s) and then print a traceback


def run(argv: list[str], **overrides) -> tuple[subprocess.CompletedProcess, float]:
    env = {key: value for key, value in os.environ.items() if key not in ("DATABASE_URL", "DJANGO_DEBUG")}
    # DJANGO_SECRET_KEY="" (not unset) also overrides a developer's .env.
    env.update({"DJANGO_SETTINGS_MODULE": "config.settings", "DJANGO_SECRET_KEY": "", **overrides})
    started = time.monotonic()
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False)
    return done, time.monotonic() - started


def error_lines(stderr: str) -> list[str]:
    """stderr without the INFO/DEBUG log lines a server prints while it starts."""
    return [line for line in stderr.splitlines() if line.strip() and " INFO " not in line and " DEBUG " not in line]


def missing_database_url() -> str:
    parts = urlsplit(os.environ["DATABASE_URL"])
    return urlunsplit((parts.scheme, parts.netloc, f"/never_created_{uuid.uuid4().hex[:8]}", "", ""))


@pytest.mark.parametrize("command", ["check", "migrate"])
def test_missing_secret_key_is_one_line_and_a_non_zero_exit(command):
    done, elapsed = run([sys.executable, "manage.py", command], DATABASE_URL=UNREACHABLE_DB)

    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]
    assert done.stderr.startswith("error: DJANGO_SECRET_KEY must be set"), done.stderr
    assert "Traceback" not in done.stderr
    assert elapsed < FAST


def test_migrate_on_a_database_nobody_created_says_so_at_once(real_stack):
    url = missing_database_url()
    name = urlsplit(url).path.lstrip("/")

    done, elapsed = run([sys.executable, "manage.py", "migrate", "--noinput"], DATABASE_URL=url, DJANGO_SECRET_KEY="k")

    assert done.returncode == 1
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(f'error: database "{name}" does not exist on ')
    assert f"createdb -h {urlsplit(url).hostname}" in line and line.endswith(f" {name}")
    assert elapsed < FAST


def test_migrate_on_a_server_that_does_not_answer_fails_fast_in_one_line():
    done, elapsed = run(
        [sys.executable, "manage.py", "migrate", "--noinput"], DATABASE_URL=UNREACHABLE_DB, DJANGO_SECRET_KEY="k"
    )

    assert done.returncode == 1
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("error: cannot connect to PostgreSQL at 127.0.0.1:1 (DATABASE_URL): ")
    assert elapsed < FAST


def test_check_needs_no_database():
    done, _ = run([sys.executable, "manage.py", "check"], DATABASE_URL=UNREACHABLE_DB, DJANGO_SECRET_KEY="k")

    assert done.returncode == 0, done.stderr
    assert "no issues" in done.stdout


def daphne(**overrides) -> tuple[subprocess.CompletedProcess, float]:
    return run(
        [str(ROOT / ".venv" / "bin" / "daphne"), "-b", "127.0.0.1", "-p", "0", "config.asgi:application"], **overrides
    )


def test_server_on_a_database_nobody_created_stops_before_listening_with_one_line(real_stack):
    url = missing_database_url()

    done, elapsed = daphne(DATABASE_URL=url, DJANGO_SECRET_KEY="k")

    assert done.returncode == 1
    assert error_lines(done.stderr) == [error_lines(done.stderr)[0]]
    assert error_lines(done.stderr)[0].startswith(f'error: database "{urlsplit(url).path[1:]}" does not exist on ')
    assert elapsed < FAST


def test_server_without_secret_key_stops_with_one_line():
    done, elapsed = daphne(DATABASE_URL=UNREACHABLE_DB)

    assert done.returncode == 1
    [line] = error_lines(done.stderr)
    assert line.startswith("error: DJANGO_SECRET_KEY must be set (in the environment or in .env)")
    assert elapsed < FAST
