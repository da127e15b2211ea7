"""Helpers every test module shares, and the test-wide hypothesis profile.

Under CI (which sets CI=true) the property tests are derandomized and keep no example
database, so a red run is reproducible; a developer's run explores new random examples.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result
from hypothesis import settings

from convcli.cli.main import main
from convcli.io.fileio import TEMP_PREFIX

settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

#: The repository's root folder.
ROOT = Path(__file__).resolve().parents[1]
#: The seed repository's 5x5 image and 3x3 kernel, and what stride 1, padding 0 gives.
SEED_IMAGE = [[3, 3, 2, 1, 0], [0, 0, 1, 3, 1], [3, 1, 2, 2, 3], [2, 0, 0, 2, 2], [2, 0, 0, 0, 1]]
SEED_KERNEL = [[0, 1, 2], [2, 2, 0], [0, 1, 2]]
SEED_OUTPUT = [[12, 12, 17], [10, 17, 19], [9, 6, 14]]
#: Seconds a subprocess of convcli may take before a test gives up on it (a hang guard).
SUBPROCESS_TIMEOUT = 120


def run(*args: Any, input: bytes | str | None = None, env: dict[str, str] | None = None) -> Result:
    """``convcli ARGS`` in this process through click's CliRunner (stdout, stderr apart).

    Tables are wide (COLUMNS=300) so that long paths stay on one line of stderr.
    """
    runner = CliRunner(env={"COLUMNS": "300", **(env or {})})
    return runner.invoke(main, [str(a) for a in args], input=input, catch_exceptions=False)


def convcli_command(*args: Any) -> list[str]:
    """The argv of ``python -m convcli ARGS`` with this interpreter."""
    return [sys.executable, "-m", "convcli", *(str(a) for a in args)]


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment of a convcli subprocess: this one, with the repository importable."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "COLUMNS": "300", **extra}


def convcli(
    *args: Any, stdin: bytes | None = None, cwd: Path | None = None, **popen: Any
) -> subprocess.CompletedProcess[bytes]:
    """``convcli ARGS`` in a real process (signals, closed streams, pipes); waits for it."""
    return subprocess.run(
        convcli_command(*args),
        input=stdin,
        capture_output=True,
        cwd=cwd,
        env=subprocess_env(),
        timeout=SUBPROCESS_TIMEOUT,
        **popen,
    )


def temp_files(folder: Path) -> list[Path]:
    """convcli's temporary files anywhere below ``folder`` (a finished run leaves none)."""
    return [path for path in folder.rglob("*") if path.name.startswith(TEMP_PREFIX)]


def assert_clean_error(result: Result, code: int, *fragments: str) -> None:
    """One Error: line naming the problem, the right exit code, no traceback."""
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.stderr
    assert "Error:" in result.stderr
    for fragment in fragments:
        assert fragment in result.stderr
