"""click parameter types for convcli's flags: pairs, paddings and byte sizes."""

from __future__ import annotations

import math
from typing import Any

import click


class PairType(click.ParamType[Any, Any]):
    """``N`` or ``H,W``, each a positive int."""

    name = "N|H,W"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, int | tuple):
            return value
        parts = str(value).split(",")
        try:
            numbers = [int(part) for part in parts]
        except ValueError:
            self.fail(f"{value!r} is not N or H,W (positive integers)", param, ctx)
        if len(numbers) not in (1, 2) or min(numbers) < 1:
            self.fail(f"{value!r} is not N or H,W (positive integers)", param, ctx)
        return numbers[0] if len(numbers) == 1 else (numbers[0], numbers[1])


class PaddingType(click.ParamType[Any, Any]):
    """``same``, ``valid``, ``N``, ``PH,PW`` or ``T,B,L,R`` (non-negative ints)."""

    name = "same|valid|N|PH,PW|T,B,L,R"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if not isinstance(value, str):
            return value
        text = value.strip().lower()
        if text in ("same", "valid"):
            return text
        try:
            numbers = [int(part) for part in text.split(",")]
        except ValueError:
            self.fail(f"{value!r} is not same, valid, N, PH,PW or T,B,L,R", param, ctx)
        if len(numbers) not in (1, 2, 4):
            self.fail(f"{value!r} needs 1, 2 or 4 numbers", param, ctx)
        if min(numbers) < 0:
            self.fail(f"{value!r} has a negative padding", param, ctx)
        return numbers[0] if len(numbers) == 1 else tuple(numbers)


class ByteSize(click.ParamType[Any, Any]):
    """A byte count, optionally with a K, M, G or T suffix (powers of 1024)."""

    name = "BYTES"
    units = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, int):
            return value
        text = str(value).strip().upper().removesuffix("IB").removesuffix("B")
        unit = text[-1:] if text[-1:] in "KMGT" else ""
        try:
            number = float(text[: len(text) - len(unit)]) * self.units[unit]
        except ValueError:
            self.fail(f"{value!r} is not a size such as 4G, 512M or 1000000", param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite size", param, ctx)
        if number < 1:
            self.fail(f"{value!r} must be at least 1 byte", param, ctx)
        return int(number)


class ColorType(click.ParamType[Any, Any]):
    """A colour: a name (white, black, ...), ``#rgb`` or ``#rrggbb``; RGB in [0, 1]."""

    name = "COLOR"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        from convcli.errors import ConvcliError
        from convcli.io.pixels import parse_color

        if isinstance(value, tuple):
            return value
        try:
            return parse_color(str(value))
        except ConvcliError as error:
            self.fail(str(error).removeprefix("--background: "), param, ctx)


class FramesType(click.ParamType[Any, Any]):
    """``all``, ``first`` or 0-based frame indices ``I[,J...]``."""

    name = "all|first|I[,J...]"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        from convcli.errors import ConvcliError
        from convcli.io.frames import parse_frames

        if isinstance(value, tuple):
            return value
        try:
            return parse_frames(str(value))
        except ConvcliError as error:
            self.fail(str(error).removeprefix("--frames "), param, ctx)


PAIR = PairType()
PADDING = PaddingType()
BYTES = ByteSize()
COLOR = ColorType()
FRAMES = FramesType()


class Tolerance(click.ParamType[Any, Any]):
    """A finite float >= 0."""

    name = "float"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(number) or number < 0:
            self.fail(f"{value!r} must be a finite number >= 0", param, ctx)
        return number


TOLERANCE = Tolerance()
