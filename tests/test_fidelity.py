"""Image fidelity end to end through the CLI: metadata, frames, edges, alpha, linear light,
JPEG tables and the command-line rules of outputs and kernels, on files made here.

Where ImageMagick does the same operation, a test compares pixels with it (skipped, with a
reason, when ``convert`` is not installed).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image as PILImage
from PIL import ImageCms

from convcli import conv2d
from convcli.errors import ExitCode
from tests.conftest import SUBPROCESS_TIMEOUT, run

RNG = np.random.default_rng(11)
XMP = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF/></x:xmpmeta>'


def _imagemagick() -> str | None:
    found = shutil.which("convert")
    if found is None:
        return None
    try:
        version = subprocess.run([found, "-version"], capture_output=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return found if b"ImageMagick" in version else None


MAGICK = _imagemagick()
with_imagemagick = pytest.mark.skipif(MAGICK is None, reason="ImageMagick's convert is missing")
VIPS = shutil.which("vips")
with_vips = pytest.mark.skipif(VIPS is None, reason="libvips' vips command is missing")


def vips(*args: Any) -> None:
    assert VIPS is not None
    subprocess.run([VIPS, *map(str, args)], check=True, timeout=SUBPROCESS_TIMEOUT)


def magick(*args: Any) -> None:
    assert MAGICK is not None
    subprocess.run([MAGICK, *map(str, args)], check=True, timeout=SUBPROCESS_TIMEOUT)


def photo(height: int = 40, width: int = 60, channels: int = 3) -> np.ndarray:
    """Smooth colour with some texture: JPEG-friendly, every edge pixel different."""
    y, x = np.mgrid[0:height, 0:width]
    base = [(x * 3 + y * 2) % 256, (x * 5) % 256, (y * 4 + 40) % 256, 255 - (x + y) % 200]
    noise = RNG.integers(0, 20, (height, width))
    planes = [np.clip(plane + noise, 0, 255) for plane in base[:channels]]
    return np.stack(planes, axis=-1).astype(np.uint8)


def exif_block(orientation: int = 6) -> PILImage.Exif:
    exif = PILImage.Exif()
    exif[0x010F] = "Canon"
    exif[0x0110] = "EOS R5"
    exif[0x0132] = "2024:01:02 03:04:05"
    exif[0x0112] = orientation
    exif[0x8825] = {1: "N", 2: (52.0, 31.0, 12.0)}
    return exif


def icc_profile() -> bytes:
    profile: bytes = ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes()
    return profile


def described(path: Path) -> dict[str, Any]:
    with PILImage.open(path) as image:
        exif = image.getexif()
        return {
            "icc": image.info.get("icc_profile"),
            "make": exif.get(0x010F),
            "orientation": exif.get(0x0112),
            "gps": dict(exif.get_ifd(0x8825)),
            "xmp": image.info.get("xmp"),
            "dpi": tuple(round(v) for v in image.info["dpi"]) if "dpi" in image.info else None,
            "size": image.size,
            "frames": getattr(image, "n_frames", 1),
        }


# --------------------------------------------------------------------------- metadata


@pytest.mark.parametrize("fmt", ["jpg", "png", "webp"])
def test_icc_exif_xmp_and_dpi_survive_and_orientation_is_reset(tmp_path: Path, fmt: str) -> None:
    source = tmp_path / f"in.{fmt}"
    options: dict[str, Any] = {"icc_profile": icc_profile(), "exif": exif_block().tobytes()}
    if fmt != "png":
        options["xmp"] = XMP
    if fmt != "webp":
        options["dpi"] = (300, 300)
    PILImage.fromarray(photo()).save(source, **options)
    out = tmp_path / f"out.{fmt}"
    assert run("conv", source, "-k", "sharpen", "-o", out).exit_code == 0
    before, after = described(source), described(out)
    assert after["icc"] == before["icc"] == icc_profile()
    assert after["make"] == "Canon" and after["gps"] == before["gps"]
    assert after["orientation"] == 1  # the pixels were turned upright on reading
    assert after["size"] == before["size"][::-1]  # orientation 6: a quarter turn
    assert after["xmp"] == before["xmp"]
    assert after["dpi"] == before["dpi"]


def test_png_text_and_xmp_chunks_are_carried(tmp_path: Path) -> None:
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("Title", "a scan")
    info.add_itxt("XML:com.adobe.xmp", XMP.decode())
    source = tmp_path / "in.png"
    PILImage.fromarray(photo()).save(source, pnginfo=info)
    assert run("conv", source, "-k", "box", "-o", tmp_path / "out.png").exit_code == 0
    with PILImage.open(tmp_path / "out.png") as out:
        assert out.info["Title"] == "a scan"
        assert out.info["XML:com.adobe.xmp"] == XMP.decode()


def test_tiff_output_keeps_icc_xmp_dpi_and_camera_tags(tmp_path: Path) -> None:
    source = tmp_path / "in.jpg"
    PILImage.fromarray(photo()).save(
        source, icc_profile=icc_profile(), exif=exif_block(1).tobytes(), xmp=XMP, dpi=(300, 300)
    )
    out = tmp_path / "out.tif"
    assert run("conv", source, "-k", "sharpen", "-o", out).exit_code == 0
    import tifffile

    with tifffile.TiffFile(out) as tif:
        tags = tif.pages.first.tags
        assert tags["InterColorProfile"].value == icc_profile()
        assert bytes(tags["XMP"].value) == XMP
        assert tags["Make"].value == "Canon"
        assert tags["XResolution"].value == (300, 1)


def test_strip_drops_all_metadata(tmp_path: Path) -> None:
    source = tmp_path / "in.jpg"
    PILImage.fromarray(photo()).save(
        source, icc_profile=icc_profile(), exif=exif_block(1).tobytes(), xmp=XMP, dpi=(300, 300)
    )
    out = tmp_path / "out.jpg"
    assert run("conv", source, "-k", "sharpen", "--strip", "-o", out).exit_code == 0
    after = described(out)
    assert after["icc"] is None and after["make"] is None and after["xmp"] is None


def test_jpeg_to_jpeg_keeps_the_quantization_tables_and_subsampling(tmp_path: Path) -> None:
    from PIL import JpegImagePlugin

    source = tmp_path / "in.jpg"
    PILImage.fromarray(photo(240, 320)).save(source, quality=70, subsampling=2)
    kept, requested = tmp_path / "kept.jpg", tmp_path / "q95.jpg"
    assert run("conv", source, "-k", "identity", "-o", kept).exit_code == 0
    assert run("conv", source, "-k", "identity", "--quality", "95", "-o", requested).exit_code == 0
    with PILImage.open(source) as a, PILImage.open(kept) as b, PILImage.open(requested) as c:
        assert b.quantization == a.quantization
        assert JpegImagePlugin.get_sampling(b) == JpegImagePlugin.get_sampling(a) == 2
        assert c.quantization != a.quantization
    # the kept tables keep the size; quality 95 at 4:4:4 (the old fixed default) grows it
    assert kept.stat().st_size < 1.2 * source.stat().st_size < requested.stat().st_size


# --------------------------------------------------------------------------- frames


def animated(path: Path, count: int = 3, *, mode: str = "RGB", **options: Any) -> list[np.ndarray]:
    arrays = [photo(20, 30, 4 if mode == "RGBA" else 3) for _ in range(count)]
    frames = [PILImage.fromarray(array) for array in arrays]
    if path.suffix == ".gif":
        frames = [frame.convert("P") for frame in frames]
    frames[0].save(path, save_all=True, append_images=frames[1:], **options)
    return arrays


def timing(path: Path) -> tuple[int, list[int], Any]:
    with PILImage.open(path) as image:
        durations = []
        for index in range(image.n_frames):
            image.seek(index)
            durations.append(int(image.info.get("duration", 0)))
        return image.n_frames, durations, image.info.get("loop")


def test_every_gif_frame_is_filtered_with_its_duration_loop_and_disposal(tmp_path: Path) -> None:
    source = tmp_path / "in.gif"
    animated(source, 5, duration=[100, 200, 300, 400, 500], loop=2, disposal=2)
    out = tmp_path / "out.gif"
    result = run("conv", source, "-k", "box", "-o", out, "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["items"][0]["shape_in"] == [5, 20, 30, 3]
    assert timing(out) == (5, [100, 200, 300, 400, 500], 2)
    with PILImage.open(out) as image:
        image.seek(3)
        assert image.disposal_method == 2
    with PILImage.open(source) as image:  # each output frame is its input frame, filtered
        image.seek(2)
        third = np.asarray(image.convert("RGB")).astype(np.float64)
    with PILImage.open(out) as image:
        image.seek(2)
        written = np.asarray(image.convert("RGB")).astype(np.float64)
    expected = conv2d(third, np.full((3, 3), 1 / 9), padding="same", pad_mode="replicate")
    assert np.abs(written - expected).mean() < 8  # GIF's palette costs a few levels


@pytest.mark.parametrize("suffix", [".png", ".webp"])
def test_animated_png_and_webp_keep_their_frames(tmp_path: Path, suffix: str) -> None:
    source = tmp_path / f"in{suffix}"
    arrays = animated(source, 3, mode="RGBA", duration=[50, 60, 70], loop=3)
    out = tmp_path / f"out{suffix}"
    assert run("conv", source, "-k", "identity", "-o", out).exit_code == 0
    assert timing(out) == timing(source)
    if suffix == ".png":  # lossless: the frames come back exactly
        with PILImage.open(out) as image:
            image.seek(2)
            np.testing.assert_array_equal(np.asarray(image.convert("RGBA")), arrays[2])


def test_multi_frame_to_npy_stacks_frames_on_n(tmp_path: Path) -> None:
    source = tmp_path / "in.gif"
    animated(source, 4, duration=100)
    assert run("conv", source, "-k", "identity", "-o", tmp_path / "o.npy").exit_code == 0
    assert np.load(tmp_path / "o.npy").shape == (4, 20, 30, 3)


def test_frames_first_and_indices(tmp_path: Path) -> None:
    source = tmp_path / "in.gif"
    animated(source, 4, duration=[10, 20, 30, 40], loop=0)
    first = tmp_path / "first.gif"
    assert run("conv", source, "-k", "identity", "--frames", "first", "-o", first).exit_code == 0
    assert timing(first)[0] == 1
    picked = tmp_path / "picked.gif"
    assert run("conv", source, "-k", "identity", "--frames", "3,1", "-o", picked).exit_code == 0
    assert timing(picked)[:2] == (2, [40, 20])
    result = run("conv", source, "-k", "identity", "--frames", "9", "-o", tmp_path / "x.gif")
    assert result.exit_code == ExitCode.TROUBLE and "has 4 frames" in result.stderr


def test_several_frames_to_jpeg_is_refused_naming_frames_first(tmp_path: Path) -> None:
    source = tmp_path / "in.gif"
    animated(source, 3, duration=100)
    result = run("conv", source, "-k", "sharpen", "-o", tmp_path / "out.jpg")
    assert result.exit_code == ExitCode.TROUBLE
    assert "--frames first" in result.stderr and not (tmp_path / "out.jpg").exists()
    ok = run("conv", source, "-k", "sharpen", "--frames", "first", "-o", tmp_path / "out.jpg")
    assert ok.exit_code == 0


# --------------------------------------------------------------------------- edges


def test_images_pad_by_replicating_the_edge_and_arrays_with_zeros(tmp_path: Path) -> None:
    """A kernel file that names no pad mode: replicate on a photo, PyTorch's zeros on arrays."""
    flat = np.full((8, 8), 200, np.uint8)
    PILImage.fromarray(flat).save(tmp_path / "flat.png")
    np.save(tmp_path / "flat.npy", flat.astype(np.float32))
    kernel = tmp_path / "mean.json"
    kernel.write_text(json.dumps({"weights": [[1, 1, 1]] * 3, "normalize": True}))
    for name in ("flat.png", "flat.npy"):
        result = run("conv", tmp_path / name, "-k", kernel, "-o", tmp_path / f"out_{name}")
        assert result.exit_code == 0, result.stderr
    with PILImage.open(tmp_path / "out_flat.png") as image:
        np.testing.assert_array_equal(np.asarray(image), flat)  # no dark frame
    corner = np.load(tmp_path / "out_flat.npy")[0, 0]
    assert corner == pytest.approx(200 * 4 / 9)  # 4 of the 9 taps inside, the rest zeros
    zero = run("conv", tmp_path / "flat.png", "-k", kernel, "--pad-mode", "zeros", "-o",
               tmp_path / "z.png")  # fmt: skip
    assert zero.exit_code == 0
    with PILImage.open(tmp_path / "z.png") as image:
        assert np.asarray(image)[0, 0] == round(200 * 4 / 9)


