"""Plain-loop reference implementations: obviously correct, slow, for tests only.

This is the seed repository's algorithm (loop over images, output rows, output columns and
filters; multiply a window by a filter and sum), generalized to every parameter of the engine.
It shares no code with convcli.engine: padding, layouts and output sizes are re-derived here.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[Any]

NP_PAD_MODES = {"zeros": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def pair(value: Any) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def same_padding(n: int, k: int, s: int, d: int) -> tuple[int, int]:
    """TensorFlow's SAME: out = ceil(n / s); the odd pixel goes after."""
    out = math.ceil(n / s)
    total = max((out - 1) * s + d * (k - 1) + 1 - n, 0)
    return total // 2, total - total // 2


def padding4(
    padding: Any, hw: tuple[int, int], k: tuple[int, int], s: tuple[int, int], d: tuple[int, int]
) -> tuple[int, int, int, int]:
    if padding == "valid":
        return (0, 0, 0, 0)
    if padding == "same":
        return (*same_padding(hw[0], k[0], s[0], d[0]), *same_padding(hw[1], k[1], s[1], d[1]))
    if isinstance(padding, int):
        return (padding,) * 4
    if len(padding) == 2:
        return (padding[0], padding[0], padding[1], padding[1])
    return tuple(padding)  # type: ignore[return-value]


def to_nhwc(x: Array, layout: str) -> Array:
    if x.ndim == 2:
        return x.reshape(1, x.shape[0], x.shape[1], 1)
    if x.ndim == 3:
        x = x[None]
    return np.moveaxis(x, 1, 3) if layout == "NCHW" else x


def from_nhwc(out: Array, rank: int, layout: str) -> Array:
    if rank == 2 and out.shape[3] == 1:
        return out[0, :, :, 0]
    if layout == "NCHW":
        out = np.moveaxis(out, 3, 1)
    return out[0] if rank in (2, 3) else out


def filters_ohwi(w: Array, channels: int, groups: int, kernel_layout: str) -> tuple[Array, int]:
    if w.ndim == 2:
        return np.stack([w[:, :, None]] * channels), channels
    if w.ndim == 3:
        return w[None], 1
    if kernel_layout == "OIHW":
        w = np.moveaxis(w, 1, 3)
    elif kernel_layout == "HWIO":
        w = np.moveaxis(w, 3, 0)
    return w, groups


def conv2d_loop(
    x: Any,
    w: Any,
    bias: Any = None,
    *,
    stride: Any = 1,
    padding: Any = 0,
    dilation: Any = 1,
    groups: int = 1,
    pad_mode: str = "zeros",
    flip: bool = False,
    layout: str = "NHWC",
    kernel_layout: str = "OHWI",
) -> Array:
    x = np.asarray(x)
    dtype = np.float64 if x.dtype == np.float64 else np.float32
    rank = x.ndim
    images = to_nhwc(x, layout).astype(np.float64)
    n_images, height, width, channels = images.shape
    bank, groups = filters_ohwi(np.asarray(w, dtype=np.float64), channels, groups, kernel_layout)
    if flip:
        bank = bank[:, ::-1, ::-1, :]
    filters, kh, kw, per_group = bank.shape
    sh, sw = pair(stride)
    dh, dw = pair(dilation)
    top, bottom, left, right = padding4(padding, (height, width), (kh, kw), (sh, sw), (dh, dw))
    padded = np.pad(
        images, ((0, 0), (top, bottom), (left, right), (0, 0)), mode=NP_PAD_MODES[pad_mode]
    )  # type: ignore[call-overload]
    out_h = (height + top + bottom - dh * (kh - 1) - 1) // sh + 1
    out_w = (width + left + right - dw * (kw - 1) - 1) // sw + 1
    per_filter_group = filters // groups
    out = np.zeros((n_images, out_h, out_w, filters))
    for n in range(n_images):
        for i in range(out_h):
            for j in range(out_w):
                for f in range(filters):
                    first = (f // per_filter_group) * per_group
                    window = padded[
                        n,
                        i * sh : i * sh + dh * (kh - 1) + 1 : dh,
                        j * sw : j * sw + dw * (kw - 1) + 1 : dw,
                        first : first + per_group,
                    ]
                    out[n, i, j, f] = np.sum(window * bank[f])
    if bias is not None:
        out += np.broadcast_to(np.asarray(bias, dtype=np.float64), (filters,))
    return from_nhwc(out, rank, layout).astype(dtype)


def pool_size(n: int, k: int, s: int, d: int, before: int, after: int, ceil_mode: bool) -> int:
    """PyTorch's pooling output size, ceil_mode's last-window rule included."""
    span = n + before + after - d * (k - 1) - 1
    out = (math.ceil(span / s) if ceil_mode else span // s) + 1
    if ceil_mode and (out - 1) * s >= n + before:
        out -= 1
    return out


def pool2d_loop(
    x: Any,
    size: Any,
    stride: Any = None,
    padding: Any = 0,
    dilation: Any = 1,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    layout: str = "NHWC",
    op: str = "max",
) -> Array:
    x = np.asarray(x)
    dtype = np.float64 if x.dtype == np.float64 else np.float32
    rank = x.ndim
    images = to_nhwc(x, layout).astype(np.float64)
    n_images, height, width, channels = images.shape
    kh, kw = pair(size)
    sh, sw = pair(size if stride is None else stride)
    dh, dw = pair(dilation)
    top, bottom, left, right = padding4(padding, (height, width), (kh, kw), (sh, sw), (dh, dw))
    out_h = pool_size(height, kh, sh, dh, top, bottom, ceil_mode)
    out_w = pool_size(width, kw, sw, dw, left, right, ceil_mode)
    out = np.zeros((n_images, out_h, out_w, channels))
    for n in range(n_images):
        for i in range(out_h):
            for j in range(out_w):
                for c in range(channels):
                    values = []
                    counted = 0
                    for a in range(kh):
                        for b in range(kw):
                            r = i * sh - top + a * dh
                            q = j * sw - left + b * dw
                            real = 0 <= r < height and 0 <= q < width
                            in_padded = -top <= r < height + bottom and -left <= q < width + right
                            if real:
                                values.append(images[n, r, q, c])
                            if real or (count_include_pad and in_padded):
                                counted += 1
                    if op == "max":
                        out[n, i, j, c] = max(values) if values else -np.inf
                    else:
                        out[n, i, j, c] = sum(values) / counted
    return from_nhwc(out, rank, layout).astype(dtype)
