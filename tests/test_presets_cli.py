"""Each preset applied to a real image through the CLI, against SciPy's independent filters."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from convcli.cli.main import main
from convcli.io import images

ndimage = pytest.importorskip("scipy.ndimage")

SAMPLES = Path(__file__).parent.parent / "sample_images"
Filter = Callable[[np.ndarray], np.ndarray]


def gaussian_2d(size: int, sigma: float) -> np.ndarray:
    """The normalized sampled Gaussian, written out from its formula."""
    offsets = np.arange(size) - size // 2
    line = np.exp(-(offsets**2) / (2 * sigma**2))
    return np.outer(line, line) / line.sum() ** 2


def opencv_sigma(size: int) -> float:
    """OpenCV's getGaussianKernel rule for sigma <= 0."""
    return 0.3 * ((size - 1) * 0.5 - 1) + 0.8


# Images pad by replicating their edge (SciPy's "nearest"), derivative presets included: no
# bright or dark frame around a photo's edge map.
NEAREST = {"mode": "nearest"}
REFERENCES: dict[str, Filter] = {
    "identity": lambda x: x,
    "box": lambda x: ndimage.uniform_filter(x, 3, **NEAREST),
    "gaussian": lambda x: ndimage.correlate(x, gaussian_2d(5, opencv_sigma(5)), **NEAREST),
    "sharpen": lambda x: x - ndimage.laplace(x, **NEAREST),
    "unsharp": lambda x: 2 * x - ndimage.correlate(x, gaussian_2d(5, opencv_sigma(5)), **NEAREST),
    "motion-blur": lambda x: ndimage.uniform_filter1d(x, 9, axis=1, **NEAREST),
    "emboss": lambda x: ndimage.correlate(
        x, np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]], dtype=float), **NEAREST
    ),
    "laplacian": lambda x: ndimage.laplace(x, **NEAREST),
    "edge": lambda x: 9 * x - 9 * ndimage.uniform_filter(x, 3, **NEAREST),
    "sobel-x": lambda x: ndimage.sobel(x, axis=1, **NEAREST),
    "sobel-y": lambda x: ndimage.sobel(x, axis=0, **NEAREST),
    "prewitt-x": lambda x: ndimage.prewitt(x, axis=1, **NEAREST),
    "prewitt-y": lambda x: ndimage.prewitt(x, axis=0, **NEAREST),
    "scharr-x": lambda x: ndimage.correlate1d(
        ndimage.correlate1d(x, [-1.0, 0, 1], axis=1, **NEAREST), [3.0, 10, 3], axis=0, **NEAREST
    ),
    "scharr-y": lambda x: ndimage.correlate1d(
        ndimage.correlate1d(x, [-1.0, 0, 1], axis=0, **NEAREST), [3.0, 10, 3], axis=1, **NEAREST
    ),
}


def test_every_preset_has_an_independent_reference() -> None:
    from convcli.kernels.presets import PRESETS

    assert set(PRESETS) == set(REFERENCES)


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_preset_on_a_photo_matches_scipy(tmp_path: Path, name: str) -> None:
    """The float result (.npy) per channel, and the PNG after round-half-even and clip."""
    source = SAMPLES / "photo_rgb.png"
    pixels = images.read_image(source, name="photo").pixels.astype(np.float64)
    expected = np.stack([REFERENCES[name](pixels[..., c]) for c in range(3)], axis=-1)
    runner = CliRunner()
    result = runner.invoke(main, ["conv", str(source), "-k", name, "-o", str(tmp_path / "o.npy")])
    assert result.exit_code == 0, result.stderr
    np.testing.assert_allclose(np.load(tmp_path / "o.npy"), expected, rtol=1e-5, atol=2e-3)
    result = runner.invoke(main, ["conv", str(source), "-k", name, "-o", str(tmp_path / "o.png")])
    assert result.exit_code == 0, result.stderr
    written = images.read_image(tmp_path / "o.png", name="o").pixels
    rounded = np.clip(np.rint(expected), 0, 255)
    # float32 sums may land on the other side of a .5 boundary: allow one grey level there.
    assert np.abs(written.astype(int) - rounded).max() <= 1
    assert np.mean(written == rounded) > 0.999