def test_kernels_lists_each_presets_pad_mode() -> None:
    result = run("kernels")
    assert result.exit_code == 0 and "pad mode" in result.stdout
    line = next(line for line in result.stdout.splitlines() if line.startswith("sobel-x"))
    assert "replicate (arrays: zeros)" in line


@with_imagemagick
def test_edge_detector_borders_match_imagemagick(tmp_path: Path) -> None:
    """ImageMagick's default virtual pixels are the edge's: the frame matches too."""
    source = tmp_path / "in.png"
    PILImage.fromarray(photo()).save(source)
    assert run("conv", source, "-k", "edge", "-o", tmp_path / "ours.png").exit_code == 0
    magick(source, "-convolve", "-1,-1,-1,-1,8,-1,-1,-1,-1", tmp_path / "theirs.png")
    with PILImage.open(tmp_path / "ours.png") as a, PILImage.open(tmp_path / "theirs.png") as b:
        ours, theirs = np.asarray(a).astype(int), np.asarray(b.convert("RGB")).astype(int)
    assert np.abs(ours - theirs).max() <= 1
    assert np.abs(ours[0] - theirs[0]).max() <= 1  # the first row, where zeros would differ


# --------------------------------------------------------------------------- alpha and light


def cutout(size: int = 32) -> np.ndarray:
    """A red disc on transparent black: blurring it naively darkens its rim."""
    y, x = np.mgrid[0:size, 0:size]
    inside = (y - size / 2) ** 2 + (x - size / 2) ** 2 < (size / 3) ** 2
    pixels = np.zeros((size, size, 4), np.uint8)
    pixels[inside] = (255, 0, 0, 255)
    return pixels


