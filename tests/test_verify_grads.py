"""``convcli verify`` on gradient dumps: every gradient a dump holds is its own row."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from convcli import write_reference
from convcli.errors import ConvcliError, ExitCode, InputError
from convcli.verify.dumps import read_reference
from convcli.verify.replay import verify_dump_all
from tests.conftest import run

GRADIENT_DUMPS = sorted((Path(__file__).parent / "fixtures" / "gradients").glob("*.npz"))
RNG = np.random.default_rng(13)


@pytest.mark.parametrize("dump", GRADIENT_DUMPS, ids=[path.stem for path in GRADIENT_DUMPS])
def test_every_autograd_dump_verifies_row_by_row(dump: Path) -> None:
    result = run("verify", dump, "--json")
    assert result.exit_code == 0, result.stdout
    names = [pair["name"] for pair in json.loads(result.stdout)["pairs"]]
    with np.load(dump) as members:
        held = [name for name in ("grad_input", "grad_weight", "grad_bias") if name in members]
    assert names == [str(dump), *(f"{dump}:{name}" for name in held)]


def conv_dump(path: Path, **overrides: object) -> dict[str, np.ndarray]:
    """A float64 conv dump written with the library, its gradients from the engine (the
    same arrays on every call, ``overrides`` replacing some)."""
    from convcli import conv2d, conv2d_backward

    rng = np.random.default_rng(14)
    x = rng.standard_normal((2, 6, 7, 3))
    kernel = rng.standard_normal((4, 3, 3, 3))
    bias = rng.standard_normal(4)
    output = conv2d(x, kernel, bias, padding=1, stride=2)
    grad_output = rng.standard_normal(output.shape)
    grads = conv2d_backward(grad_output, x, kernel, bias, padding=1, stride=2)
    members = {
        "input": x, "output": output, "kernel": kernel, "bias": bias,
        "grad_output": grad_output, "grad_input": grads.input, "grad_weight": grads.weight,
        "grad_bias": grads.bias,
    }  # fmt: skip
    members.update(overrides)  # type: ignore[arg-type]
    write_reference(path, op="conv", padding=1, stride=2, source="convcli itself", **members)
    return members


def test_a_wrong_weight_gradient_is_its_own_failing_row(tmp_path: Path) -> None:
    members = conv_dump(tmp_path / "ok.npz")
    wrong = members["grad_weight"].copy()
    wrong[1, 0, 2, 1] += 0.5
    conv_dump(tmp_path / "bad.npz", grad_weight=wrong)
    assert run("verify", tmp_path / "ok.npz").exit_code == 0
    result = run("verify", tmp_path / "bad.npz", "--json", "--show", "1")
    assert result.exit_code == ExitCode.DIFFERENCES
    pairs = {pair["name"].rpartition(":")[2]: pair for pair in json.loads(result.stdout)["pairs"]}
    assert [pairs[name]["match"] for name in ("grad_input", "grad_weight", "grad_bias")] == [
        True,
        False,
        True,
    ]
    assert pairs["grad_weight"]["worst"][0]["index"] == [1, 0, 2, 1]
    table = run("verify", tmp_path / "bad.npz").stdout
    assert "bad.npz:grad_weight" in table and "DIFFER" in table.upper()


def test_the_library_recomputes_each_gradient(tmp_path: Path) -> None:
    conv_dump(tmp_path / "d.npz")
    comparisons = verify_dump_all(tmp_path / "d.npz")
    assert [Path(c.name).name.rpartition(":")[2] for c in comparisons] == [
        "d.npz",
        "grad_input",
        "grad_weight",
        "grad_bias",
    ]
    assert all(c.match for c in comparisons)
    assert read_reference(tmp_path / "d.npz").grad_output is not None


def test_gradients_need_grad_output_and_pooling_has_no_weight_gradient(tmp_path: Path) -> None:
    x = RNG.standard_normal((1, 4, 4, 1))
    with pytest.raises(ConvcliError, match="need grad_output"):
        write_reference(tmp_path / "a.npz", op="max_pool", size=2, input=x, output=x[:, ::2, ::2],
                        grad_input=x)  # fmt: skip
    with pytest.raises(ConvcliError, match="no grad_weight"):
        write_reference(tmp_path / "a.npz", op="max_pool", size=2, input=x, output=x[:, ::2, ::2],
                        grad_output=x[:, ::2, ::2], grad_weight=x)  # fmt: skip
    members = {"input": x, "output": x, "grad_input": x, "params": np.array('{"op": "conv"}')}
    np.savez(tmp_path / "b.npz", kernel=np.ones((1, 1)), **members)
    with pytest.raises(InputError, match="without 'grad_output'"):
        read_reference(tmp_path / "b.npz")
    result = run("verify", tmp_path / "b.npz")
    assert result.exit_code == ExitCode.TROUBLE and "grad_output" in result.stderr
