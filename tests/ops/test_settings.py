"""Settings refuse to start the real stack with the public development secret key or
without DJANGO_ALLOWED_HOSTS, and turn the HTTPS settings on in production."""

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
        if key not in ("DATABASE_URL", "REDIS_URL", "DJANGO_SECRET_KEY", "DJANGO_DEBUG", "CI", "DJANGO_ALLOWED_HOSTS")
        and not key.startswith(("DJANGO_SECURE", "DJANGO_SESSION_", "DJANGO_CSRF_"))
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
    if dotenv.exists() and any(name in dotenv.read_text() for name in ("DJANGO_SECRET_KEY", "DJANGO_ALLOWED_HOSTS")):
        pytest.skip(".env sets DJANGO_SECRET_KEY or DJANGO_ALLOWED_HOSTS")


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
    result = run_python(
        ["manage.py", "check"],
        DATABASE_URL=SERVER_DB,
        DJANGO_SECRET_KEY="a-real-secret-" + "x" * 40,
        DJANGO_ALLOWED_HOSTS="chat.example.com",
    )

    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout


def test_secret_key_from_environment_signs_jwts():
    code = IMPORT_SETTINGS + "; assert settings.SIMPLE_JWT['SIGNING_KEY'] == settings.SECRET_KEY"

    result = run_python(
        code, DATABASE_URL=SERVER_DB, DJANGO_SECRET_KEY="the-env-secret", DJANGO_ALLOWED_HOSTS="chat.example.com"
    )

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


# What README and .env.example document for production behind a TLS-terminating proxy.
PRODUCTION_ENV = {
    "DATABASE_URL": SERVER_DB,
    "DJANGO_SECRET_KEY": "kY3v-Q8pZr_2mWc7TnB4xJd9LsHf6GaE1uViRo5Ne0MbKtPyXq",
    "DJANGO_ALLOWED_HOSTS": "chat.example.com",
    "DJANGO_SECURE_PROXY_SSL_HEADER": "HTTP_X_FORWARDED_PROTO=https",
}
SECURITY_SETTINGS = (
    "import django; django.setup(); from django.conf import settings as s; "
    "print(s.ALLOWED_HOSTS, s.SECURE_SSL_REDIRECT, s.SECURE_HSTS_SECONDS, s.SESSION_COOKIE_SECURE, "
    "s.CSRF_COOKIE_SECURE, getattr(s, 'SECURE_PROXY_SSL_HEADER', None))"
)


def test_deploy_check_is_clean_with_the_documented_production_environment():
    result = run_python(["manage.py", "check", "--deploy", "--fail-level", "WARNING"], **PRODUCTION_ENV)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout
    assert "WARNINGS" not in result.stdout + result.stderr


def test_deploy_check_still_runs_the_middleware_dependent_checks_on_the_inline_middleware():
    """MIDDLEWARE holds inline subclasses of Django's Security/CSRF/X-Frame-Options
    middleware (config/api/native.py); Django's own checks look for its dotted paths and
    would skip HSTS and SSL redirect: config/api/checks.py runs them again."""
    env = {**PRODUCTION_ENV, "DJANGO_SECURE_HSTS_SECONDS": "0", "DJANGO_SECURE_SSL_REDIRECT": "false"}

    result = run_python(["manage.py", "check", "--deploy"], **env)

    output = result.stdout + result.stderr
    assert "security.W004" in output and "security.W008" in output, output  # HSTS, SSL redirect
    assert "W001" not in output and "W002" not in output and "W003" not in output, output


def test_deploy_check_reports_a_really_missing_security_middleware():
    code = (
        "import django, os; django.setup(); from django.conf import settings; "
        "from django.core.checks import run_checks; from django.test.utils import override_settings; "
        "mw = [m for m in settings.MIDDLEWARE if 'Security' not in m]; "
        "ctx = override_settings(MIDDLEWARE=mw); ctx.enable(); "
        "print(sorted(m.id for m in run_checks(include_deployment_checks=True) if 'security' in (m.id or '')))"
    )

    result = run_python(code, **PRODUCTION_ENV)

    assert result.returncode == 0, result.stderr
    assert "config.security.W001" in result.stdout, result.stdout


def test_production_turns_the_https_settings_on():
    result = run_python(SECURITY_SETTINGS, **PRODUCTION_ENV)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ("['chat.example.com'] True 31536000 True True ('HTTP_X_FORWARDED_PROTO', 'https')")