def test_premultiplied_blur_has_no_dark_fringe(tmp_path: Path) -> None:
    PILImage.fromarray(cutout()).save(tmp_path / "cut.png")
    args = ("conv", tmp_path / "cut.png", "-k", "box:size=5")
    assert run(*args, "--alpha", "premultiply", "-o", tmp_path / "pre.png").exit_code == 0
    assert run(*args, "--alpha", "filter", "-o", tmp_path / "naive.png").exit_code == 0
    with PILImage.open(tmp_path / "pre.png") as a, PILImage.open(tmp_path / "naive.png") as b:
        pre, naive = np.asarray(a), np.asarray(b)
    rim = (pre[..., 3] > 0) & (pre[..., 3] < 255)
    assert rim.any()
    assert pre[rim][:, 0].min() >= 254  # still pure red wherever it is partly covered
    assert naive[rim][:, 0].min() < 200  # mixed with the black under the transparency
    np.testing.assert_array_equal(pre[..., 3], naive[..., 3])


@with_vips
def test_premultiplied_blur_matches_libvips(tmp_path: Path) -> None:
    """libvips' premultiply, conv and unpremultiply: the same pixels within one level.

    (ImageMagick 6.9's -blur and -morphology Convolve do not weight colour by alpha: on
    this cut-out they give the dark rim, red 19-85 where alpha is 20-85.)
    """
    PILImage.fromarray(cutout()).save(tmp_path / "cut.png")
    result = run("conv", tmp_path / "cut.png", "-k", "box", "--alpha", "premultiply",
                 "-o", tmp_path / "ours.png")  # fmt: skip
    assert result.exit_code == 0
    (tmp_path / "box.mat").write_text("3 3 9 0\n1 1 1\n1 1 1\n1 1 1\n")
    vips("premultiply", tmp_path / "cut.png", tmp_path / "p.v")
    vips("conv", tmp_path / "p.v", tmp_path / "c.v", tmp_path / "box.mat", "--precision", "float")
    vips("unpremultiply", tmp_path / "c.v", tmp_path / "u.v")
    vips("cast", tmp_path / "u.v", tmp_path / "theirs.png", "uchar")
    with PILImage.open(tmp_path / "ours.png") as a, PILImage.open(tmp_path / "theirs.png") as b:
        ours, theirs = np.asarray(a).astype(int), np.asarray(b.convert("RGBA")).astype(int)
    assert np.abs(ours - theirs).max() <= 1


