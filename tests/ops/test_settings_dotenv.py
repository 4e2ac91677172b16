"""config/settings/env.py reads a local .env only when it exists, says nothing when it
does not, and never overrides a variable the environment already sets.

The module is run from a copy placed three folders deep in a temporary project (as it is
in ``<project>/config/settings/``), so the test controls whether ``<project>/.env`` exists
without touching a developer's own."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ENV_MODULE = Path(__file__).resolve().parents[2] / "config" / "settings" / "env.py"
PRINT = "import os, runpy; runpy.run_path({path!r}); print(os.environ.get('DOTENV_PROBE', '<unset>'))"


@pytest.fixture
def project(tmp_path):
    settings_dir = tmp_path / "config" / "settings"
    settings_dir.mkdir(parents=True)
    shutil.copy(ENV_MODULE, settings_dir / "env.py")
    return tmp_path


def run_env_module(project: Path, **overrides) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k != "DOTENV_PROBE"} | overrides
    code = PRINT.format(path=str(project / "config" / "settings" / "env.py"))
    return subprocess.run(
        [sys.executable, "-W", "always", "-c", code], env=environ, capture_output=True, text=True, timeout=60
    )


def test_without_dotenv_nothing_is_read_and_nothing_is_said(project):
    result = run_env_module(project)

    assert result.returncode == 0, result.stderr
    assert (result.stdout, result.stderr) == ("<unset>\n", "")


def test_a_present_dotenv_is_read(project):
    (project / ".env").write_text("DOTENV_PROBE=from-dotenv\n")

    result = run_env_module(project)

    assert (result.stdout, result.stderr) == ("from-dotenv\n", "")


def test_the_environment_wins_over_dotenv(project):
    (project / ".env").write_text("DOTENV_PROBE=from-dotenv\n")

    result = run_env_module(project, DOTENV_PROBE="from-environment")

    assert result.stdout == "from-environment\n"
