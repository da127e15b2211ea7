"""Planning a run: what is written where, decided before anything runs.

:func:`plan_run` maps every input (a file, standard input, or the files below a folder) to
its output, so that a run that would collide or overwrite stops before its first write. A
single input and a folder of thousands are planned alike and become the same
:class:`~convcli.batch.jobs.Job` list; only the runner decides where the jobs run.
"""

from __future__ import annotations

import fnmatch
import os
import stat
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from convcli.batch.jobs import STDOUT, Job
from convcli.errors import ConvcliError
from convcli.io import images
from convcli.io.fileio import TEMP_PREFIX, OutputExistsError, check_output_path
from convcli.io.sources import ALL_FORMATS, ARRAY_FORMATS, STDIN, format_of


@dataclass
class Plan:
    """The jobs of a run, in walk order, and what planning found besides.

    ``ignored`` counts files convcli cannot read; ``skipped`` outputs that exist and are kept
    (``--skip-existing``); ``failures`` (input, reason) are items that failed while planning
    (a folder that cannot be listed, a FIFO named like an image). ``single`` marks one named
    input (a file or stdin): its failure is the run's error, not a row of a failure table.
    """

    jobs: list[Job]
    ignored: int = 0
    skipped: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    single: bool = False


@dataclass(frozen=True)
class _Found:
    """One entry of a walk: a file to process, one to ignore, or one that failed."""

    path: Path
    relative: Path | None  # None: not a format convcli reads (ignored)
    problem: str | None = None


def _names_folder(output: str) -> bool:
    """``-o`` names a folder when it is one or ends with a slash (``out/``)."""
    return output != STDOUT and (output.endswith(("/", os.sep)) or Path(output).is_dir())


def is_single(inputs: Sequence[str]) -> bool:
    """Whether ``inputs`` is one file or stdin (not a folder, not several)."""
    return len(inputs) == 1 and (inputs[0] == STDIN or not Path(inputs[0]).is_dir())


def check_inputs(inputs: Sequence[str], output: str) -> None:
    """Refuse combinations of inputs and output that cannot work, before anything is read.

    Raises:
        ConvcliError: stdin among several inputs, or several inputs (or a folder) to stdout.
    """
    if STDIN in inputs and len(inputs) > 1:
        raise ConvcliError("- (stdin) cannot be combined with other inputs")
    if output == STDOUT and not is_single(inputs):
        raise ConvcliError("several inputs or a folder need -o FOLDER, not -o -")


def walk_inputs(
    inputs: Iterable[Path], *, pattern: str | None = None, exclude: Path | None = None
) -> Iterator[_Found]:
    """Every file of ``inputs``, in sorted walk order; folders are walked recursively.

    Named files are taken as they are. Inside folders, hidden files and our own temporary
    files are passed over, ``pattern`` (a glob on the relative path or the file name)
    filters, a file convcli cannot read comes with ``relative=None`` so it can be counted,
    and a folder that cannot be listed or an entry that is not a regular file (a FIFO or a
    device named like an image, which would block or never end) comes with its ``problem``
    and is never opened. ``exclude`` (the output folder) is not walked, so outputs written
    inside an input folder are never read back as inputs.

    Raises:
        ConvcliError: a named input does not exist or is a file convcli cannot read.
    """
    excluded = os.path.realpath(exclude) if exclude is not None else None
    for root in inputs:
        if root.is_dir():
            unlisted: list[OSError] = []
            for folder, subfolders, names in os.walk(root, onerror=unlisted.append):
                while unlisted:
                    yield _unlisted(unlisted.pop(), root)
                subfolders[:] = sorted(
                    name
                    for name in subfolders
                    if not name.startswith(".")
                    and os.path.realpath(os.path.join(folder, name)) != excluded
                )
                for name in sorted(names):
                    if name.startswith(".") or name.startswith(TEMP_PREFIX):
                        continue
                    path = Path(folder) / name
                    relative = path.relative_to(root)
                    if pattern and not (
                        fnmatch.fnmatch(str(relative), pattern) or fnmatch.fnmatch(name, pattern)
                    ):
                        continue
                    if format_of(path) is None:
                        yield _Found(path, None)
                    else:
                        yield _Found(path, relative, _not_regular(path))
            while unlisted:
                yield _unlisted(unlisted.pop(), root)
        elif root.exists():
            if format_of(root) is None:
                raise ConvcliError(f"{root}: unsupported file type {root.suffix!r}")
            yield _Found(root, Path(root.name))
        else:
            raise ConvcliError(f"{root}: no such file or folder")