def test_background_flattens_alpha_for_jpeg(tmp_path: Path) -> None:
    PILImage.fromarray(cutout()).save(tmp_path / "cut.png")
    refused = run("conv", tmp_path / "cut.png", "-k", "identity", "-o", tmp_path / "x.jpg")
    assert refused.exit_code == ExitCode.TROUBLE and "--background" in refused.stderr
    args = ("conv", tmp_path / "cut.png", "-k", "identity", "--background", "white")
    assert run(*args, "-o", tmp_path / "flat.png").exit_code == 0
    assert run(*args, "-o", tmp_path / "flat.jpg").exit_code == 0
    with PILImage.open(tmp_path / "flat.png") as image:
        flat = np.asarray(image)
    assert flat.shape == (32, 32, 3)
    assert tuple(flat[0, 0]) == (255, 255, 255) and tuple(flat[16, 16]) == (255, 0, 0)


@with_imagemagick
def test_background_flatten_matches_imagemagick(tmp_path: Path) -> None:
    pixels = cutout()
    pixels[..., 3] = np.where(pixels[..., 3] > 0, 128, 40)  # partial alpha everywhere
    PILImage.fromarray(pixels).save(tmp_path / "cut.png")
    result = run("conv", tmp_path / "cut.png", "-k", "identity", "--background", "#3366cc",
                 "-o", tmp_path / "ours.png")  # fmt: skip
    assert result.exit_code == 0
    magick(tmp_path / "cut.png", "-background", "#3366cc", "-flatten", tmp_path / "theirs.png")
    with PILImage.open(tmp_path / "ours.png") as a, PILImage.open(tmp_path / "theirs.png") as b:
        ours, theirs = np.asarray(a).astype(int), np.asarray(b.convert("RGB")).astype(int)
    assert np.abs(ours - theirs).max() <= 1