def test_production_without_allowed_hosts_refuses_to_start_with_one_clear_line():
    env = {key: value for key, value in PRODUCTION_ENV.items() if key != "DJANGO_ALLOWED_HOSTS"}

    result = run_python(["manage.py", "check"], **env)

    assert result.returncode == 1
    # One line, no traceback (config/startup.py prints settings errors that way).
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith("error: DJANGO_ALLOWED_HOSTS must be set")


def test_plain_http_real_stack_switches_the_https_settings_off():
    # A local daphne, the e2e tests and CI serve the real stack over plain http.
    result = run_python(SECURITY_SETTINGS, **PRODUCTION_ENV, DJANGO_SECURE="false")

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['chat.example.com'] False 0 False False ('HTTP_X_FORWARDED_PROTO', 'https')"


@pytest.mark.parametrize("debug", [None, "true"])
def test_embedded_default_and_debug_serve_plain_http_on_loopback(debug):
    overrides = {"DATABASE_URL": SERVER_DB, "DJANGO_DEBUG": debug} if debug else {}

    result = run_python(SECURITY_SETTINGS, **overrides)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['localhost', '127.0.0.1', '[::1]'] False 0 False False None"


def test_malformed_proxy_header_setting_refuses_to_start():
    result = run_python(SECURITY_SETTINGS, **{**PRODUCTION_ENV, "DJANGO_SECURE_PROXY_SSL_HEADER": "X-Forwarded-Proto"})

    assert result.returncode != 0
    assert "DJANGO_SECURE_PROXY_SSL_HEADER must look like" in result.stderr


@pytest.mark.django_db
def test_a_request_for_a_foreign_host_is_a_400_envelope(api):
    # The suite's hosts (pyproject.toml): testserver, localhost, 127.0.0.1.
    foreign = api.get("/api/v1/auth/me", HTTP_HOST="evil.example")
    ours = api.get("/api/v1/auth/me", HTTP_HOST="localhost")

    assert foreign.status_code == 400
    assert foreign.json()["error"]["code"] == "bad_request"
    assert ours.status_code == 401


@pytest.mark.django_db
def test_https_redirect_spares_the_probes_and_honours_the_proxy_header(api, settings):
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    settings.SECURE_HSTS_SECONDS = 31_536_000

    plain = api.get("/api/v1/auth/me")
    probe = api.get("/health")
    proxied = api.get("/health", HTTP_X_FORWARDED_PROTO="https")

    assert (plain.status_code, plain["Location"]) == (301, "https://testserver/api/v1/auth/me")
    assert probe.status_code == 200
    assert proxied["Strict-Transport-Security"].startswith("max-age=31536000")


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


BIN = Path(sys.executable).parent


@pytest.mark.parametrize(
    ("argv", "variable", "value", "expected"),
    [
        (
            ["manage.py", "check"],
            "RATE_LIMIT_FREE",
            "60/min",
            "error: RATE_LIMIT_FREE must be an integer, got '60/min'",
        ),
        (
            ["manage.py", "check"],
            "AUTH_CALLER_CACHE_SECONDS",
            "off",
            "error: AUTH_CALLER_CACHE_SECONDS must be a number, got 'off'",
        ),
        (
            [str(BIN / "gunicorn"), "-c", "config/gunicorn.py", "-b", "127.0.0.1:1", "config.asgi:application"],
            "SHUTDOWN_GRACE_SECONDS",
            "soon",
            "error: SHUTDOWN_GRACE_SECONDS must be a number, got 'soon'",
        ),
        (
            [str(BIN / "celery"), "-A", "config", "worker"],
            "HUB_MAX_ATTEMPTS",
            "five",
            "error: HUB_MAX_ATTEMPTS must be an integer, got 'five'",
        ),
    ],
    ids=["manage.py-int", "manage.py-float", "gunicorn", "celery"],
)
def test_a_malformed_number_in_the_environment_is_one_line_naming_it(argv, variable, value, expected):
    # Every entry point: one line that names the variable and the value, exit 1, no traceback
    # and nothing started (the gunicorn port 1 would need root, the worker a broker).
    command = argv if argv[0] != "manage.py" else [sys.executable, *argv]
    env = {key: val for key, val in os.environ.items() if key not in ("DATABASE_URL", "REDIS_URL", "CI")}
    env.update(DJANGO_SETTINGS_MODULE="config.settings", **{variable: value})

    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False)

    assert result.returncode == 1, result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if "Starting gunicorn" not in line]
    assert lines == [expected]
