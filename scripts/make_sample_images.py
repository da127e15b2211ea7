"""Write the small sample images in ``sample_images/`` (run from anywhere, no arguments needed).

Every image is drawn procedurally with NumPy from a fixed seed and written with convcli's own
encoders, so running this script again reproduces the files byte for byte. No third-party
content is involved.

Usage::

    python scripts/make_sample_images.py [OUTPUT_FOLDER]
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from convcli.io.images import encode_image

Array = npt.NDArray[Any]

SEED = 20_240_601
DEFAULT_FOLDER = Path(__file__).resolve().parent.parent / "sample_images"


def coverage(distance: Array) -> Array:
    """Anti-aliased inside-ness in [0, 1] from a signed distance (negative inside), in pixels."""
    return np.clip(0.5 - distance, 0.0, 1.0)


def grid(height: int, width: int) -> tuple[Array, Array]:
    """Pixel-center coordinates (y, x) as float arrays."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    return y + 0.5, x + 0.5


def to_uint8(values: Array) -> Array:
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def gray_shapes(height: int = 120, width: int = 160) -> Array:
    """8-bit gray: a left-to-right gradient with a disc, a ring, a square and a bar on it."""
    y, x = grid(height, width)
    image = 40 + 150 * x / width
    disc = coverage(np.hypot(x - 45, y - 45) - 25)
    ring = coverage(np.abs(np.hypot(x - 115, y - 70) - 28) - 4)
    square = coverage(np.maximum(np.abs(x - 50), np.abs(y - 95)) - 15)
    bar = coverage(np.abs((x - 80) * 0.6 + (y - 60) * 0.8) - 2) * (np.abs(x - 100) < 45)
    image = image * (1 - disc) + 235 * disc
    image = image * (1 - ring) + 20 * ring
    image = image * (1 - square) + 120 * square
    image = image * (1 - bar) + 250 * bar
    return to_uint8(image)


def photo_rgb(rng: np.random.Generator, height: int = 120, width: int = 160) -> Array:
    """A synthetic landscape: sky gradient, a glowing sun, two hills, a tree, fine texture."""
    y, x = grid(height, width)
    t = y / height
    sky = np.stack([70 + 120 * t, 130 + 90 * t, 230 - 30 * t], axis=-1)
    sun_distance = np.hypot(x - 118, y - 30)
    glow = np.exp(-((sun_distance / 22.0) ** 2))[..., None]
    image = sky * (1 - 0.6 * glow) + np.array([255, 240, 190]) * 0.6 * glow
    sun = coverage(sun_distance - 11)[..., None]
    image = image * (1 - sun) + np.array([255, 250, 220]) * sun
    for base, amplitude, period, phase, color in (
        (78, 9, 70, 0.3, (70, 120, 60)),
        (92, 6, 45, 1.7, (50, 100, 40)),
    ):
        ridge = base + amplitude * np.sin(2 * np.pi * x / period + phase)
        hill = coverage(ridge - y)[..., None]
        shade = (1.0 - 0.35 * (y - ridge).clip(0, 40) / 40)[..., None]
        image = image * (1 - hill) + np.array(color) * shade * hill
    trunk = coverage(np.maximum(np.abs(x - 35) - 2.5, np.abs(y - 86) - 10))[..., None]
    crown = coverage(np.hypot((x - 35) / 1.2, y - 66) - 13)[..., None]
    image = image * (1 - trunk) + np.array([90, 60, 35]) * trunk
    image = image * (1 - crown) + np.array([35, 80, 35]) * crown
    ground = (y > 80)[..., None]
    texture = rng.normal(0.0, 6.0, (height, width, 1)) * ground
    image = image + texture + rng.normal(0.0, 1.5, image.shape)
    return to_uint8(image)


