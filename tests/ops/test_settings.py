"""Settings refuse to start the real stack with the public development secret key."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVER_DB = "postgres://nobody@127.0.0.1:1/never_connected"  # settings import never connects
IMPORT_SETTINGS = "import django; django.setup(); from django.conf import settings; print(settings.SECRET_KEY)"


def run_python(code_or_args, **overrides) -> subprocess.CompletedProcess:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DATABASE_URL", "REDIS_URL", "DJANGO_SECRET_KEY", "DJANGO_DEBUG", "CI")
    }
    env.update(DJANGO_SETTINGS_MODULE="config.settings", **overrides)
    args = ["-c", code_or_args] if isinstance(code_or_args, str) else code_or_args
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.fixture(autouse=True)
def _no_dotenv_secret():
    # A developer's .env could hold DJANGO_SECRET_KEY and hide what these tests check.
    dotenv = ROOT / ".env"
    if dotenv.exists() and "DJANGO_SECRET_KEY" in dotenv.read_text():
        pytest.skip(".env sets DJANGO_SECRET_KEY")


def test_server_database_without_secret_key_refuses_to_start():
    result = run_python(IMPORT_SETTINGS, DATABASE_URL=SERVER_DB)

    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert "DJANGO_SECRET_KEY must be set" in result.stderr


def test_server_database_with_empty_secret_key_refuses_to_start():
    result = run_python(IMPORT_SETTINGS, DATABASE_URL=SERVER_DB, DJANGO_SECRET_KEY="")

    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY must be set" in result.stderr


def test_server_database_with_secret_key_passes_manage_py_check():
    result = run_python(["manage.py", "check"], DATABASE_URL=SERVER_DB, DJANGO_SECRET_KEY="a-real-secret-" + "x" * 40)

    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout


def test_secret_key_from_environment_signs_jwts():
    code = IMPORT_SETTINGS + "; assert settings.SIMPLE_JWT['SIGNING_KEY'] == settings.SECRET_KEY"

    result = run_python(code, DATABASE_URL=SERVER_DB, DJANGO_SECRET_KEY="the-env-secret")

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "the-env-secret"


def test_debug_on_a_server_database_may_use_the_development_key():
    result = run_python(IMPORT_SETTINGS, DATABASE_URL=SERVER_DB, DJANGO_DEBUG="true")

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().startswith("dev-only-insecure")


def test_embedded_default_keeps_the_development_key():
    result = run_python(IMPORT_SETTINGS)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().startswith("dev-only-insecure")


READ_THEN_WRITE = """
import threading, time
import django
django.setup()
from django.db import connection, transaction

with connection.cursor() as cursor:
    cursor.execute("CREATE TABLE counter (n integer)")
errors = []

def read_then_write():
    # What message_create does on SQLite, where select_for_update locks nothing.
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM counter")
            time.sleep(0.2)
            cursor.execute("INSERT INTO counter VALUES (1)")
    except Exception as exc:
        errors.append(repr(exc))
    finally:
        connection.close()

threads = [threading.Thread(target=read_then_write) for _ in range(4)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
with connection.cursor() as cursor:
    cursor.execute("SELECT count(*) FROM counter")
    print(errors, cursor.fetchone()[0])
"""


def test_sqlite_transactions_take_the_write_lock_at_begin(tmp_path):
    result = run_python(
        "import django; django.setup(); from django.db import connection; print(connection.settings_dict['OPTIONS'])",
        DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}",
    )

    assert result.returncode == 0, result.stderr
    assert "'transaction_mode': 'IMMEDIATE'" in result.stdout
    assert "'timeout': 20" in result.stdout


def test_sqlite_concurrent_read_then_write_transactions_wait_instead_of_failing(tmp_path):
    result = run_python(READ_THEN_WRITE, DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}")

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[] 4"