def _unlisted(error: OSError, root: Path) -> _Found:
    folder = Path(error.filename) if error.filename is not None else root
    return _Found(folder, folder, f"{folder}: cannot list: {error.strerror or error}")


def _not_regular(path: Path) -> str | None:
    """Why ``path`` is not a file to open (checked with stat, which opens nothing), or None."""
    try:
        mode = os.stat(path).st_mode
    except OSError as error:
        return f"{path}: cannot read: {error.strerror or error}"
    if stat.S_ISREG(mode):
        return None
    kind = "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
    return f"{path}: is {kind}, not a regular file; not opened"


def output_format(source: Path, requested: str | None) -> str:
    """``--format`` if given, else the input's own format."""
    if requested is not None:
        return requested
    fmt = format_of(source)
    if fmt is None:
        raise ConvcliError(f"{source}: unsupported file type {source.suffix!r}")
    return fmt


def extension(fmt: str) -> str:
    """The extension an output in ``fmt`` is written with."""
    if fmt in ARRAY_FORMATS:
        return f".{fmt}"
    return images.IMAGE_FORMATS[fmt][0]


def _file_format(path: Path, requested: str | None) -> str:
    fmt = format_of(path)
    if fmt is None:
        if requested is not None:
            return requested
        raise ConvcliError(
            f"{path}: cannot tell the output format from {path.suffix or 'no extension'!r}; "
            f"use one of {', '.join(ALL_FORMATS)} or --format"
        )
    if requested is not None and requested != fmt:
        raise ConvcliError(f"{path}: --format {requested} contradicts the extension {path.suffix}")
    return fmt


def plan_single(
    name: str,
    output: str,
    *,
    requested_format: str | None = None,
    overwrite: bool = False,
    skip_existing: bool = False,
) -> Plan:
    """Plan one input (a file or ``-``) to a file, into a folder, or to stdout (``-``).

    Raises:
        ConvcliError: the input does not exist, the output format cannot be told, stdin is
            sent to a folder, or the output is an input.
        OutputExistsError: the output exists (neither ``overwrite`` nor ``skip_existing``).
    """
    source = None if name == STDIN else Path(name)
    if source is not None and not source.exists():
        raise ConvcliError(f"{name}: no such file")
    if output == STDOUT:
        fmt = requested_format or (None if source is None else format_of(source))
        return Plan([Job(name, STDOUT, fmt or "")], single=True)
    target = Path(output)
    if _names_folder(output):
        if source is None:
            raise ConvcliError("-o is a folder; name the output file for stdin input")
        fmt = output_format(source, requested_format)
        relative = Path(source.name)
        if requested_format is not None:
            relative = relative.with_suffix(extension(fmt))
        target = target / relative
    else:
        fmt = _file_format(target, requested_format)
    if skip_existing and os.path.lexists(target):
        return Plan([], skipped=1, single=True)
    check_output_path(target, inputs=() if source is None else (source,), overwrite=overwrite)
    return Plan([Job(name, str(target), fmt)], single=True)


