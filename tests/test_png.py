"""convcli's PNG writer: spec-exact filters, pieces deflated on threads, the same bytes always."""

from __future__ import annotations

import io
import random
import zlib
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image as PILImage

from convcli.io import png
from convcli.io.images import encode_image, read_image
from convcli.io.png import adler32_combine, encode_png, filter_rows, paeth_predictor
from tests.test_images import decode_png_by_hand, filter_row, paeth

Array = npt.NDArray[Any]


def photo_like(shape: tuple[int, ...], dtype: type = np.uint8, seed: int = 0) -> Array:
    """Smooth gradients plus noise: rows pick different filters, as in a photograph."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0 : shape[0], 0 : shape[1]]
    top = np.iinfo(dtype).max
    base = (np.sin(x / 7.0) + np.cos(y / 5.0) + 2) / 4 * top
    if len(shape) == 3:
        base = np.stack([base * (0.5 + 0.5 * c / shape[2]) for c in range(shape[2])], axis=-1)
    noisy = base + rng.normal(0, top / 40, base.shape)
    return np.clip(noisy, 0, top).astype(dtype)


def test_paeth_predictor_matches_the_spec_for_every_byte_triple() -> None:
    """The 8-bit mask formulation against the spec's, for all 256**3 (a, b, c)."""
    left, up = (axis.ravel() for axis in np.mgrid[0:256, 0:256].astype(np.uint8))
    for up_left_value in range(256):
        up_left = np.full_like(left, up_left_value)
        estimate = left.astype(np.int16) + up - up_left
        distance_left = np.abs(estimate - left)
        distance_up = np.abs(estimate - up)
        distance_up_left = np.abs(estimate - up_left)
        expected = np.where(
            (distance_left <= distance_up) & (distance_left <= distance_up_left),
            left,
            np.where(distance_up <= distance_up_left, up, up_left),
        )
        np.testing.assert_array_equal(paeth_predictor(left, up, up_left), expected)
    assert paeth(200, 10, 90) == int(paeth_predictor(*np.uint8([[200], [10], [90]]))[0]) == 90


@pytest.mark.parametrize("bytes_per_pixel", [1, 2, 3, 4, 6, 8])
def test_filter_rows_picks_the_libpng_heuristic_filter_of_each_row(bytes_per_pixel: int) -> None:
    """Per row, the filter with the least sum of |signed residual| (first on ties), as loops."""
    rng = np.random.default_rng(bytes_per_pixel)
    smooth = photo_like((9, 8 * bytes_per_pixel))
    rows = np.concatenate([smooth, rng.integers(0, 256, (5, 8 * bytes_per_pixel), np.uint8)])
    rows[11] = 7  # a flat row: the none and up filters tie at zero cost for the next row too
    above = rng.integers(0, 256, rows.shape[1], np.uint8)
    out = filter_rows(rows, above, bytes_per_pixel=bytes_per_pixel)
    previous = above.tobytes()
    for index, row in enumerate(rows):
        candidates = [
            filter_row(row.tobytes(), previous, kind, bytes_per_pixel) for kind in range(5)
        ]
        costs = [sum(min(v, 256 - v) for v in candidate[1:]) for candidate in candidates]
        assert out[index].tobytes() == candidates[costs.index(min(costs))]
        previous = row.tobytes()


@pytest.mark.parametrize(
    ("shape", "dtype"),
    [((37, 23), np.uint8), ((37, 23, 2), np.uint8), ((37, 23, 3), np.uint8),
     ((37, 23, 4), np.uint8), ((37, 23), np.uint16), ((37, 23, 3), np.uint16),
     ((37, 23, 4), np.uint16), ((1, 1, 3), np.uint8)],
)  # fmt: skip
def test_png_in_many_pieces_decodes_exactly_whatever_the_thread_count(
    monkeypatch: pytest.MonkeyPatch, shape: tuple[int, ...], dtype: type
) -> None:
    """Tiny pieces and IDAT chunks: Pillow, our reader and a spec decoder get the pixels back."""
    monkeypatch.setattr(png, "PIECE_BYTES", 97)
    monkeypatch.setattr(png, "IDAT_BYTES", 61)
    pixels = photo_like(shape, dtype)
    data = encode_png(pixels, level=6, threads=1)
    assert data == encode_png(pixels, level=6, threads=3)
    assert data.count(b"IDAT") > 2 or pixels.nbytes < 61
    np.testing.assert_array_equal(read_image(data, name="x").pixels, pixels)
    if dtype == np.uint8:
        np.testing.assert_array_equal(np.asarray(PILImage.open(io.BytesIO(data))), pixels)
    _, samples = decode_png_by_hand(data)  # zlib checks the stream's Adler-32 here
    np.testing.assert_array_equal(samples.reshape(pixels.shape), pixels)


def test_png_output_is_the_same_through_encode_image_and_any_thread_count(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pixels = photo_like((300, 200, 3))
    first = encode_image(pixels, format="png", name="x")
    monkeypatch.setenv("CONVCLI_THREADS", "1")
    assert encode_image(pixels, format="png", name="<stdout>") == first
    monkeypatch.setenv("CONVCLI_THREADS", "4")
    assert encode_image(pixels, format="png", name="<stdout>") == first


def test_pieces_that_compress_well_also_try_the_default_strategy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Glyphs repeated on a flat page (a screenshot's text): LZ77 finds them, run-length not."""
    glyph = np.random.default_rng(3).integers(0, 256, (8, 8, 3), np.uint8)
    pixels = np.full((384, 384, 3), 255, np.uint8)
    for top in range(0, 384, 24):
        for left in range(0, 384, 16):
            pixels[top : top + 8, left : left + 8] = glyph
    both = encode_png(pixels, level=6)
    monkeypatch.setattr(png, "RLE_KEEP_RATIO", 0.0)  # run-length only
    run_length_only = encode_png(pixels, level=6)
    assert len(both) < 0.5 * len(run_length_only)
    np.testing.assert_array_equal(read_image(both, name="x").pixels, pixels)


def test_png_of_a_photo_is_no_larger_than_pillows_at_the_same_level() -> None:
    """Run-length deflate of filtered photographs costs no size against zlib's default."""
    pixels = photo_like((256, 256, 3), seed=5)
    buffer = io.BytesIO()
    PILImage.fromarray(pixels).save(buffer, format="PNG", compress_level=6)
    assert len(encode_png(pixels, level=6)) <= 1.02 * len(buffer.getvalue())


def test_adler32_combine_agrees_with_zlib() -> None:
    rng = random.Random(1)
    for _ in range(200):
        first = rng.randbytes(rng.randrange(0, 400))
        second = rng.randbytes(rng.choice([0, 1, 5552, 65521, 70000, rng.randrange(400)]))
        combined = adler32_combine(zlib.adler32(first), zlib.adler32(second), len(second))
        assert combined == zlib.adler32(first + second)
