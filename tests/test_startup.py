"""Start-up: a one-image command imports only what it needs (issue 12, item 4).

``convcli conv tiny.png -k sharpen -o out.png`` should start about as fast as
``python -c "import numpy"``. Timings never gate tests; these check the cause instead: the
modules such a run leaves in ``sys.modules``, the lazily exported names still importing the
same way, and the rows table drawn without rich being rich's, byte for byte.
"""

from __future__ import annotations

import importlib
import io
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import convcli
import convcli.engine
from convcli.batch.pipeline import Row
from convcli.cli import report, report_plain
from convcli.io import images
from tests.conftest import SUBPROCESS_TIMEOUT, subprocess_env

#: Modules a conv or pool run on a PNG must not import (prefixes: "rich" covers rich.*).
LAZY_MODULES = (
    "rich",
    "dask",
    "distributed",
    "tifffile",
    "imageio",
    "multiprocessing",
    "concurrent.futures",
    "zipfile",
    "tempfile",
    "PIL.JpegImagePlugin",
    "PIL.BmpImagePlugin",
    "PIL.GifImagePlugin",
    "PIL.TiffImagePlugin",
    "convcli.engine.grad_conv",
    "convcli.engine.grad_pool",
    "convcli.engine.transpose",
    "convcli.verify.compare",
    "convcli.verify.dumps",
    "convcli.verify.dump_grads",
    "convcli.verify.pairs",
    "convcli.verify.replay",
    "convcli.verify.run",
    "convcli.cli.report_verify",
    "convcli.batch.dask_runner",
    "convcli.batch.workers",
    "convcli.batch.stream",
    "convcli.io.regions",
    "convcli.io.tiff",
    "convcli.io.tiff_meta",
)

#: Runs the command line with the remaining arguments, then lists sys.modules (at exit,
#: after everything the run imported) in the file named by the first argument.
RECORDER = """
import atexit, sys
listing = sys.argv.pop(1)
def record():
    with open(listing, "w") as handle:
        handle.write("\\n".join(sorted(sys.modules)))
atexit.register(record)
sys.argv[0] = "convcli"
from convcli.cli import main
main()
"""


