"""The named kernel presets (``convcli kernels``): module-level weights citing their source,
and parameterized builders (``gaussian:size=7,sigma=1.5``).

convcli computes cross-correlation, like PyTorch, TensorFlow and OpenCV, so the derivative
presets are printed the way OpenCV documents them: ``sobel-x`` is positive where intensity
increases to the right, ``sobel-y`` where it increases downwards.
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

from convcli.errors import KernelError
from convcli.kernels.kernel import FloatArray, Kernel, format_number, read_only
from convcli.limits import MAX_KERNEL_WEIGHTS

#: Largest size/length a preset accepts: what the kernel-size limit allows (999 x 999).
MAX_PRESET_SIZE = math.isqrt(MAX_KERNEL_WEIGHTS) - (1 - math.isqrt(MAX_KERNEL_WEIGHTS) % 2)
#: Largest sharpening amount a preset accepts.
MAX_PRESET_AMOUNT = 1e6


def _constant(rows: list[list[float]]) -> FloatArray:
    return read_only(np.array(rows, dtype=np.float64))


# Wikipedia, "Kernel (image processing)": identity.
IDENTITY = _constant([[0, 0, 0], [0, 1, 0], [0, 0, 0]])
# Wikipedia, "Discrete Laplace operator" (5-point stencil); OpenCV cv::Laplacian with ksize=1.
LAPLACIAN_4 = _constant([[0, 1, 0], [1, -4, 1], [0, 1, 0]])
# Wikipedia, "Discrete Laplace operator" (9-point stencil with diagonals).
LAPLACIAN_8 = _constant([[1, 1, 1], [1, -8, 1], [1, 1, 1]])
# Wikipedia, "Kernel (image processing)": sharpen, = IDENTITY - LAPLACIAN_4.
SHARPEN = _constant([[0, -1, 0], [-1, 5, -1], [0, -1, 0]])
# Wikipedia, "Kernel (image processing)": edge detection, = -LAPLACIAN_8.
EDGE = _constant([[-1, -1, -1], [-1, 8, -1], [-1, -1, -1]])
# GIMP manual, "Convolution Matrix" filter: emboss (sums to 1, so flat areas keep their value).
EMBOSS = _constant([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]])
# OpenCV docs, "Sobel Derivatives" (cv::Sobel, ksize=3); scikit-image filters.sobel_v up to 1/4.
SOBEL_X = _constant([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]])
SOBEL_Y = SOBEL_X.T
# Wikipedia, "Prewitt operator"; scikit-image filters.prewitt_v up to its 1/3 scale.
PREWITT_X = _constant([[-1, 0, 1], [-1, 0, 1], [-1, 0, 1]])
PREWITT_Y = PREWITT_X.T
# OpenCV docs, cv::Scharr; Wikipedia, "Sobel operator", section "Alternative operators".
SCHARR_X = _constant([[-3, 0, 3], [-10, 0, 10], [-3, 0, 3]])
SCHARR_Y = SCHARR_X.T

#: Parameter types; a default of None means "auto" (and accepts the value ``auto``).
_PARAM_TYPES: dict[str, type[int] | type[float]] = {
    **dict.fromkeys(("size", "length", "neighbours"), int),
    **dict.fromkeys(("sigma", "amount", "angle"), float),
}
# Photo presets are normalized and replicate the border so edges don't darken.
_PHOTO: Mapping[str, Any] = MappingProxyType({"padding": "same", "pad_mode": "replicate"})
_DERIVATIVE: Mapping[str, Any] = MappingProxyType({"padding": "same"})
_WIKI_KERNEL = 'Wikipedia, "Kernel (image processing)"'
_Builder = Callable[..., FloatArray]


@dataclass(frozen=True)
class Preset:
    """A named kernel: ``builder(**params)`` returns its weights; ``options`` its defaults."""

    name: str
    description: str
    params: Mapping[str, int | float | None]
    citation: str
    builder: _Builder
    options: Mapping[str, Any] = field(default_factory=dict)


#: Every preset by name, in the order `convcli kernels` lists them.
PRESETS: dict[str, Preset] = {}


def _preset(
    name: str, description: str, citation: str, options: Mapping[str, Any] = _PHOTO
) -> Callable[[_Builder], _Builder]:
    """Register the decorated builder as a preset; its keyword defaults are the parameters."""

    def register(builder: _Builder) -> _Builder:
        params = {p.name: p.default for p in inspect.signature(builder).parameters.values()}
        PRESETS[name] = Preset(name, description, params, citation, builder, options)
        return builder

    return register


def _check_size(value: int, param: str = "size", *, odd: bool = True) -> int:
    if not 1 <= value <= MAX_PRESET_SIZE or (odd and value % 2 == 0):
        kind = "an odd integer" if odd else "an integer"
        raise KernelError(f"{param} must be {kind} from 1 to {MAX_PRESET_SIZE}, got {value}")
    return value


def _check_amount(amount: float) -> float:
    # Far past any visible effect already; larger amounts only push weights past float32.
    if amount < 0:
        raise KernelError(f"amount must be >= 0, got {amount:g}")
    if amount > MAX_PRESET_AMOUNT:
        raise KernelError(f"amount must be at most {MAX_PRESET_AMOUNT:g}, got {amount:g}")
    return amount


@_preset("identity", "Identity: output equals input", _WIKI_KERNEL)
def _identity(size: int = 3) -> FloatArray:
    weights = np.zeros((_check_size(size), size))
    weights[size // 2, size // 2] = 1.0
    return weights


@_preset("box", "Box blur: mean of a size x size window", 'Wikipedia, "Box blur"')
def _box(size: int = 3) -> FloatArray:
    _check_size(size, odd=False)  # even boxes are fine: padding="same" puts the extra row last
    return np.full((size, size), 1.0 / (size * size))


@_preset(
    "gaussian",
    "Gaussian blur; auto sigma: OpenCV's 0.3*((size-1)/2-1)+0.8, auto size: 3 sigma a side",
    "OpenCV docs, cv::getGaussianKernel",
)
def gaussian_weights(size: int | None = None, sigma: float | None = None) -> FloatArray:
    """Return a normalized (size, size) Gaussian, the outer product of two 1-D Gaussians.

    ``sigma=None`` follows OpenCV's cv::getGaussianKernel: 0.3 * ((size - 1) / 2 - 1) + 0.8.
    ``size=None`` is 2 * ceil(3 * sigma) + 1 (three sigmas each side), or 5 when both are None.
    """
    if sigma is not None and sigma <= 0:
        raise KernelError(f"sigma must be > 0 (or auto), got {sigma:g}")
    if size is None:
        size = 5 if sigma is None else 2 * math.ceil(3 * sigma) + 1
        if size > MAX_PRESET_SIZE:
            raise KernelError(f"sigma={sigma:g} needs size {size}, over {MAX_PRESET_SIZE}")
    _check_size(size)
    if sigma is None:
        sigma = 0.3 * ((size - 1) * 0.5 - 1) + 0.8
    offsets = np.arange(size) - (size - 1) / 2
    with np.errstate(over="ignore", under="ignore"):  # a tiny sigma is a discrete delta
        profile = np.exp(-0.5 * (offsets / sigma) ** 2)
    profile /= profile.sum()
    return np.outer(profile, profile)


@_preset("sharpen", "Sharpen: identity - amount * 4-neighbour Laplacian", _WIKI_KERNEL)
def _sharpen(amount: float = 1.0) -> FloatArray:
    return IDENTITY - _check_amount(amount) * LAPLACIAN_4


@_preset(
    "unsharp",
    "Unsharp mask: identity + amount * (identity - gaussian)",
    'Gonzalez & Woods, "Digital Image Processing", 3.6.3 "Unsharp masking"',
)
def _unsharp(
    size: int | None = None, sigma: float | None = None, amount: float = 1.0
) -> FloatArray:
    blur = gaussian_weights(size, sigma)
    identity = _identity(blur.shape[0])
    return identity + _check_amount(amount) * (identity - blur)


@_preset(
    "motion-blur",
    "Motion blur: a line of length pixels at angle degrees counter-clockwise",
    "after MATLAB fspecial('motion', length, angle)",
)
def _motion_blur(length: int = 9, angle: float = 0.0) -> FloatArray:
    """A line of ``length`` pixels through the centre at ``angle`` degrees counter-clockwise
    from the horizontal, antialiased as max(0, 1 - distance to the segment), normalized."""
    centre = (_check_size(length, "length") - 1) / 2
    theta = math.radians(angle)
    # Rounded so that 0, 90, 180... degrees give exact axis-aligned lines.
    dx, dy = round(math.cos(theta), 12), -round(math.sin(theta), 12)  # rows point down
    rows, cols = np.mgrid[0:length, 0:length] - centre
    along = np.clip(cols * dx + rows * dy, -centre, centre)
    distance = np.hypot(cols - along * dx, rows - along * dy)
    weights: FloatArray = np.clip(1.0 - distance, 0.0, None)
    weights /= weights.sum()
    return weights


@_preset(
    "emboss", "Emboss: relief along the diagonal, sums to 1", "GIMP manual, Convolution Matrix"
)
def _emboss() -> FloatArray:
    return np.array(EMBOSS)


@_preset(
    "laplacian",
    "Discrete Laplacian (neighbours=4 or 8), sums to 0",
    'Wikipedia, "Discrete Laplace operator"',
    _DERIVATIVE,
)
def _laplacian(neighbours: int = 4) -> FloatArray:
    if neighbours not in (4, 8):
        raise KernelError(f"neighbours must be 4 or 8, got {neighbours}")
    return np.array(LAPLACIAN_4 if neighbours == 4 else LAPLACIAN_8)


def _fixed(name: str, weights: FloatArray, description: str, citation: str) -> None:
    _preset(name, description, citation, _DERIVATIVE)(lambda: np.array(weights))


_fixed("edge", EDGE, "Outline edge detector (8-neighbour), sums to 0", _WIKI_KERNEL)
_fixed("sobel-x", SOBEL_X, "Sobel d/dx: responds to vertical edges", "OpenCV docs, cv::Sobel")
_fixed("sobel-y", SOBEL_Y, "Sobel d/dy (y down): horizontal edges", "OpenCV docs, cv::Sobel")
_fixed("prewitt-x", PREWITT_X, "Prewitt d/dx: vertical edges", 'Wikipedia, "Prewitt operator"')
_fixed("prewitt-y", PREWITT_Y, "Prewitt d/dy: horizontal edges", 'Wikipedia, "Prewitt operator"')
_fixed("scharr-x", SCHARR_X, "Scharr d/dx: more isotropic than Sobel", "OpenCV docs, cv::Scharr")
_fixed("scharr-y", SCHARR_Y, "Scharr d/dy: more isotropic than Sobel", "OpenCV docs, cv::Scharr")


def _format_params(values: Mapping[str, int | float | None]) -> str:
    return ", ".join(
        f"{key}={'auto' if value is None else format_number(float(value))}"
        for key, value in values.items()
    )


def _parse_param(preset: Preset, key: str, raw: str) -> int | float | None:
    if raw == "auto" and preset.params[key] is None:
        return None
    if _PARAM_TYPES[key] is int:
        if not re.fullmatch(r"[+-]?\d{1,9}", raw):
            raise KernelError(f"{preset.name}: {key} must be an integer, got {raw!r}")
        return int(raw)
    try:
        value = float(raw)
    except ValueError:
        raise KernelError(f"{preset.name}: {key} must be a number, got {raw!r}") from None
    if not math.isfinite(value):
        raise KernelError(f"{preset.name}: {key} must be a finite number, got {raw!r}")
    return value


def preset_kernel(spec: str) -> Kernel:
    """Build a preset from ``NAME`` or ``NAME:key=value,...`` (``gaussian:size=7,sigma=1.5``).

    Raises
    ------
    KernelError
        Unknown preset or parameter, a parameter given twice, or a bad value; the message
        names the preset and the parameter.
    """
    name, has_params, param_text = spec.partition(":")
    name = name.strip().lower()  # preset names are case-insensitive
    preset = PRESETS.get(name)
    if preset is None:
        raise KernelError(f"{name}: no such preset{suggestion(name)}")
    values = dict(preset.params)
    given: set[str] = set()
    for item in param_text.split(",") if has_params else ():
        key, equals, raw = (part.strip() for part in item.partition("="))
        if not equals or not key:
            raise KernelError(f"{name}: expected key=value, got {item.strip()!r}")
        if key not in preset.params:
            known = ", ".join(preset.params) or "none"
            raise KernelError(f"{name}: unknown parameter {key!r} (parameters: {known})")
        if key in given:
            raise KernelError(f"{name}: parameter {key!r} given twice")
        given.add(key)
        values[key] = _parse_param(preset, key, raw)
    try:
        weights = preset.builder(**values)
    except KernelError as error:
        raise KernelError(f"{name}: {error}") from None
    description = (
        f"{preset.description} [{_format_params(values)}]" if values else preset.description
    )
    return Kernel(
        weights=weights, name=name, description=description, source=spec, options=preset.options
    )


def is_preset(spec: str) -> bool:
    """Whether ``spec`` (``NAME`` or ``NAME:key=value,...``) names a preset, in any case."""
    return spec.partition(":")[0].strip().lower() in PRESETS


def suggestion(name: str) -> str:
    """`` (did you mean "..."?)`` for the closest preset name, or a pointer to the list."""
    import difflib  # only a misspelt name needs it

    close = difflib.get_close_matches(name.lower(), PRESETS, n=1)
    return f' (did you mean "{close[0]}"?)' if close else " (see `convcli kernels`)"


#: What ``convcli kernels`` shows for a preset without a pad mode of its own.
DEFAULT_PAD_MODE_TEXT = "replicate (arrays: zeros)"


def preset_table() -> list[tuple[str, str, str, str, str]]:
    """Rows for ``convcli kernels``: (name, size "HxW", pad mode, parameters, description).

    A preset without a pad mode of its own pads images by replicating the edge and arrays
    with zeros (the defaults of ``convcli conv``).
    """
    rows = []
    for preset in PRESETS.values():
        height, width = preset.builder(**preset.params).shape
        pad_mode = preset.options.get("pad_mode", DEFAULT_PAD_MODE_TEXT)
        params = _format_params(preset.params)
        rows.append((preset.name, f"{height}x{width}", pad_mode, params, preset.description))
    return rows
