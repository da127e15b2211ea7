"""Plain-loop backward passes: obviously correct, slow, for tests only.

Each loop visits every output (and every filter, or every window tap) and adds that output's
gradient where the forward read from, in float64. Nothing is shared with convcli: padding,
layouts, output sizes, the pad modes' index maps (np.pad of an index ramp) and PyTorch's
max-pool tie rule are re-derived here.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[Any]

NP_PAD_MODES = {"zeros": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}


class Grads(NamedTuple):
    input: Array
    weight: Array
    bias: Array | None


def pair(value: Any) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def padding4(
    padding: Any, hw: tuple[int, int], k: tuple[int, int], s: tuple[int, int], d: tuple[int, int]
) -> tuple[int, int, int, int]:
    if padding == "valid":
        return (0, 0, 0, 0)
    if padding == "same":
        sides = []
        for n, kk, ss, dd in zip(hw, k, s, d, strict=True):
            out = math.ceil(n / ss)
            total = max((out - 1) * ss + dd * (kk - 1) + 1 - n, 0)
            sides += [total // 2, total - total // 2]
        return (sides[0], sides[1], sides[2], sides[3])
    if isinstance(padding, int):
        return (padding,) * 4
    if len(padding) == 2:
        return (padding[0], padding[0], padding[1], padding[1])
    return (padding[0], padding[1], padding[2], padding[3])


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


def bank_of(w: Array, channels: int, groups: int, kernel_layout: str) -> tuple[Array, int]:
    """Weights as (F, kh, kw, C/groups) filters and the group count."""
    if w.ndim == 2:
        return np.stack([w[:, :, None]] * channels), channels
    if w.ndim == 3:
        return w[None], 1
    if kernel_layout == "OIHW":
        return np.moveaxis(w, 1, 3), groups
    if kernel_layout == "HWIO":
        return np.moveaxis(w, 3, 0), groups
    return w, groups


def weights_of(bank_grad: Array, w: Array, kernel_layout: str) -> Array:
    """The gradient of the bank in the shape of ``w`` (2-D weights: summed over channels)."""
    if w.ndim == 2:
        return bank_grad[:, :, :, 0].sum(axis=0)
    if w.ndim == 3:
        return bank_grad[0]
    if kernel_layout == "OIHW":
        return np.moveaxis(bank_grad, 3, 1)
    if kernel_layout == "HWIO":
        return np.moveaxis(bank_grad, 0, 3)
    return bank_grad


def index_map(n: int, before: int, after: int, mode: str) -> Array:
    """Input position each padded position copies (-1: a zero)."""
    if mode == "zeros":
        return np.pad(np.arange(n), (before, after), constant_values=-1)
    return np.pad(np.arange(n), (before, after), mode=NP_PAD_MODES[mode])  # type: ignore[call-overload]


def conv2d_backward_loop(
    grad_output: Any,
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
) -> Grads:
    x = np.asarray(x)
    w = np.asarray(w)
    images = to_nhwc(x, layout).astype(np.float64)
    n_images, height, width, channels = images.shape
    bank, groups = bank_of(w.astype(np.float64), channels, groups, kernel_layout)
    if flip:
        bank = bank[:, ::-1, ::-1, :]
    filters, kh, kw, per_group = bank.shape
    sh, sw = pair(stride)
    dh, dw = pair(dilation)
    top, bottom, left, right = padding4(padding, (height, width), (kh, kw), (sh, sw), (dh, dw))
    rows = index_map(height, top, bottom, pad_mode)
    cols = index_map(width, left, right, pad_mode)
    out_h = (height + top + bottom - dh * (kh - 1) - 1) // sh + 1
    out_w = (width + left + right - dw * (kw - 1) - 1) // sw + 1
    g = to_nhwc(np.asarray(grad_output, dtype=np.float64), layout)
    per_filter_group = filters // groups
    grad_x = np.zeros_like(images)
    grad_bank = np.zeros_like(bank)
    for n in range(n_images):
        for i in range(out_h):
            for j in range(out_w):
                for f in range(filters):
                    first = (f // per_filter_group) * per_group
                    for a in range(kh):
                        for b in range(kw):
                            r = rows[i * sh + a * dh]
                            q = cols[j * sw + b * dw]
                            if r < 0 or q < 0:
                                continue
                            pixels = images[n, r, q, first : first + per_group]
                            grad_bank[f, a, b] += g[n, i, j, f] * pixels
                            grad_x[n, r, q, first : first + per_group] += (
                                g[n, i, j, f] * bank[f, a, b]
                            )
    if flip:
        grad_bank = grad_bank[:, ::-1, ::-1, :]
    grad_b = None
    if bias is not None:
        sums = g.sum(axis=(0, 1, 2))
        grad_b = sums if np.ndim(bias) == 1 else np.asarray(sums.sum())
    return Grads(from_nhwc(grad_x, x.ndim, layout), weights_of(grad_bank, w, kernel_layout), grad_b)


def conv_transpose2d_loop(
    x: Any,
    weights: Any,
    bias: Any = None,
    *,
    stride: Any = 1,
    padding: Any = 0,
    output_padding: Any = 0,
    groups: int = 1,
    dilation: Any = 1,
    layout: str = "NHWC",
    kernel_layout: str = "OHWI",
) -> Array:
    """PyTorch's definition: out[i*s + a*d - pad] += x[i] * w[a], cropped to the output size."""
    x = np.asarray(x)
    w = np.asarray(weights, dtype=np.float64)
    images = to_nhwc(x, layout).astype(np.float64)
    n_images, in_h, in_w, filters = images.shape
    if w.ndim == 2:
        channels = filters
    elif w.ndim == 3:
        channels = w.shape[2]
    else:
        per_group = w.shape[{"OHWI": 3, "OIHW": 1, "HWIO": 2}[kernel_layout]]
        channels = per_group * groups
    bank, groups = bank_of(w, channels, groups, kernel_layout)
    _, kh, kw, per_group = bank.shape
    sh, sw = pair(stride)
    dh, dw = pair(dilation)
    oph, opw = pair(output_padding)
    top, bottom, left, right = padding4(padding, (in_h, in_w), (kh, kw), (sh, sw), (dh, dw))
    out_h = (in_h - 1) * sh + dh * (kh - 1) + 1 - top - bottom + oph
    out_w = (in_w - 1) * sw + dw * (kw - 1) + 1 - left - right + opw
    per_filter_group = filters // groups
    out = np.zeros((n_images, out_h, out_w, channels))
    for n in range(n_images):
        for i in range(in_h):
            for j in range(in_w):
                for f in range(filters):
                    first = (f // per_filter_group) * per_group
                    for a in range(kh):
                        for b in range(kw):
                            r = i * sh + a * dh - top
                            q = j * sw + b * dw - left
                            if 0 <= r < out_h and 0 <= q < out_w:
                                out[n, r, q, first : first + per_group] += (
                                    images[n, i, j, f] * bank[f, a, b]
                                )
    if bias is not None:
        out += np.broadcast_to(np.asarray(bias, dtype=np.float64), (channels,))
    return from_nhwc(out, x.ndim, layout)


def pool_size(n: int, k: int, s: int, d: int, before: int, after: int, ceil_mode: bool) -> int:
    span = n + before + after - d * (k - 1) - 1
    out = (math.ceil(span / s) if ceil_mode else span // s) + 1
    if ceil_mode and (out - 1) * s >= n + before:
        out -= 1
    return out


def pool2d_backward_loop(
    grad_output: Any,
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
    """Max: the gradient goes to the tap PyTorch's CPU kernel picks, scanning the window's
    in-input taps row by row: a tap replaces the choice when greater, or when NaN; the
    first in-input tap is the choice before any is read. Average: split over the window."""
    x = np.asarray(x)
    images = to_nhwc(x, layout).astype(np.float64)
    n_images, height, width, channels = images.shape
    kh, kw = pair(size)
    sh, sw = pair(size if stride is None else stride)
    dh, dw = pair(dilation)
    top, bottom, left, right = padding4(padding, (height, width), (kh, kw), (sh, sw), (dh, dw))
    out_h = pool_size(height, kh, sh, dh, top, bottom, ceil_mode)
    out_w = pool_size(width, kw, sw, dw, left, right, ceil_mode)
    g = to_nhwc(np.asarray(grad_output, dtype=np.float64), layout)
    grad = np.zeros_like(images)
    for n in range(n_images):
        for i in range(out_h):
            for j in range(out_w):
                for c in range(channels):
                    inside = []
                    counted = 0
                    for a in range(kh):
                        for b in range(kw):
                            r = i * sh - top + a * dh
                            q = j * sw - left + b * dw
                            real = 0 <= r < height and 0 <= q < width
                            in_padded = -top <= r < height + bottom and -left <= q < width + right
                            if real:
                                inside.append((r, q))
                            if real or (count_include_pad and in_padded):
                                counted += 1
                    if op == "avg":
                        for r, q in inside:
                            grad[n, r, q, c] += g[n, i, j, c] / counted
                        continue
                    if not inside:
                        continue
                    chosen, best = inside[0], -np.inf
                    for r, q in inside:
                        value = images[n, r, q, c]
                        if value > best or np.isnan(value):
                            chosen, best = (r, q), value
                    grad[n, chosen[0], chosen[1], c] += g[n, i, j, c]
    return from_nhwc(grad, x.ndim, layout)