def checkerboard(size: int = 16, dtype: Any = np.uint8) -> np.ndarray:
    top = np.iinfo(dtype).max
    return (((np.indices((size, size)).sum(axis=0)) % 2) * top).astype(dtype)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_linear_light_blur_of_a_checkerboard(tmp_path: Path, dtype: Any) -> None:
    """Averaging light, not code values: mid-grey of black and white is sRGB 188 (of 255)."""
    import tifffile

    tifffile.imwrite(tmp_path / "board.tif", checkerboard(dtype=dtype))
    args = ("conv", tmp_path / "board.tif", "-k", "box:size=2", "--stride", "2")
    assert run(*args, "--linear", "-o", tmp_path / "lin.tif").exit_code == 0
    assert run(*args, "-o", tmp_path / "plain.tif").exit_code == 0
    top = np.iinfo(dtype).max
    linear, plain = tifffile.imread(tmp_path / "lin.tif"), tifffile.imread(tmp_path / "plain.tif")
    expected = 188 if dtype == np.uint8 else round(1.055 * 0.5 ** (1 / 2.4) * top - 0.055 * top)
    assert np.all(linear == expected) and np.all(np.abs(plain.astype(int) - top / 2) <= 1)


def test_linear_light_leaves_unfiltered_pixels_exactly(tmp_path: Path) -> None:
    PILImage.fromarray(photo()).save(tmp_path / "in.png")
    result = run(
        "conv", tmp_path / "in.png", "-k", "identity", "--linear", "-o", tmp_path / "o.png"
    )
    assert result.exit_code == 0
    with PILImage.open(tmp_path / "o.png") as image:
        np.testing.assert_array_equal(np.asarray(image), photo_again(tmp_path / "in.png"))


def photo_again(path: Path) -> np.ndarray:
    with PILImage.open(path) as image:
        return np.asarray(image)


@with_imagemagick
def test_linear_blur_matches_imagemagick_in_rgb_colorspace(tmp_path: Path) -> None:
    PILImage.fromarray(photo()).save(tmp_path / "in.png")
    result = run("conv", tmp_path / "in.png", "-k", "box", "--linear", "-o", tmp_path / "ours.png")
    assert result.exit_code == 0
    magick(tmp_path / "in.png", "-colorspace", "RGB", "-define", "convolve:scale=!",
           "-morphology", "Convolve", "3x3:1,1,1,1,1,1,1,1,1", "-colorspace", "sRGB",
           tmp_path / "theirs.png")  # fmt: skip
    with PILImage.open(tmp_path / "ours.png") as a, PILImage.open(tmp_path / "theirs.png") as b:
        ours, theirs = np.asarray(a).astype(int), np.asarray(b.convert("RGB")).astype(int)
    assert np.abs(ours - theirs).max() <= 2  # ImageMagick's Q16 rounding in linear light