def badge_rgba(height: int = 128, width: int = 128) -> Array:
    """RGBA: a rounded, gradient-filled badge with a hole, on a fully transparent background."""
    y, x = grid(height, width)
    box = np.maximum(np.abs(x - 64) - 40, np.abs(y - 64) - 40)
    rounded = np.hypot(np.maximum(np.abs(x - 64) - 28, 0), np.maximum(np.abs(y - 64) - 28, 0))
    outer = coverage(np.where(box > -12, rounded - 12, box))
    hole = coverage(np.hypot(x - 64, y - 64) - 16)
    alpha = outer * (1 - hole)
    red = 230 - 120 * y / height
    green = 80 + 140 * x / width
    blue = 120 + 100 * (1 - x / width) * (y / height)
    color = np.stack([red, green, blue], axis=-1) * (alpha[..., None] > 0)
    rgba: Array = np.concatenate([to_uint8(color), to_uint8(255 * alpha)[..., None]], axis=-1)
    return rgba


def depth_gray16(height: int = 128, width: int = 128) -> Array:
    """16-bit gray: a smooth depth map (tilted plane plus bumps) using the full 0-65535 range."""
    y, x = grid(height, width)
    depth = 0.5 * x / width + 0.3 * y / height
    for cy, cx, radius, bump in ((40, 40, 18, 0.25), (85, 90, 26, -0.2), (95, 30, 12, 0.15)):
        depth += bump * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * radius**2))
    depth = (depth - depth.min()) / (depth.max() - depth.min())
    levels: Array = np.rint(depth * 65535).astype(np.uint16)
    return levels


def palette_stripes(height: int = 128, width: int = 128) -> Array:
    """RGB with eight flat colors: checker, stripes and a disc (stored as a palette GIF)."""
    colors = np.array(
        [
            [240, 240, 235],
            [30, 30, 40],
            [220, 60, 50],
            [250, 190, 40],
            [60, 160, 90],
            [40, 110, 200],
            [150, 80, 170],
            [120, 120, 120],
        ],
        dtype=np.uint8,
    )
    y, x = np.mgrid[0:height, 0:width]
    index = ((x // 16 + y // 16) % 2).astype(np.intp)
    stripes = (y >= 80) & (y < 112)
    index = np.where(stripes, 2 + (x // 16) % 4, index)
    disc = (x - 64) ** 2 + (y - 40) ** 2 < 24**2
    index = np.where(disc, 6, index)
    index = np.where(disc & ((x - 64) ** 2 + (y - 40) ** 2 < 10**2), 7, index)
    picked: Array = colors[index]
    return picked


def field_float32(height: int = 96, width: int = 96) -> Array:
    """float32 in [-1, 1]: a smooth signed field (like a filter response), for TIFF float I/O."""
    y, x = grid(height, width)
    field = np.sin(2 * np.pi * x / 48) * np.cos(2 * np.pi * y / 64)
    field *= np.exp(-(((x - 48) / 60) ** 2 + ((y - 48) / 60) ** 2))
    scaled: Array = (field / np.abs(field).max()).astype(np.float32)
    return scaled


def main(argv: list[str]) -> int:
    folder = Path(argv[1]) if len(argv) > 1 else DEFAULT_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)
    photo = photo_rgb(rng)
    images: list[tuple[str, Array, str, int | None, str]] = [
        ("gray_shapes.png", gray_shapes(), "png", None, "8-bit gray"),
        ("photo_rgb.png", photo, "png", None, "8-bit RGB"),
        ("photo_rgb.jpg", photo, "jpeg", 90, "8-bit RGB, quality 90"),
        ("badge_rgba.png", badge_rgba(), "png", None, "8-bit RGBA, transparent background"),
        ("depth_gray16.png", depth_gray16(), "png", None, "16-bit gray"),
        ("palette_stripes.gif", palette_stripes(), "gif", None, "8-color palette"),
        ("field_float32.tif", field_float32(), "tiff", None, "float32 gray, values in [-1, 1]"),
    ]
    total = 0
    for name, pixels, fmt, quality, description in images:
        data = encode_image(pixels, format=fmt, quality=quality, name=name)
        (folder / name).write_bytes(data)
        total += len(data)
        size = "x".join(str(n) for n in pixels.shape[1::-1])
        print(f"{folder / name}: {size} {description}, {len(data):,} bytes")
    print(f"{len(images)} images, {total:,} bytes in {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