def plan_batch(
    inputs: Iterable[Path],
    output_dir: Path,
    *,
    requested_format: str | None,
    pattern: str | None = None,
) -> Plan:
    """Walk ``inputs`` and map each file to its output under ``output_dir``.

    Relative paths under each input folder are mirrored; ``requested_format`` changes the
    extension. Nothing is written.

    Raises:
        ConvcliError: two inputs map to one output (``a.png`` and ``a.jpg`` -> ``a.png``), or
            an output would land on an input.
    """
    plan = Plan([])
    claimed: dict[str, int] = {}  # normalized target -> index of the job claiming it
    input_keys: set[str] = set()
    for found in walk_inputs(inputs, pattern=pattern, exclude=output_dir):
        path, relative = found.path, found.relative
        if found.problem is not None:
            plan.failures.append((str(path), found.problem))
            continue
        if relative is None:
            plan.ignored += 1
            continue
        fmt = output_format(path, requested_format)
        name = relative if requested_format is None else relative.with_suffix(extension(fmt))
        target = output_dir / name
        key = os.path.normcase(os.path.abspath(target))
        if key in claimed:
            raise ConvcliError(
                f"{path} and {plan.jobs[claimed[key]].source} would both be written to "
                f"{target}; rename one or process them separately"
            )
        claimed[key] = len(plan.jobs)
        input_keys.add(os.path.realpath(path))
        plan.jobs.append(Job(str(path), str(target), fmt))
    for job in plan.jobs:
        if os.path.realpath(job.target) in input_keys:
            raise ConvcliError(f"{job.target}: refusing to overwrite an input file")
    return plan


def existing_outputs(jobs: Iterable[Job]) -> list[Job]:
    """The jobs whose output already exists."""
    return [job for job in jobs if os.path.lexists(job.target)]


def refuse_existing(jobs: Sequence[Job]) -> None:
    """Stop a batch whose outputs exist (neither --overwrite nor --skip-existing given)."""
    existing = existing_outputs(jobs)
    if existing:
        more = f" and {len(existing) - 1} more" if len(existing) > 1 else ""
        raise OutputExistsError(
            f"{existing[0].target}{more}: output exists (use --overwrite to replace, or "
            "--skip-existing to keep and resume)"
        )


def plan_run(
    inputs: Sequence[str],
    output: str,
    *,
    requested_format: str | None = None,
    pattern: str | None = None,
    overwrite: bool = False,
    skip_existing: bool = False,
) -> Plan:
    """Plan any set of inputs: one file or stdin (:func:`plan_single`), else a batch.

    A batch writes into the folder ``output``. With ``skip_existing`` the jobs whose output
    exists are left out (and counted); with neither it nor ``overwrite`` an existing output
    stops the run here, before anything is written.

    Raises:
        ConvcliError: as :func:`check_inputs`, :func:`plan_single` and :func:`plan_batch`.
        OutputExistsError: an output exists.
    """
    if overwrite and skip_existing:
        raise ConvcliError("--overwrite and --skip-existing exclude each other")
    check_inputs(inputs, output)
    if is_single(inputs):
        return plan_single(
            inputs[0],
            output,
            requested_format=requested_format,
            overwrite=overwrite,
            skip_existing=skip_existing,
        )
    output_dir = Path(output)
    if output_dir.exists() and not output_dir.is_dir():
        raise ConvcliError(f"{output_dir}: several inputs need -o to be a folder, not a file")
    if not _names_folder(output) and format_of(output_dir) is not None:
        raise ConvcliError(
            f"{output}: several inputs (or a folder) need -o FOLDER, and {output} names a "
            f"file; end it with / for a folder of that name"
        )
    plan = plan_batch(
        [Path(name) for name in inputs],
        output_dir,
        requested_format=requested_format,
        pattern=pattern,
    )
    if not plan.jobs and not plan.failures:
        folders = [name for name in inputs if Path(name).is_dir()]
        where = ", ".join(folders) or ", ".join(inputs)
        matched = f" matching {pattern!r}" if pattern else ""
        raise ConvcliError(
            f"{where}: no readable file{matched} ({plan.ignored:,} other "
            f"file{'s' * (plan.ignored != 1)} ignored)"
        )
    if skip_existing:
        existing = set(existing_outputs(plan.jobs))
        plan.skipped = len(existing)
        plan.jobs = [job for job in plan.jobs if job not in existing]
    elif not overwrite:
        refuse_existing(plan.jobs)
    return plan