# --------------------------------------------------------------------------- command line


def test_several_inputs_to_a_file_name_is_an_error(tmp_path: Path) -> None:
    for name in ("a.png", "b.png"):
        PILImage.fromarray(photo()).save(tmp_path / name)
    result = run("conv", tmp_path / "a.png", tmp_path / "b.png", "-k", "box", "-o",
                 tmp_path / "x.png")  # fmt: skip
    assert result.exit_code == ExitCode.TROUBLE and "names a file" in result.stderr
    assert not (tmp_path / "x.png").exists()


def test_one_input_into_a_new_folder_named_with_a_slash(tmp_path: Path) -> None:
    PILImage.fromarray(photo()).save(tmp_path / "a.png")
    result = run("conv", tmp_path / "a.png", "-k", "box", "-o", f"{tmp_path / 'new'}/")
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "new" / "a.png").exists()


def test_an_input_set_with_no_readable_file_is_an_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("x")
    result = run("conv", empty, "-k", "box", "-o", tmp_path / "out")
    assert result.exit_code == ExitCode.TROUBLE
    assert "empty: no readable file (1 other file ignored)" in result.stderr
    PILImage.fromarray(photo()).save(empty / "a.png")
    result = run("conv", empty, "--glob", "*.jpg", "-k", "box", "-o", tmp_path / "out")
    assert result.exit_code == ExitCode.TROUBLE and "matching '*.jpg'" in result.stderr


def test_a_resumed_run_whose_only_failures_repeat_exits_1(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    PILImage.fromarray(photo()).save(folder / "a.png")
    (folder / "b.png").write_bytes(b"\x89PNG broken")
    first = run("conv", folder, "-k", "box", "-o", tmp_path / "out", "-q")
    assert first.exit_code == ExitCode.DIFFERENCES
    again = run("conv", folder, "-k", "box", "-o", tmp_path / "out", "--skip-existing", "-q")
    assert again.exit_code == ExitCode.DIFFERENCES  # a.png is done, b.png fails again


def test_preset_names_are_case_insensitive_and_misspellings_get_a_suggestion(
    tmp_path: Path,
) -> None:
    PILImage.fromarray(photo()).save(tmp_path / "a.png")
    assert run("conv", tmp_path / "a.png", "-k", "Sharpen", "-o", tmp_path / "s.png").exit_code == 0
    result = run("conv", tmp_path / "a.png", "-k", "gausian", "-o", tmp_path / "g.png")
    assert result.exit_code == ExitCode.TROUBLE and 'did you mean "gaussian"' in result.stderr


def test_a_pytorch_weight_with_nchw_layout_is_read_as_oihw(tmp_path: Path) -> None:
    x = RNG.standard_normal((2, 3, 9, 9)).astype(np.float32)
    weight = RNG.standard_normal((8, 3, 3, 3)).astype(np.float32)  # PyTorch's (O, I, kh, kw)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "w.npy", weight)
    result = run("conv", tmp_path / "x.npy", "-k", tmp_path / "w.npy", "--layout", "NCHW",
                 "--padding", "1", "-o", tmp_path / "y.npy")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    expected = conv2d(x, weight, padding=1, layout="NCHW", kernel_layout="OIHW")
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected, rtol=1e-6)


def test_a_large_gaussian_sigma_is_accepted(tmp_path: Path) -> None:
    PILImage.fromarray(photo(64, 64)).save(tmp_path / "a.png")
    result = run("conv", tmp_path / "a.png", "-k", "gaussian:sigma=40", "-o", tmp_path / "g.png")
    assert result.exit_code == 0, result.stderr


def test_verify_show_json_lists_the_worst_elements(tmp_path: Path) -> None:
    a = np.zeros((4, 4), np.float32)
    b = a.copy()
    b[1, 2], b[3, 0] = 5.0, 2.0
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", b)
    result = run("verify", tmp_path / "a.npy", tmp_path / "b.npy", "--show", "2", "--json")
    assert result.exit_code == ExitCode.DIFFERENCES
    (pair,) = json.loads(result.stdout)["pairs"]
    assert [element["index"] for element in pair["worst"]] == [[1, 2], [3, 0]]
    assert pair["worst"][0] == {"index": [1, 2], "actual": 0.0, "expected": 5.0, "abs_diff": 5.0}