def loaded_after(tmp_path: Path, *args: str) -> tuple[set[str], subprocess.CompletedProcess[str]]:
    """The modules a ``convcli ARGS`` process had imported when it exited, and its result."""
    listing = tmp_path / "modules.txt"
    env = subprocess_env()
    for name in ("COLUMNS", *report_plain.RICH_VARIABLES):  # as a user's shell has them
        env.pop(name, None)
    done = subprocess.run(
        [sys.executable, "-c", RECORDER, str(listing), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=SUBPROCESS_TIMEOUT,
        stdin=subprocess.DEVNULL,
    )
    return set(listing.read_text().split()), done


def imported(modules: set[str], name: str) -> bool:
    return any(module == name or module.startswith(f"{name}.") for module in modules)


@pytest.fixture
def tiny_png(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.png"
    pixels = (np.arange(8 * 8 * 3) % 256).astype(np.uint8).reshape(8, 8, 3)
    path.write_bytes(images.encode_image(pixels, format="png", name=str(path)))
    return path


@pytest.mark.parametrize(
    "operation",
    [["conv", "-k", "sharpen"], ["pool", "--size", "2"], ["conv", "-k", "sharpen", "-q"]],
    ids=["conv", "pool", "conv-quiet"],
)
def test_a_one_png_run_imports_only_what_it_needs(
    tmp_path: Path, tiny_png: Path, operation: list[str]
) -> None:
    command, *flags = operation
    out = tmp_path / "out.png"
    modules, done = loaded_after(tmp_path, command, str(tiny_png), *flags, "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert out.exists()
    if "-q" not in flags:
        assert "tiny.png" in done.stderr and "\u2503" in done.stderr  # the table, drawn
    assert "PIL.PngImagePlugin" in modules and "click" in modules  # the test sees imports
    assert [name for name in LAZY_MODULES if imported(modules, name)] == []


def test_importing_the_command_line_loads_no_lazy_module() -> None:
    listing = ", ".join(repr(name) for name in LAZY_MODULES)
    code = (
        "import sys, convcli, convcli.engine, convcli.cli.main\n"
        f"lazy = [{listing}]\n"
        "print([n for n in lazy if any(m == n or m.startswith(n + '.') for m in sys.modules)])"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=SUBPROCESS_TIMEOUT,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


# --------------------------------------------------------------------------- lazy exports


@pytest.mark.parametrize("module", [convcli, convcli.engine], ids=lambda m: m.__name__)
def test_every_exported_name_imports(module: object) -> None:
    names = module.__all__  # type: ignore[attr-defined]
    for name in names:
        assert getattr(module, name) is not None, name
        assert name in dir(module), name
    namespace: dict[str, object] = {}
    exec(f"from {module.__name__} import {', '.join(names)}", namespace)
    assert all(name in namespace for name in names)
    with pytest.raises(AttributeError):
        module.no_such_name  # type: ignore[attr-defined]  # noqa: B018


def test_lazy_names_are_the_defining_modules_objects() -> None:
    from convcli import conv2d_backward
    from convcli.engine.grad_conv import conv2d_backward as defined

    assert conv2d_backward is defined is convcli.engine.conv2d_backward
    assert (
        convcli.engine.max_pool2d_backward
        is importlib.import_module("convcli.engine.grad_pool").max_pool2d_backward
    )
    # the submodules the package imported eagerly before are still attributes
    assert convcli.engine.transpose is importlib.import_module("convcli.engine.transpose")
    assert "grad_conv" in dir(convcli.engine)


def test_jobs_skip_only_what_stream_job_would_not_stream(tmp_path: Path) -> None:
    """process_job loads the streaming modules only for GRID_FORMATS pairs: stream_job
    must return None, without reading anything, for every other pair of formats."""
    from convcli.batch.pipeline import Convolution, OutputOptions
    from convcli.batch.stream import stream_job
    from convcli.batch.tiling import GRID_FORMATS
    from convcli.io.sources import ALL_FORMATS

    operation = Convolution(np.ones((3, 3)), None, "OHWI", "box")
    suffix = {"jpeg": "jpg", "tiff": "tif"}
    for source_format in ALL_FORMATS:
        for target_format in ALL_FORMATS:
            if source_format in GRID_FORMATS and target_format in GRID_FORMATS:
                continue
            source = tmp_path / f"missing.{suffix.get(source_format, source_format)}"
            target = tmp_path / f"out.{suffix.get(target_format, target_format)}"
            options = OutputOptions(format=target_format)
            assert (
                stream_job(
                    str(source), str(target), target_format, operation, options, replace=True
                )
                is None
            ), (source_format, target_format)


def test_zip_errors_is_still_a_constant() -> None:
    from convcli.io import arrays
    from convcli.io.arrays import ZIP_ERRORS

    assert ZIP_ERRORS == arrays.zip_errors()
    assert all(issubclass(error, Exception) for error in ZIP_ERRORS)


# --------------------------------------------------------------------------- the plain table


class Stream(io.StringIO):
    """A text stream that says whether it is a terminal, with an encoding."""

    def __init__(self, *, tty: bool, encoding: str = "utf-8") -> None:
        super().__init__()
        self.tty = tty
        self._encoding = encoding

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return self._encoding

    def isatty(self) -> bool:
        return self.tty


@pytest.fixture
def plain_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """No variable that changes rich's drawing, and a 100-column terminal on every fd."""
    for name in ("COLUMNS", "LINES", "TERM", *report_plain.RICH_VARIABLES):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(os, "get_terminal_size", lambda fd=1: os.terminal_size((100, 30)))
    yield monkeypatch


def drawn(rows: list[Row], stream: Stream, monkeypatch: pytest.MonkeyPatch, more: int = 0) -> str:
    """What rich writes for the rows table on ``stream`` as the stderr console."""
    monkeypatch.setattr(sys, "stderr", stream)
    report.stderr_console().print(report.rows_table(rows, more=more))
    return stream.getvalue()


def compare(rows: list[Row], monkeypatch: pytest.MonkeyPatch, *, tty: bool, **kwargs: str) -> bool:
    """Whether the plain table was drawn; when it was, it must be rich's text exactly."""
    plain = report_plain.plain_rows_table(rows, stream=Stream(tty=tty, **kwargs))
    if plain is not None:
        assert plain == drawn(rows, Stream(tty=tty, **kwargs), monkeypatch)
    return plain is not None


def row(name: str = "tiny.png", **fields: object) -> Row:
    values: dict[str, object] = {
        "shape_in": (8, 8, 3),
        "shape_out": (8, 8, 3),
        "dtype_in": "uint8",
        "dtype_out": "uint8",
        "operation": "sharpen 3x3",
        "seconds": 0.0014,
        "clipped": 21,
    }
    values.update(fields)
    return Row(name, **values)  # type: ignore[arg-type]


@pytest.mark.parametrize("tty", [False, True], ids=["pipe", "terminal"])
@pytest.mark.parametrize(
    "rows",
    [
        [row()],
        [row(clipped=0)],
        [row(clipped=1_234_567, seconds=12.5)],
        [row("a b  c.png"), row(" lead.png ", dtype_out="float32", shape_out=(4, 4, 3))],
        [row("x.npy", shape_in=(), shape_out=(), dtype_in="float64", dtype_out="float64")],
        [row("[red]markup[/red] :smile:.png")],  # the name is inert text to rich as well
        [row(f"in/{index}.png", clipped=index) for index in range(20)],
        [row("p" * 101)],  # exactly the 160 columns of a pipe
    ],
    ids=["one", "unclipped", "large", "spaces", "scalar", "markup", "twenty", "full"],
)
def test_the_plain_table_is_richs(
    plain_environment: pytest.MonkeyPatch, rows: list[Row], tty: bool
) -> None:
    fits = tty is False or len(rows[0].name) < 60
    assert compare(rows, plain_environment, tty=tty) is fits


def test_the_terminal_header_is_bold(plain_environment: pytest.MonkeyPatch) -> None:
    text = report_plain.plain_rows_table([row()], stream=Stream(tty=True))
    assert text is not None and text.startswith("\x1b[1minput")
    assert "\x1b[" not in (report_plain.plain_rows_table([row()], stream=Stream(tty=False)) or "")


@pytest.mark.parametrize(
    ("rows", "more", "setting", "stream"),
    [
        ([row()], 3, {}, Stream(tty=False)),  # a caption
        ([row(operation="edge [1,2]")], 0, {}, Stream(tty=False)),  # markup in a parsed cell
        ([row(operation="blur :x:")], 0, {}, Stream(tty=False)),  # an emoji code, perhaps
        ([row("caf\u00e9.png")], 0, {}, Stream(tty=False)),  # not ASCII
        ([row("p" * 102)], 0, {}, Stream(tty=False)),  # wider than 160 columns
        ([row()], 0, {"COLUMNS": "40"}, Stream(tty=False)),  # narrower than the table
        ([row()], 0, {"FORCE_COLOR": "1"}, Stream(tty=False)),
        ([row()], 0, {"NO_COLOR": "1"}, Stream(tty=True)),
        ([row()], 0, {"TERM": "dumb"}, Stream(tty=True)),
        ([row()], 0, {}, Stream(tty=False, encoding="ascii")),  # rich draws an ASCII box
        ([], 0, {}, Stream(tty=False)),
    ],
    ids=[
        "caption",
        "markup",
        "emoji",
        "unicode",
        "wide",
        "narrow",
        "force-color",
        "no-color",
        "dumb",
        "ascii",
        "empty",
    ],
)
def test_rich_draws_what_the_plain_table_does_not_cover(
    plain_environment: pytest.MonkeyPatch,
    rows: list[Row],
    more: int,
    setting: dict[str, str],
    stream: Stream,
) -> None:
    for name, value in setting.items():
        plain_environment.setenv(name, value)
    assert report_plain.plain_rows_table(rows, more=more, stream=stream) is None


def test_columns_sets_the_width_as_it_does_for_rich(plain_environment: pytest.MonkeyPatch) -> None:
    plain_environment.setenv("COLUMNS", "300")
    assert compare([row("q" * 241)], plain_environment, tty=False)
    assert compare([row("q" * 241)], plain_environment, tty=True)


ASCII = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)
#: Operation names without the ``[`` and ``:`` that send a table to rich.
OPERATIONS = st.text(st.sampled_from("abcxyz0123456789 -_.,=()"), max_size=30)


@settings(max_examples=150, deadline=None)
@given(
    names=st.lists(ASCII, min_size=1, max_size=4),
    operation=st.one_of(OPERATIONS, ASCII),
    clipped=st.integers(0, 10**7),
    seconds=st.floats(0, 1000, allow_nan=False),
    shape=st.lists(st.integers(1, 100_000), max_size=4),
    tty=st.booleans(),
)
def test_the_plain_table_is_richs_for_any_ascii_rows(
    names: list[str], operation: str, clipped: int, seconds: float, shape: list[int], tty: bool
) -> None:
    with pytest.MonkeyPatch.context() as monkeypatch:
        for name in ("COLUMNS", "LINES", "TERM", *report_plain.RICH_VARIABLES):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setattr(os, "get_terminal_size", lambda fd=1: os.terminal_size((100, 30)))
        rows = [
            row(name, operation=operation, clipped=clipped * index, seconds=seconds,
                shape_in=tuple(shape), dtype_out="float32" if index else "uint8")
            for index, name in enumerate(names)
        ]  # fmt: skip
        compare(rows, monkeypatch, tty=tty)


def test_a_closed_stderr_pipe_ends_the_run_as_rich_would(monkeypatch: pytest.MonkeyPatch) -> None:
    class Closed(io.StringIO):
        def write(self, text: str) -> int:
            raise BrokenPipeError

    replaced: list[int] = []
    monkeypatch.setattr(os, "dup2", lambda fd, fd2: replaced.append(fd2))
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    monkeypatch.setattr(sys.stdout, "fileno", lambda: 1)
    with pytest.raises(SystemExit) as stopped:
        report_plain.write_plain("table\n", Closed())
    assert stopped.value.code == 1 and replaced == [1]
