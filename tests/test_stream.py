"""Images larger than memory: streamed TIFF and .npy results equal the in-memory ones.

Tiny tiles are forced (``--tile``, and ``limits.STREAM_MIN_BYTES`` lowered so small files
stream), so seams and corners fall everywhere: every pad mode, stride, dilation, and max and
average pooling with padding and ceil mode. A file too small to stream is computed on the
same tile grid, so the bytes are the same whether it streams or not, also on the BLAS and
FFT paths, whose rounding depends on the shape of each product.
"""

from __future__ import annotations

import itertools
import json
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile

from convcli import limits
from tests.conftest import run

RNG = np.random.default_rng(12)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("stream")
    image = RNG.integers(0, 256, (37, 29, 3), dtype=np.uint8)
    tifffile.imwrite(folder / "tiled.tif", image, tile=(16, 16), photometric="rgb")
    tifffile.imwrite(folder / "striped.tif", image, rowsperstrip=5, photometric="rgb")
    tifffile.imwrite(folder / "gray16.tif", RNG.integers(0, 65536, (33, 41), dtype=np.uint16))
    np.save(folder / "a.npy", RNG.standard_normal((37, 29, 2)).astype(np.float32))
    np.save(folder / "b.npy", RNG.standard_normal((1, 23, 31, 1)).astype(np.float64))
    np.save(folder / "c.npy", RNG.standard_normal((70, 90, 3)).astype(np.float32))
    tifffile.imwrite(folder / "wide.tif", RNG.integers(0, 256, (70, 90, 3), dtype=np.uint8),
                     tile=(16, 16), photometric="rgb")  # fmt: skip
    # a channel-mixing bank (the gemm path) and a large non-separable one (the FFT path)
    mixing = RNG.standard_normal((2, 5, 5, 3)).round(2)
    (folder / "mixing.json").write_text(json.dumps({"weights": mixing.tolist()}))
    large = RNG.standard_normal((9, 9)).round(2)
    (folder / "large.json").write_text(json.dumps({"weights": large.tolist()}))
    return folder


def read(path: Path) -> np.ndarray:
    return np.load(path) if path.suffix == ".npy" else tifffile.imread(path)


def in_memory_and_streamed(
    monkeypatch: pytest.MonkeyPatch, source: Path, out: Path, args: list[str], tile: int
) -> tuple[np.ndarray, np.ndarray, str]:
    monkeypatch.setattr(limits, "STREAM_MIN_BYTES", 1 << 60)
    whole = run(*args[:1], source, *args[1:], "-o", out.with_stem("whole"), "--tile", tile,
                "--json")  # fmt: skip
    assert whole.exit_code == 0, whole.stderr
    assert "streamed" not in whole.stdout
    monkeypatch.setattr(limits, "STREAM_MIN_BYTES", 0)
    streamed = run(*args[:1], source, *args[1:], "-o", out, "--tile", tile, "--json")
    assert streamed.exit_code == 0, streamed.stderr
    return read(out.with_stem("whole")), read(out), streamed.stdout


CONV_CASES = list(
    itertools.product(
        ["sharpen", "box:size=4", "emboss"],
        ["zeros", "replicate", "reflect", "circular"],
        ["1", "2"],
        ["1", "2"],
    )
)


@pytest.mark.parametrize(("kernel", "pad_mode", "stride", "dilation"), CONV_CASES)
@pytest.mark.parametrize("source", ["tiled.tif", "striped.tif", "a.npy"])
def test_streamed_convolution_equals_in_memory(
    inputs: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    source: str,
    kernel: str,
    pad_mode: str,
    stride: str,
    dilation: str,
) -> None:
    suffix = Path(source).suffix
    args = ["conv", "-k", kernel, "--pad-mode", pad_mode, "--stride", stride,
            "--dilation", dilation]  # fmt: skip
    tile = 16 if suffix == ".tif" else 5
    whole, streamed, report = in_memory_and_streamed(
        monkeypatch, inputs / source, tmp_path / f"out{suffix}", args, tile
    )
    assert "streamed" in report
    assert streamed.dtype == whole.dtype
    np.testing.assert_array_equal(streamed, whole)


#: Kernels whose products go through BLAS or pocketfft: a Gaussian of 13x13 (separable
#: path), a 5x5 bank that mixes channels (gemm) and a 9x9 random kernel (FFT).
BLAS_KERNELS = ["gaussian:sigma=2", "mixing.json", "large.json"]


