"""Startup checks for the process entry points (manage.py, the ASGI and WSGI apps).

A first run with a mistake in the environment should end in one line that says what to do,
at once: not a 55-line traceback (settings raise ``ImproperlyConfigured``), and not a 10 s
pool timeout followed by one (``DATABASE_URL`` names a database nobody created). The
settings still raise; only these entry points turn the error into a line and an exit code.
"""

import re
import sys
from typing import NoReturn

EXIT_CODE = 1

# manage.py commands that never open a database connection: no check before them (CI and
# deploy pipelines run `check` and `collectstatic` on machines without the database).
COMMANDS_WITHOUT_DATABASE = frozenset(
    {
        "help",
        "version",
        "check",
        "collectstatic",
        "findstatic",
        "makemigrations",
        "diffsettings",
        "startapp",
        "startproject",
        "makemessages",
        "compilemessages",
    }
)


def fail(message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(EXIT_CODE)


def load_settings_or_exit() -> None:
    """Imports the settings; a configuration error is one line on stderr and exit 1."""
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured

    try:
        settings.INSTALLED_APPS  # noqa: B018  (the first access imports the settings)
    except ImproperlyConfigured as exc:
        fail(str(exc))


def check_database(*, unreachable_is_fatal: bool = True, timeout: int = 3) -> None:
    """Connects once, without the pool, to the PostgreSQL database the settings name.

    A database or role that does not exist, or a refused password, is a configuration
    mistake: one line and exit 1, whoever calls. A server that does not answer is fatal
    for a command (it would only wait for the pool's timeout) but not for a web process
    (``unreachable_is_fatal=False``): it starts, answers 503 until PostgreSQL is back,
    and says so in one line. SQLite needs no check (the file is created on first use).
    """
    from django.conf import settings

    db = settings.DATABASES["default"]
    if db["ENGINE"] != "django.db.backends.postgresql":
        return
    import psycopg

    where = f"{db.get('HOST') or 'localhost'}:{db.get('PORT') or 5432}"
    options = {key: value for key, value in db.get("OPTIONS", {}).items() if key in ("sslmode", "sslrootcert")}
    try:
        psycopg.connect(
            dbname=db["NAME"],
            user=db.get("USER") or None,
            password=db.get("PASSWORD") or None,
            host=db.get("HOST") or None,
            port=db.get("PORT") or None,
            connect_timeout=timeout,
            **options,
        ).close()
    except psycopg.OperationalError as exc:
        reason = _server_says(str(exc))
        if re.search(r'database ".*" does not exist', reason):
            user = f" -U {db['USER']}" if db.get("USER") else ""
            host = f" -h {db['HOST']}" if db.get("HOST") else ""
            port = f" -p {db['PORT']}" if db.get("PORT") else ""
            fail(
                f'database "{db["NAME"]}" does not exist on {where} (DATABASE_URL). '
                f"Create it once: createdb{host}{port}{user} {db['NAME']}"
            )
        if re.search(r'role ".*" does not exist|authentication failed|no password supplied', reason):
            fail(f"PostgreSQL at {where} refused the login in DATABASE_URL: {reason}")
        if unreachable_is_fatal:
            fail(f"cannot connect to PostgreSQL at {where} (DATABASE_URL): {reason}")
        print(f"warning: PostgreSQL at {where} does not answer yet (DATABASE_URL): {reason}", file=sys.stderr)


def _server_says(error: str) -> str:
    """The useful part of libpq's message, on one line: the FATAL line when there is one."""
    lines = [line.strip() for line in error.splitlines() if line.strip()]
    for line in lines:
        if "FATAL:" in line:
            return re.sub(r"\s+", " ", line.split("FATAL:", 1)[1]).strip()
    return re.sub(r"\s+", " ", " ".join(lines)) or "no reason given"


def manage_py_command(argv: list[str]) -> str:
    """The subcommand manage.py was asked to run ('help' when none)."""
    for arg in argv[1:]:
        if not arg.startswith("-"):
            return arg
    return "help"
