"""Every frame of a GIF, APNG, animated WebP or multi-page TIFF, read one at a time.

:func:`read_frames` decodes the first chosen frame at once (its header, format and metadata
decide what the run can write) and hands the rest out lazily, so a long animation is never
decoded whole. ``--frames`` chooses them: ``all`` (the default), ``first``, or 0-based
indices ``I[,J...]`` in the order given.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any, NamedTuple

import numpy as np
import numpy.typing as npt

from convcli.errors import ConvcliError, InputError
from convcli.io.decoding import Image, check_pixels, decoder_errors
from convcli.io.images import _opened, _sniff_image, read_image
from convcli.io.pillow_decode import decode_pillow, pillow_open, pillow_plan
from convcli.limits import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS

Array = npt.NDArray[Any]
#: ``--frames`` values besides indices.
FRAME_CHOICES = ("all", "first")
FrameSelection = str | tuple[int, ...]


def parse_frames(text: str) -> FrameSelection:
    """``all``, ``first`` or comma-separated 0-based indices (``0,2,5``).

    Raises:
        ConvcliError: anything else, or a negative index.
    """
    value = text.strip().lower()
    if value in FRAME_CHOICES:
        return value
    try:
        indices = tuple(int(part) for part in value.split(","))
    except ValueError:
        raise ConvcliError(f"--frames takes all, first or indices I[,J...], not {text!r}") from None
    if min(indices) < 0:
        raise ConvcliError(f"--frames indices start at 0, got {text!r}")
    return indices


class Frame(NamedTuple):
    """One decoded frame and its timing: display time in ms, GIF-style disposal (0-3)."""

    pixels: Array
    duration: int = 0
    disposal: int = 0


@dataclass
class Frames:
    """The chosen frames of an image: the first decoded, the rest read by :meth:`rest`."""

    first: Image
    indices: tuple[int, ...]
    total: int
    loop: int | None = None
    first_timing: tuple[int, int] = (0, 0)
    source: Path | bytes = field(default=b"", repr=False)
    name: str = ""
    limits: tuple[int, int] = (DEFAULT_MAX_PIXELS, DEFAULT_MAX_BYTES)

    def __post_init__(self) -> None:
        #: Every frame's shape: the first's (its pixels may be released once filtered).
        self.shape: tuple[int, ...] = self.first.pixels.shape

    @property
    def count(self) -> int:
        return len(self.indices)

    def rest(self) -> Iterator[Frame]:
        """Decode the chosen frames after the first, one at a time."""
        return self.read(self.indices[1:])

    def read(self, indices: tuple[int, ...]) -> Iterator[Frame]:
        """Decode the frames ``indices``, one at a time, in that order."""
        if not indices:
            return iter(())
        if self.first.format == "tiff":
            return _tiff_frames(self, indices)
        return _pillow_frames(self, indices)


def _chosen(selection: FrameSelection, total: int, name: str) -> tuple[int, ...]:
    if selection == "all":
        return tuple(range(total))
    if selection == "first":
        return (0,)
    assert isinstance(selection, tuple)
    beyond = [index for index in selection if index >= total]
    if beyond:
        raise ConvcliError(
            f"{name}: --frames {beyond[0]}: the image has {total} frame{'s' * (total != 1)} "
            f"(0 to {total - 1})"
        )
    return selection


def read_frames(
    source: Path | bytes,
    *,
    name: str,
    selection: FrameSelection = "all",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Frames:
    """Count an image's frames, choose them, and decode the first chosen one.

    Raises:
        ConvcliError: an index beyond the last frame.
        InputError, LimitError: as :func:`convcli.io.images.read_image`.
    """
    with _opened(source, name) as handle:
        fmt, _ = _sniff_image(handle, name)
        with decoder_errors(name, max_pixels=max_pixels):
            total, loop, timing = _frame_info(handle, fmt, name)
    indices = _chosen(selection, total, name)
    first = read_image(source, name=name, max_pixels=max_pixels, max_bytes=max_bytes)
    frames = Frames(first, indices, total, loop, timing, source, name, (max_pixels, max_bytes))
    if indices[0] != 0:  # the first chosen frame is a later one: same file, other pixels
        frame = next(frames.read(indices[:1]))
        frames.first = replace(first, pixels=frame.pixels)
        frames.first_timing = (frame.duration, frame.disposal)
    return frames


def _frame_info(handle: IO[bytes], fmt: str, name: str) -> tuple[int, int | None, tuple[int, int]]:
    """(frame count, loop count or None, the first frame's (duration, disposal))."""
    if fmt == "tiff":
        from convcli.io.tiff import tiff_page_count

        return max(tiff_page_count(handle), 1), None, (0, 0)
    with pillow_open(handle, fmt) as opened:
        total = int(getattr(opened, "n_frames", 1))
        loop = opened.info.get("loop")
        timing = (int(opened.info.get("duration") or 0), _disposal(opened))
    return max(total, 1), loop if isinstance(loop, int) else None, timing


def _disposal(opened: Any) -> int:
    """GIF-style disposal of the current frame (APNG's dispose_op mapped to it)."""
    if opened.format == "GIF":
        return int(getattr(opened, "disposal_method", 0) or 0)
    if opened.format == "PNG":
        return {1: 2, 2: 3}.get(int(opened.info.get("disposal", 0) or 0), 0)
    return 0


def _pillow_frames(frames: Frames, indices: tuple[int, ...]) -> Iterator[Frame]:
    name, (max_pixels, _) = frames.name, frames.limits
    shape = frames.shape
    mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}.get(shape[2] if len(shape) == 3 else 1, "RGB")
    with _opened(frames.source, name) as handle:
        fmt, prefix = _sniff_image(handle, name)
        with decoder_errors(name, max_pixels=max_pixels), pillow_open(handle, fmt) as opened:
            check_pixels(*opened.size, max_pixels, name)
            plan = pillow_plan(opened, fmt, prefix, name)
            if plan.png16 is not None:
                raise InputError(f"{name}: a 16-bit animated PNG is read as its first frame only")
            for index in indices:
                opened.seek(index)
                opened.load()
                pixels = np.asarray(opened.convert(mode))
                if pixels.shape[:2] != shape[:2]:
                    raise InputError(f"{name}: frame {index} has another size than the first")
                if index == 0:
                    pixels = decode_pillow(opened, plan, handle, name)
                duration = int(opened.info.get("duration") or 0)
                yield Frame(pixels, duration, _disposal(opened))


def _tiff_frames(frames: Frames, indices: tuple[int, ...]) -> Iterator[Frame]:
    from convcli.io.tiff import read_tiff

    name, (max_pixels, max_bytes) = frames.name, frames.limits
    with _opened(frames.source, name) as handle:
        for index in indices:
            handle.seek(0)
            with decoder_errors(name, max_pixels=max_pixels):
                page = read_tiff(
                    handle, name=name, max_pixels=max_pixels, max_bytes=max_bytes, page=index
                )
            yield Frame(page.pixels)
