"""Small checks shared by the library's entry points: allowed values, tolerances, shapes.

Each raises :class:`~convcli.errors.ConvcliError` (or the subclass given) with a message that
names the argument and what was wrong with it, in one wording everywhere.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TypeVar

import numpy as np

from convcli.errors import ConvcliError, join_or

Choice = TypeVar("Choice", bound=str)


def one_of(
    value: object,
    choices: Sequence[Choice],
    name: str,
    *,
    error: type[ConvcliError] = ConvcliError,
) -> Choice:
    """``value`` if it is one of ``choices``; else ``error("NAME must be one of ...")``."""
    for choice in choices:
        if value == choice:
            return choice
    raise error(f"{name} must be one of {', '.join(choices)}, got {value!r}")


def tolerance(value: object, name: str, *, error: type[ConvcliError] = ConvcliError) -> float:
    """``value`` as a float that is finite and >= 0 (an rtol or atol)."""
    if isinstance(value, bool | np.bool_) or not isinstance(
        value, int | float | np.integer | np.floating
    ):
        raise error(f"{name} must be a finite number >= 0, got {value!r}")
    number = float(value)
    if not math.isfinite(number) or number < 0:
        raise error(f"{name} must be a finite number >= 0, got {value!r}")
    return number


def no_empty_dimension(shape: tuple[int, ...], what: str) -> None:
    """Refuse a shape with a zero-length axis (``what`` names the array)."""
    if min(shape, default=1) < 1:
        raise ConvcliError(f"{what} has an empty dimension: shape {shape}")


__all__ = ["join_or", "no_empty_dimension", "one_of", "tolerance"]
