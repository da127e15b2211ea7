"""Bounded fuzzing of every reader: mutated images, arrays and kernel files raise ConvcliError
subclasses (one clean message) and nothing else.

Seeds are the valid files of the hostile corpus (tests/hostile/corpus/valid_*) plus a few of
its hostile ones; mutations flip bits, overwrite and insert bytes (including "interesting"
values such as 0xFF and 0x7F), truncate, duplicate and splice in pieces of other seeds. Limits
are set low so that a mutation claiming a huge size is refused rather than decoded. Runs
derandomized in CI (a few seconds); set CONVCLI_FUZZ_EXAMPLES=20000 to explore further with
fresh randomness.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from convcli import kernels
from convcli.errors import ConvcliError
from convcli.io import arrays, sources
from tests.hostile.make_corpus import CORPUS

EXAMPLES = int(os.environ.get("CONVCLI_FUZZ_EXAMPLES", "200"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize="CONVCLI_FUZZ_EXAMPLES" not in os.environ,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)
MAX_BYTES = 16 * 1024 * 1024
MAX_PIXELS = 1 << 20
INTERESTING = (0x00, 0x01, 0x7F, 0x80, 0xFE, 0xFF)
SUFFIXES = (".png", ".jpg", ".tif", ".gif", ".bmp", ".webp", ".npy", ".npz")


def seeds(*names: str) -> list[bytes]:
    return [(CORPUS / name).read_bytes() for name in names]


IMAGE_SEEDS = seeds(
    "valid_gray.png",
    "valid_rgb.png",
    "valid_rgb.jpg",
    "valid_rgb.gif",
    "valid_rgb.bmp",
    "valid_rgb.webp",
    "valid_rgb.tif",
    "bomb_tiff_tile_65536.tif",
    "bomb_png_idat_zlib.png",
)
NPY_SEEDS = seeds("valid_x.npy", "npy_nan_inf.npy", "npy_8_channels.npy", "npy_strings.npy")
NPZ_SEEDS = seeds("valid_x.npz", "valid_dump.npz", "npz_ratio_bomb.npz")
KERNEL_SEEDS = [
    *seeds("valid_kernel.json", "k_bias_length.json", "k_5000_digits.json"),
    b'{"weights": [[[[1, 2], [3, 4]]], [[[5, 6], [7, 8]]]], "layout": "OIHW", "bias": [1, 2],'
    b' "stride": [1, 2], "padding": [0, 1, 1, 0], "groups": 1, "pad_mode": "reflect",'
    b' "flip": true, "scale": 0.5, "name": "x", "description": "\\u00e9"}',
    b"[[1e308, -1e-308], [0.5, 2E+3]]",
]


@st.composite
def mutated(draw: st.DrawFn, pool: list[bytes]) -> bytes:
    """One seed from ``pool`` with 1-6 random mutations applied."""
    data = bytearray(draw(st.sampled_from(pool)))
    for _ in range(draw(st.integers(1, 6))):
        size = len(data)
        where = draw(st.integers(0, max(size - 1, 0)))
        action = draw(
            st.sampled_from(["flip", "set", "insert", "delete", "truncate", "repeat", "splice"])
        )
        if action == "flip" and size:
            data[where] ^= 1 << draw(st.integers(0, 7))
        elif action == "set" and size:
            count = draw(st.integers(1, 4))
            byte = draw(st.sampled_from(INTERESTING) | st.integers(0, 255))
            data[where : where + count] = bytes([byte]) * len(data[where : where + count])
        elif action == "insert":
            data[where:where] = draw(st.binary(min_size=1, max_size=16))
        elif action == "delete":
            del data[where : where + draw(st.integers(1, 64))]
        elif action == "truncate":
            del data[where:]
        elif action == "repeat":
            data[where:where] = data[where : where + draw(st.integers(1, 64))]
        elif action == "splice":
            other = draw(st.sampled_from(pool))
            start = draw(st.integers(0, max(len(other) - 1, 0)))
            data[where:] = other[start:]
    return bytes(data)


def only_convcli_errors(read: Callable[[bytes], object], data: bytes) -> None:
    """``read(data)`` either succeeds or raises a ConvcliError; anything else fails the test."""
    try:
        read(data)
    except ConvcliError as error:
        message = str(error)
        assert message and "\n" not in message.strip()


@FUZZ
@given(mutated(IMAGE_SEEDS))
def test_fuzzed_images_raise_only_convcli_errors(data: bytes) -> None:
    """read_source on image bytes (format sniffed, as from stdin): clean errors only."""
    only_convcli_errors(
        lambda raw: sources.read_source(None, data=raw, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS),
        data,
    )


@FUZZ
@given(mutated(IMAGE_SEEDS + NPY_SEEDS + NPZ_SEEDS), st.sampled_from(SUFFIXES))
def test_fuzzed_files_raise_only_convcli_errors(data: bytes, suffix: str) -> None:
    """read_source on a file whose extension may lie about its (mutated) content."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"input{suffix}"
        path.write_bytes(data)
        only_convcli_errors(
            lambda _: sources.read_source(path, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS),
            data,
        )


@FUZZ
@given(mutated(NPY_SEEDS))
def test_fuzzed_npy_raise_only_convcli_errors(data: bytes) -> None:
    """arrays.read_npy on mutated .npy bytes: clean errors only, never a pickle load."""
    only_convcli_errors(lambda raw: arrays.read_npy(raw, name="x.npy", max_bytes=MAX_BYTES), data)


@FUZZ
@given(mutated(NPZ_SEEDS))
def test_fuzzed_npz_raise_only_convcli_errors(data: bytes) -> None:
    """arrays.read_npz on mutated zips: clean errors only (bad CRCs, sizes, members)."""
    only_convcli_errors(lambda raw: arrays.read_npz(raw, name="x.npz", max_bytes=MAX_BYTES), data)


@FUZZ
@given(mutated(KERNEL_SEEDS))
def test_fuzzed_kernel_json_raises_only_convcli_errors(data: bytes) -> None:
    """kernels.parse_kernel_json on mutated JSON: clean errors with a JSON path only."""
    only_convcli_errors(lambda raw: kernels.parse_kernel_json(raw, name="k.json"), data)


@FUZZ
@given(mutated(NPY_SEEDS + seeds("k_nan.npy", "k_5d.npy")))
def test_fuzzed_npy_kernels_raise_only_convcli_errors(data: bytes) -> None:
    """kernels.load_kernel on a mutated .npy kernel file: clean errors only."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "kernel.npy"
        path.write_bytes(data)
        only_convcli_errors(lambda _: kernels.load_kernel(str(path)), data)
