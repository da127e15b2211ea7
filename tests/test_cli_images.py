"""conv and pool on image files: dtypes, ranges, alpha, and what formats can hold."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from convcli import conv2d, max_pool2d
from convcli.io import images
from tests.conftest import run

SAMPLES = Path(__file__).parent.parent / "sample_images"


def read(path: Path) -> np.ndarray:
    return images.read_image(path, name=str(path)).pixels


def write(path: Path, pixels: np.ndarray) -> Path:
    fmt = images.format_from_path(path)
    assert fmt is not None
    path.write_bytes(images.encode_image(pixels, format=fmt, name=str(path)))
    return path


def test_gray_stays_gray_and_16_bit_stays_16_bit(tmp_path: Path) -> None:
    assert (
        run("conv", SAMPLES / "gray_shapes.png", "-k", "box", "-o", tmp_path / "g.png").exit_code
        == 0
    )
    assert read(tmp_path / "g.png").ndim == 2
    source = SAMPLES / "depth_gray16.png"
    assert run("conv", source, "-k", "gaussian", "-o", tmp_path / "d.png").exit_code == 0
    out = read(tmp_path / "d.png")
    assert out.dtype == np.uint16 and out.ndim == 2
    expected = conv2d(
        read(source),
        np.asarray(__import__("convcli").load_kernel("gaussian").weights),
        padding="same",
        pad_mode="replicate",
    )
    np.testing.assert_array_equal(out, np.clip(np.rint(expected), 0, 65535).astype(np.uint16))


def test_clip_rounds_half_to_even_and_reports_the_count(tmp_path: Path) -> None:
    pixels = np.array([[0, 10, 250, 255]], dtype=np.uint8)
    source = write(tmp_path / "in.png", pixels)
    kernel = tmp_path / "k.json"
    kernel.write_text(json.dumps({"weights": [[1.05]], "bias": 0.0}))
    result = run("conv", source, "-k", kernel, "-o", tmp_path / "o.png", "--json")
    assert result.exit_code == 0, result.stderr
    np.testing.assert_array_equal(read(tmp_path / "o.png"), [[0, 10, 255, 255]])  # 10.5 -> 10
    assert json.loads(result.stdout)["items"][0]["clipped"] == 2


def test_range_abs_keeps_negative_edges(tmp_path: Path) -> None:
    pixels = np.zeros((5, 6), dtype=np.uint8)
    pixels[:, 3:] = 200
    source = write(tmp_path / "step.png", pixels)
    run("conv", source, "-k", "sobel-x", "-o", tmp_path / "clip.png")
    run("conv", source, "-k", "sobel-x", "--range", "abs", "-o", tmp_path / "abs.png")
    flipped = write(tmp_path / "flip.png", pixels[:, ::-1].copy())
    run("conv", flipped, "-k", "sobel-x", "-o", tmp_path / "neg.png")
    assert read(tmp_path / "clip.png").max() == 255
    # The falling edge is negative and clipped away (column 0 meets the zero padding).
    assert read(tmp_path / "neg.png")[:, 1:].max() == 0
    run("conv", flipped, "-k", "sobel-x", "--range", "abs", "-o", tmp_path / "negabs.png")
    assert read(tmp_path / "negabs.png")[:, 1:].max() == 255


def test_range_normalize_stretches_to_the_full_range(tmp_path: Path) -> None:
    source = SAMPLES / "photo_rgb.png"
    assert (
        run(
            "conv", source, "-k", "laplacian", "--range", "normalize", "-o", tmp_path / "n.png"
        ).exit_code
        == 0
    )
    out = read(tmp_path / "n.png")
    assert out.min() == 0 and out.max() == 255


def test_out_dtype_float32_to_tiff_keeps_the_float_result(tmp_path: Path) -> None:
    source = SAMPLES / "photo_rgb.png"
    result = run(
        "conv", source, "-k", "sobel-y", "--out-dtype", "float32", "-o", tmp_path / "f.tif"
    )
    assert result.exit_code == 0, result.stderr
    out = read(tmp_path / "f.tif")
    assert out.dtype == np.float32
    assert out.min() < 0  # negative derivatives survive


def test_float_tiff_input_writes_float_tiff(tmp_path: Path) -> None:
    source = SAMPLES / "field_float32.tif"
    assert run("pool", source, "--size", "2", "-o", tmp_path / "p.tif").exit_code == 0
    np.testing.assert_array_equal(read(tmp_path / "p.tif"), max_pool2d(read(source), 2))


def test_alpha_passes_through_unfiltered(tmp_path: Path) -> None:
    source = SAMPLES / "badge_rgba.png"
    pixels = read(source)
    assert run("conv", source, "-k", "gaussian", "-o", tmp_path / "a.png").exit_code == 0
    out = read(tmp_path / "a.png")
    assert out.shape == pixels.shape
    np.testing.assert_array_equal(out[..., 3], pixels[..., 3])
    assert not np.array_equal(out[..., :3], pixels[..., :3])


def test_filter_alpha_filters_it_too(tmp_path: Path) -> None:
    source = SAMPLES / "badge_rgba.png"
    pixels = read(source)
    assert (
        run(
            "conv", source, "-k", "box:size=5", "--filter-alpha", "-o", tmp_path / "a.png"
        ).exit_code
        == 0
    )
    assert not np.array_equal(read(tmp_path / "a.png")[..., 3], pixels[..., 3])


def test_pooling_an_rgba_image_pools_its_alpha(tmp_path: Path) -> None:
    source = SAMPLES / "badge_rgba.png"
    assert run("pool", source, "--size", "2", "-o", tmp_path / "p.png").exit_code == 0
    out = read(tmp_path / "p.png")
    np.testing.assert_array_equal(out[..., 3], max_pool2d(read(source)[..., 3], 2))


@pytest.mark.parametrize(
    ("kernel", "output", "message"),
    [
        (np.ones((8, 3, 3, 3)), "o.png", "channels"),
        (np.ones((8, 3, 3, 3)), "o.jpg", "channels"),
    ],
)
def test_channel_counts_no_image_holds_are_refused(
    tmp_path: Path, kernel: np.ndarray, output: str, message: str
) -> None:
    np.save(tmp_path / "k.npy", kernel)
    result = run(
        "conv", SAMPLES / "photo_rgb.png", "-k", tmp_path / "k.npy", "-o", tmp_path / output
    )
    assert result.exit_code == 2
    assert "Error:" in result.stderr and message in result.stderr
    assert not (tmp_path / output).exists()


def test_eight_filters_go_to_npy_and_tiff(tmp_path: Path) -> None:
    np.save(tmp_path / "k.npy", np.ones((8, 3, 3, 3)) / 27)
    for output in ("o.npy", "o.tif"):
        result = run(
            "conv", SAMPLES / "photo_rgb.png", "-k", tmp_path / "k.npy", "-o", tmp_path / output
        )
        assert result.exit_code == 0, result.stderr
    assert np.load(tmp_path / "o.npy").shape == (120, 160, 8)
    assert read(tmp_path / "o.tif").shape == (120, 160, 8)


def test_float_results_cannot_go_to_png(tmp_path: Path) -> None:
    result = run(
        "conv",
        SAMPLES / "photo_rgb.png",
        "-k",
        "sharpen",
        "--out-dtype",
        "float32",
        "-o",
        tmp_path / "o.png",
    )
    assert result.exit_code == 2
    assert "Error:" in result.stderr and "float32" in result.stderr
    assert not (tmp_path / "o.png").exists()


def test_jpeg_quality_changes_the_file(tmp_path: Path) -> None:
    source = SAMPLES / "photo_rgb.png"
    run("conv", source, "-k", "identity", "--quality", "30", "-o", tmp_path / "low.jpg")
    run("conv", source, "-k", "identity", "--quality", "95", "-o", tmp_path / "high.jpg")
    assert (tmp_path / "low.jpg").stat().st_size < (tmp_path / "high.jpg").stat().st_size


def test_image_to_npy_keeps_the_float_result(tmp_path: Path) -> None:
    source = SAMPLES / "gray_shapes.png"
    assert run("conv", source, "-k", "sobel-x", "-o", tmp_path / "o.npy").exit_code == 0
    out = np.load(tmp_path / "o.npy")
    assert out.dtype == np.float32 and out.shape == (120, 160)
    sobel_x = [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]
    # images pad by replicating their edge (arrays with zeros)
    expected = conv2d(read(source), sobel_x, padding="same", pad_mode="replicate")
    np.testing.assert_allclose(out, expected)


def test_every_sample_image_goes_through_conv_and_pool(tmp_path: Path) -> None:
    result = run("conv", SAMPLES, "-k", "sharpen", "-o", tmp_path / "c")
    assert result.exit_code == 0, result.stderr
    result = run("pool", SAMPLES, "--size", "2", "-o", tmp_path / "p")
    assert result.exit_code == 0, result.stderr
    for original in SAMPLES.glob("*.*"):
        if images.format_from_path(original) is None:
            continue
        before = read(original)
        assert read(tmp_path / "c" / original.name).shape == before.shape
        assert read(tmp_path / "p" / original.name).shape[:2] == (
            before.shape[0] // 2,
            before.shape[1] // 2,
        )
