"""Replay the PyTorch/TensorFlow reference dumps in tests/fixtures/reference through the engine.

The dumps are made by tests/fixtures/make_fixtures.py (see tests/fixtures/README.md) in the
spec's reference-dump format; this test needs neither framework.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

REFERENCE_DIR = Path(__file__).resolve().parent / "fixtures" / "reference"
DUMPS = sorted(REFERENCE_DIR.glob("*.npz"))

OPS = ("conv", "max_pool", "avg_pool")
CONV_KEYS = {
    "stride",
    "padding",
    "dilation",
    "groups",
    "pad_mode",
    "flip",
    "layout",
    "kernel_layout",
}
POOL_KEYS = {
    "max_pool": {"size", "stride", "padding", "dilation", "ceil_mode", "layout"},
    "avg_pool": {"size", "stride", "padding", "ceil_mode", "count_include_pad", "layout"},
}
META_KEYS = {"op", "source", "rtol", "atol"}

Dump = dict[str, npt.NDArray[Any]]


def load_dump(path: Path) -> tuple[Dump, dict[str, Any]]:
    with np.load(path, allow_pickle=False) as npz:
        members = {name: npz[name] for name in npz.files}
    params = json.loads(members.pop("params").item())
    assert isinstance(params, dict)
    return members, params


def as_argument(value: Any) -> Any:
    """JSON lists become the tuples a Python caller would write."""
    return tuple(value) if isinstance(value, list) else value


def run_engine(members: Dump, params: dict[str, Any]) -> npt.NDArray[Any]:
    # Imported here so a missing or broken engine fails these tests one by one instead of
    # stopping the collection of the whole suite.
    from convcli import avg_pool2d, conv2d, max_pool2d

    op = params["op"]
    kwargs = {key: as_argument(value) for key, value in params.items() if key not in META_KEYS}
    if op == "conv":
        return conv2d(members["input"], members["kernel"], members.get("bias"), **kwargs)
    size = kwargs.pop("size")
    pool = max_pool2d if op == "max_pool" else avg_pool2d
    return pool(members["input"], size, **kwargs)


def test_reference_dumps_exist() -> None:
    assert len(DUMPS) >= 30, f"expected the reference dumps in {REFERENCE_DIR}"


@pytest.mark.parametrize("path", DUMPS, ids=[p.stem for p in DUMPS])
def test_dump_is_well_formed(path: Path) -> None:
    members, params = load_dump(path)
    op = params.get("op")
    assert op in OPS
    allowed = CONV_KEYS if op == "conv" else POOL_KEYS[op]
    assert set(params) - META_KEYS <= allowed, f"unknown keys: {set(params) - META_KEYS - allowed}"
    assert isinstance(params.get("source"), str) and params["source"]
    expected_members = {"input", "output"} | ({"kernel"} if op == "conv" else set())
    assert expected_members <= set(members) <= expected_members | {"bias"}
    x, out = members["input"], members["output"]
    assert out.dtype == (np.float64 if x.dtype == np.float64 else np.float32)
    assert x.ndim == out.ndim and 2 <= x.ndim <= 4
    assert np.isfinite(out).all()


@pytest.mark.parametrize("path", DUMPS, ids=[p.stem for p in DUMPS])
def test_engine_matches_reference(path: Path) -> None:
    members, params = load_dump(path)
    x, expected = members["input"], members["output"]

    actual = run_engine(members, params)

    assert isinstance(actual, np.ndarray)
    assert actual.dtype == (np.float64 if x.dtype == np.float64 else np.float32), (
        f"{x.dtype} input gave {actual.dtype}"
    )
    assert actual.shape == expected.shape, f"{params['source']}"
    rtol = float(params.get("rtol", 1e-5))
    atol = float(params.get("atol", 1e-5 * float(np.max(np.abs(expected))) + 1e-6))
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, err_msg=params["source"])