@pytest.mark.parametrize("kernel", BLAS_KERNELS)
@pytest.mark.parametrize("source", ["wide.tif", "c.npy"])
@pytest.mark.parametrize(("stride", "tile"), [("1", "16"), ("2", "16"), ("1", "32")])
def test_streamed_blas_and_fft_paths_equal_in_memory_bit_for_bit(
    inputs: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    source: str,
    kernel: str,
    stride: str,
    tile: str,
) -> None:
    suffix = Path(source).suffix
    reference = inputs / kernel if kernel.endswith(".json") else kernel
    args = ["conv", "-k", reference, "--stride", stride, "--pad-mode", "reflect"]
    whole, streamed, report = in_memory_and_streamed(
        monkeypatch, inputs / source, tmp_path / f"out{suffix}", args, int(tile)
    )
    assert "streamed" in report
    np.testing.assert_array_equal(streamed, whole)


def test_the_tile_grid_stays_within_rounding_of_the_whole_array_engine(
    inputs: Path, tmp_path: Path
) -> None:
    """On the grid, each tile is the engine's exact result for its block: the whole
    array's result differs only by float32 rounding."""
    import convcli

    out = tmp_path / "out.npy"
    assert run("conv", inputs / "c.npy", "-k", inputs / "mixing.json", "-o", out,
               "--tile", 16).exit_code == 0  # fmt: skip
    weights = np.asarray(json.loads((inputs / "mixing.json").read_text())["weights"])
    expected = convcli.conv2d(np.load(inputs / "c.npy"), weights.astype(np.float32),
                              padding="same")  # fmt: skip
    np.testing.assert_allclose(np.load(out), expected, rtol=1e-5, atol=1e-5)


POOL_CASES = list(
    itertools.product(
        ["max", "avg"], ["2", "3"], ["1", "2"], ["0", "1"], [False, True], [True, False]
    )
)


@pytest.mark.parametrize(("op", "size", "stride", "padding", "ceil", "include"), POOL_CASES)
@pytest.mark.parametrize("source", ["tiled.tif", "a.npy", "b.npy"])
def test_streamed_pooling_equals_in_memory(
    inputs: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    source: str,
    op: str,
    size: str,
    stride: str,
    padding: str,
    ceil: bool,
    include: bool,
) -> None:
    suffix = Path(source).suffix
    args = ["pool", "--op", op, "--size", size, "--stride", stride, "--padding", padding]
    args += ["--ceil-mode"] * ceil + ["--no-count-include-pad"] * (not include)
    tile = 16 if suffix == ".tif" else 3
    whole, streamed, _ = in_memory_and_streamed(
        monkeypatch, inputs / source, tmp_path / f"out{suffix}", args, tile
    )
    np.testing.assert_array_equal(streamed, whole)


