"""Many inputs to many outputs: walking folders, mirroring paths, refusing collisions up front.

The functions here decide *what* is written *where* before anything runs, so a batch that
would collide or overwrite stops before its first write.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from convcli import images
from convcli.errors import ConvcliError
from convcli.fileio import TEMP_PREFIX, OutputExistsError
from convcli.pipeline import format_of


@dataclass(frozen=True)
class Job:
    """One input file and the output it becomes."""

    source: Path
    relative: Path
    target: Path
    format: str


@dataclass(frozen=True)
class Walk:
    """The files a batch will read and how many unsupported ones it passed over."""

    files: list[tuple[Path, Path]]  # (path, path relative to its root)
    ignored: int


def walk_inputs(inputs: Iterable[Path], *, pattern: str | None = None) -> Walk:
    """Files to process: given files as they are, folders walked recursively in sorted order.

    Inside folders, files convcli cannot read are skipped and counted, hidden files and our
    own temporary files are ignored, and ``pattern`` (a glob on the relative path or the
    file name) filters what remains. A named file that convcli cannot read is an error.
    """
    files: list[tuple[Path, Path]] = []
    ignored = 0
    for root in inputs:
        if root.is_dir():
            for folder, subfolders, names in os.walk(root):
                subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
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
                        ignored += 1
                        continue
                    files.append((path, relative))
        elif root.exists():
            if format_of(root) is None:
                raise ConvcliError(f"{root}: unsupported file type {root.suffix!r}")
            files.append((root, Path(root.name)))
        else:
            raise ConvcliError(f"{root}: no such file or folder")
    return Walk(files, ignored)


def output_format(source: Path, requested: str | None) -> str:
    """``--format`` if given, else the input's own format."""
    if requested is not None:
        return requested
    fmt = format_of(source)
    assert fmt is not None
    return fmt


def extension(fmt: str) -> str:
    if fmt in ("npy", "npz"):
        return f".{fmt}"
    return images.IMAGE_FORMATS[fmt][0]


def plan_jobs(walk: Walk, output_dir: Path, *, requested_format: str | None) -> list[Job]:
    """Map each input to its output under ``output_dir``, refusing collisions.

    Raises:
        ConvcliError: two inputs map to one output (``a.png`` and ``a.jpg`` -> ``a.png``), or
            an output would land on an input.
    """
    jobs: list[Job] = []
    claimed: dict[Path, Path] = {}
    inputs = {path.resolve() for path, _ in walk.files}
    for path, relative in walk.files:
        fmt = output_format(path, requested_format)
        keep_suffix = requested_format is None
        name = relative if keep_suffix else relative.with_suffix(extension(fmt))
        target = output_dir / name
        key = Path(os.path.normcase(os.path.abspath(target)))
        if key in claimed:
            raise ConvcliError(
                f"{path} and {claimed[key]} would both be written to {target}; "
                "rename one or process them separately"
            )
        if target.resolve() in inputs:
            raise ConvcliError(f"{target}: refusing to overwrite an input file")
        claimed[key] = path
        jobs.append(Job(path, relative, target, fmt))
    return jobs


def existing_outputs(jobs: Iterable[Job]) -> list[Job]:
    """The jobs whose output already exists."""
    return [job for job in jobs if job.target.exists()]


def refuse_existing(jobs: list[Job]) -> None:
    """Stop a batch whose outputs exist (neither --overwrite nor --skip-existing given)."""
    existing = existing_outputs(jobs)
    if existing:
        more = f" and {len(existing) - 1} more" if len(existing) > 1 else ""
        raise OutputExistsError(
            f"{existing[0].target}{more}: output exists (use --overwrite to replace, or "
            "--skip-existing to keep and resume)"
        )