def test_16_bit_gray_tiff_to_npy_and_tiff(
    inputs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for suffix in (".npy", ".tif"):
        whole, streamed, _ = in_memory_and_streamed(
            monkeypatch, inputs / "gray16.tif", tmp_path / f"g{suffix}", ["conv", "-k", "edge"], 16
        )
        np.testing.assert_array_equal(streamed, whole)


def test_streamed_output_is_a_tiled_bigtiff(
    inputs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(limits, "STREAM_MIN_BYTES", 0)
    out = tmp_path / "o.tif"
    assert run("conv", inputs / "tiled.tif", "-k", "box", "--tile", "16", "-o", out).exit_code == 0
    with tifffile.TiffFile(out) as tif:
        page = tif.pages.first
        assert tif.is_bigtiff and page.is_tiled and (page.tilelength, page.tilewidth) == (16, 16)


def picture(top: int, left: int, height: int, width: int) -> np.ndarray:
    """Rows top.. and columns left.. of a smooth RGB picture defined everywhere."""
    y, x = np.mgrid[top : top + height, left : left + width]
    planes = [(x * 0.05) % 256, (y * 0.05) % 256, ((x + y) * 0.03) % 256]
    return np.stack(planes, axis=-1).astype(np.uint8)


def lazy_tiles(height: int, width: int, tile: int) -> Iterator[np.ndarray]:
    """The picture one tile at a time (never whole in memory)."""
    for top in range(0, height, tile):
        for left in range(0, width, tile):
            yield picture(top, left, tile, tile)


def test_a_large_tiled_bigtiff_streams_in_bounded_memory(tmp_path: Path) -> None:
    """4864x4864 RGB (68 MiB decoded, over the 64 MiB streaming threshold): traced
    allocations stay under 48 MiB (the three rows of 512x512 segments a band of tiles
    spans, 24 MiB, and a few tiles: not the image), and --max-pixels does not apply."""
    side, tile = 4864, 512
    source = tmp_path / "big.tif"
    tifffile.imwrite(source, lazy_tiles(side, side, tile), shape=(side, side, 3),
                     dtype=np.uint8, tile=(tile, tile), photometric="rgb",
                     compression="zlib", bigtiff=True)  # fmt: skip
    out = tmp_path / "out.tif"
    tracemalloc.start()
    try:
        result = run("conv", source, "-k", "sharpen", "--max-pixels", "1000", "-o", out)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.exit_code == 0, result.stderr
    assert peak < 48 * 1024**2, f"{peak:,} bytes traced"
    with tifffile.TiffFile(out) as tif:
        page = tif.pages.first
        assert page.shape == (side, side, 3)
        corner = page.asarray()[-40:, -40:]
    expected = _corner_in_memory(tmp_path, side)
    np.testing.assert_array_equal(corner, expected)


def _corner_in_memory(tmp_path: Path, side: int) -> Any:
    """The bottom-right 40x40 of the sharpened picture, from a 48x48 crop (replicate pads)."""
    tifffile.imwrite(
        tmp_path / "crop.tif", picture(side - 48, side - 48, 48, 48), photometric="rgb"
    )
    result = run("conv", tmp_path / "crop.tif", "-k", "sharpen", "-o", tmp_path / "c.tif")
    assert result.exit_code == 0
    return tifffile.imread(tmp_path / "c.tif")[-40:, -40:]


@pytest.mark.parametrize("strip", [False, True])
@pytest.mark.parametrize("streamed", [True, False])
def test_tiff_to_tiff_keeps_icc_xmp_resolution_and_camera_tags_streamed_or_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, strip: bool, streamed: bool
) -> None:
    icc = b"\x00\x00\x02\x0cfake-icc-profile" + bytes(500)
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF/></x:xmpmeta>'
    source = tmp_path / "in.tif"
    tags = [(700, 1, len(xmp), xmp, True), (271, 2, 0, "Canon", True)]
    tifffile.imwrite(source, RNG.integers(0, 256, (40, 50, 3), dtype=np.uint8), tile=(16, 16),
                     photometric="rgb", iccprofile=icc, resolution=(300, 300),
                     resolutionunit="INCH", metadata=None, extratags=tags)  # fmt: skip
    monkeypatch.setattr(limits, "STREAM_MIN_BYTES", 0 if streamed else 1 << 60)
    out = tmp_path / "out.tif"
    result = run("conv", source, "-k", "sharpen", "-o", out, "--tile", 16, "--json",
                 *["--strip"] * strip)  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert ("streamed" in result.stdout) is streamed
    with tifffile.TiffFile(out) as tif:
        tags = tif.pages.first.tags
        if strip:
            assert not {"InterColorProfile", "XMP", "Make"} & {tag.name for tag in tags}
            return
        assert tags["InterColorProfile"].value == icc
        assert bytes(tags["XMP"].value) == xmp
        assert tags["Make"].value == "Canon"
        assert tags["XResolution"].value == (300, 1)


@pytest.mark.parametrize("kernel", ["sharpen", "gaussian:sigma=2"])
def test_a_streamed_tiff_decodes_each_segment_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kernel: str
) -> None:
    """The halos of neighbouring tiles share segments: the cache and the prefetch of the
    next tile's segments decode each one exactly once."""
    from convcli.io import regions

    source = tmp_path / "t.tif"
    tifffile.imwrite(source, RNG.integers(0, 256, (100, 90, 3), dtype=np.uint8),
                     tile=(16, 16), photometric="rgb", compression="zlib")  # fmt: skip
    decoded: list[int] = []
    original = regions.TiffRegions._decoded

    def counting(self: regions.TiffRegions, index: int) -> np.ndarray:
        decoded.append(index)
        return original(self, index)

    monkeypatch.setattr(regions.TiffRegions, "_decoded", counting)
    monkeypatch.setattr(limits, "STREAM_MIN_BYTES", 0)
    result = run("conv", source, "-k", kernel, "-o", tmp_path / "o.tif", "--tile", 32, "--json")
    assert result.exit_code == 0, result.stderr
    assert "streamed" in result.stdout
    assert sorted(decoded) == list(range(7 * 6))  # 100x90 in 16x16 tiles
