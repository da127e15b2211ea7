"""Reference dumps: writing, reading and recomputing them with the engine.

A reference dump is an ``.npz`` holding ``input``, ``output`` (expected), ``kernel`` (conv
and conv_transpose), optional ``bias`` and ``params``: a 0-d string array of JSON with ``op``
("conv", "max_pool", "avg_pool" or "conv_transpose"), the engine's keywords by their Python
names, and optional ``rtol``, ``atol`` and ``source``. It may also hold autograd's
``grad_output`` with any of ``grad_input``, ``grad_weight``, ``grad_bias``
(:mod:`convcli.verify.dump_grads` recomputes those). :func:`write_reference` writes one from a
PyTorch or TensorFlow script; :func:`verify_dump` recomputes it with the engine and compares
(see :mod:`convcli.verify.compare`).
"""

from __future__ import annotations

import json
import math
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt

from convcli.errors import ConvcliError, InputError
from convcli.io.arrays import ZIP_ERRORS, encode_npz, read_npz
from convcli.io.fileio import atomic_write
from convcli.limits import DEFAULT_MAX_BYTES
from convcli.validate import one_of, tolerance
from convcli.verify.dump_grads import GRADIENT_MEMBERS, OP_GRADIENTS

Array: TypeAlias = npt.NDArray[Any]

#: Operations a reference dump may record.
OPS = ("conv", "max_pool", "avg_pool", "conv_transpose")
#: The engine keywords each operation accepts in a dump, by their Python names.
OP_PARAMETERS: Mapping[str, tuple[str, ...]] = {
    "conv": (
        "stride",
        "padding",
        "dilation",
        "groups",
        "pad_mode",
        "flip",
        "layout",
        "kernel_layout",
    ),
    "max_pool": ("size", "stride", "padding", "dilation", "ceil_mode", "layout"),
    "avg_pool": ("size", "stride", "padding", "ceil_mode", "count_include_pad", "layout"),
    "conv_transpose": (
        "stride",
        "padding",
        "output_padding",
        "groups",
        "dilation",
        "layout",
        "kernel_layout",
    ),
}
#: Keys of a dump's params JSON that are not engine keywords.
DUMP_EXTRA_KEYS = ("rtol", "atol", "source")
#: Array members of a dump, by operation (``params`` aside).
_DUMP_MEMBERS: Mapping[str, tuple[str, ...]] = {
    op: (
        "input",
        "output",
        *(("kernel", "bias") if op in ("conv", "conv_transpose") else ()),
        "grad_output",
        *OP_GRADIENTS[op],
    )
    for op in OPS
}
_OPTIONAL_MEMBERS = ("bias", "grad_output", *GRADIENT_MEMBERS)
_TAKES_KERNEL = ("conv", "conv_transpose")


@dataclass(frozen=True)
class ReferenceDump:
    """A reference dump as read from disk.

    ``params`` holds the engine keywords (JSON lists turned into tuples).
    """

    path: Path
    op: str
    params: Mapping[str, Any]
    input: Array
    output: Array
    kernel: Array | None
    bias: Array | None
    rtol: float | None
    atol: float | None
    source: str | None
    gradients: Mapping[str, Array] = field(default_factory=dict)
    grad_output: Array | None = None


def _jsonable(value: Any, what: str) -> Any:
    """``value`` as plain JSON data: tuples become lists, NumPy scalars Python numbers."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConvcliError(f"{what} must be finite, got {value!r}")
        return value
    if isinstance(value, list | tuple | np.ndarray):
        return [_jsonable(item, what) for item in value]
    raise ConvcliError(f"{what}: cannot store {type(value).__name__} {value!r} in JSON")


def write_reference(
    path: Path | str,
    *,
    op: str,
    input: npt.ArrayLike,
    output: npt.ArrayLike,
    kernel: npt.ArrayLike | None = None,
    bias: npt.ArrayLike | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    source: str | None = None,
    grad_output: npt.ArrayLike | None = None,
    grad_input: npt.ArrayLike | None = None,
    grad_weight: npt.ArrayLike | None = None,
    grad_bias: npt.ArrayLike | None = None,
    **params: Any,
) -> None:
    """Write a reference dump that ``convcli verify DUMP.npz`` recomputes and compares.

    Parameters
    ----------
    path : Path or str
        The ``.npz`` to write, atomically; an existing file is replaced.
    op : {"conv", "max_pool", "avg_pool", "conv_transpose"}
    input : array_like
        What the operation was applied to, in ``layout`` (default NHWC): (N, H, W, C),
        (H, W, C) or (H, W); (N, C, H, W) or (C, H, W) with ``layout="NCHW"``.
    output : array_like
        The expected result (e.g. computed by PyTorch or TensorFlow), in the same layout.
    kernel : array_like, optional
        The weights; conv only, and required there: (kh, kw), (kh, kw, C), or 4-D in
        ``kernel_layout`` (default OHWI).
    bias : array_like, optional
        Conv only: a scalar or one value per output channel.
    rtol, atol : float, optional
        Tolerances to verify with; the command line's flags override them.
    source : str, optional
        Free text, e.g. ``"torch 2.13.0 nn.Conv2d(3, 8, 3)"``.
    grad_output, grad_input, grad_weight, grad_bias : array_like, optional
        Autograd's gradients: ``grad_output`` is the gradient flowing into the output, the
        others what the framework computed for the input, the kernel and the bias (each of
        its argument's shape). ``verify`` recomputes each one given; they need
        ``grad_output``, and pooling has no ``grad_weight`` or ``grad_bias``.
    **params
        The engine's keywords for ``op`` (:data:`OP_PARAMETERS`), e.g. ``stride=2,
        padding=(1, 1), layout="NCHW", kernel_layout="OIHW"``; tuples are stored as JSON
        lists.

    Raises
    ------
    ConvcliError
        Unknown op or keyword, a kernel or bias given to a pooling op, a missing kernel or
        size, a value JSON cannot hold, an object array, or a path not ending in .npz.
    """
    target = Path(path)
    if target.suffix.lower() != ".npz":
        raise ConvcliError(f"{target}: a reference dump must be an .npz file")
    one_of(op, OPS, "op")
    allowed = OP_PARAMETERS[op]
    for key in params:
        if key not in allowed:
            raise ConvcliError(
                f"unknown parameter {key!r} for op {op!r} (allowed: {', '.join(allowed)})"
            )
    if op in _TAKES_KERNEL and kernel is None:
        raise ConvcliError(f"op {op!r} needs a kernel")
    if op not in _TAKES_KERNEL and (kernel is not None or bias is not None):
        raise ConvcliError(f"op {op!r} takes no kernel or bias")
    if op not in _TAKES_KERNEL and "size" not in params:
        raise ConvcliError(f"op {op!r} needs size")
    given = {"grad_input": grad_input, "grad_weight": grad_weight, "grad_bias": grad_bias}
    grads = {name: value for name, value in given.items() if value is not None}
    if grads and grad_output is None:
        raise ConvcliError(f"{', '.join(grads)} need grad_output, the gradient they follow from")
    for name in grads:
        if name not in OP_GRADIENTS[op]:
            raise ConvcliError(f"op {op!r} has no {name}")
    if "grad_bias" in grads and bias is None:
        raise ConvcliError("grad_bias needs the bias")
    document: dict[str, Any] = {"op": op}
    for key, value in params.items():
        document[key] = _jsonable(value, key)
    if rtol is not None:
        document["rtol"] = tolerance(rtol, "rtol")
    if atol is not None:
        document["atol"] = tolerance(atol, "atol")
    if source is not None:
        if not isinstance(source, str):
            raise ConvcliError(f"source must be a string, got {source!r}")
        document["source"] = source
    members: dict[str, Array] = {"input": np.asarray(input), "output": np.asarray(output)}
    if kernel is not None:
        members["kernel"] = np.asarray(kernel)
    if bias is not None:
        members["bias"] = np.asarray(bias)
    if grad_output is not None:
        members["grad_output"] = np.asarray(grad_output)
    for name, value in grads.items():
        members[name] = np.asarray(value)
    for member, array in members.items():
        if array.dtype.hasobject:
            raise ConvcliError(f"{member} holds Python objects (dtype {array.dtype})")
    members["params"] = np.array(json.dumps(document))
    atomic_write(target, encode_npz(members))


def is_reference_dump(path: Path) -> bool:
    """Whether ``path`` is an ``.npz`` file with a ``params`` member (nothing is loaded)."""
    if path.suffix.lower() != ".npz" or not path.is_file():
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            return "params.npy" in archive.namelist()
    except ZIP_ERRORS:
        return False


def _parse_params(params: Array, name: str) -> dict[str, Any]:
    where = f"{name}: member 'params'"
    if params.ndim != 0 or params.dtype.kind not in "US":
        raise InputError(f"{where} must be a 0-d string array of JSON, got {params.dtype}")
    text = params.item()
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(f"{where} is not UTF-8 ({exc})") from exc

    def unique_keys(items: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in items:
            if key in result:
                raise InputError(f"{where}: duplicate key {key!r}")
            result[key] = value
        return result

    def no_constant(constant: str) -> Any:
        raise InputError(f"{where}: {constant} is not allowed")

    try:
        document = json.loads(text, object_pairs_hook=unique_keys, parse_constant=no_constant)
    except json.JSONDecodeError as exc:
        raise InputError(f"{where} is not valid JSON ({exc})") from exc
    if not isinstance(document, dict):
        raise InputError(f"{where} must be a JSON object, got {type(document).__name__}")
    op = document.get("op")
    try:
        op = one_of(op, OPS, "op")
    except ConvcliError as exc:
        raise InputError(f"{where}: {exc}") from None
    allowed = ("op", *OP_PARAMETERS[op], *DUMP_EXTRA_KEYS)
    for key in document:
        if key not in allowed:
            raise InputError(
                f"{where}: unknown key {key!r} for op {op!r} (allowed: {', '.join(allowed[1:])})"
            )
    return document


def read_reference(path: Path, *, max_bytes: int = DEFAULT_MAX_BYTES) -> ReferenceDump:
    """Read and validate a reference dump (see the module docstring for its format).

    Raises
    ------
    InputError
        Not an .npz; ``params`` missing or malformed (not a 0-d string, bad JSON, duplicate
        key, unknown op or key, bad tolerance); a member missing or not used by the op.
        Each message names the dump and the member.
    LimitError
        A member is over ``max_bytes``.
    """
    name = str(path)
    if not path.is_file():
        raise InputError(f"{name}: no such file")
    members = read_npz(path, name=name, max_bytes=max_bytes)
    if "params" not in members:
        raise InputError(f"{name}: not a reference dump: no 'params' member")
    document = _parse_params(members.pop("params"), name)
    op = document.pop("op")
    expected_members = _DUMP_MEMBERS[op]
    for member in members:
        if member not in expected_members:
            raise InputError(
                f"{name}: unexpected member {member!r} (a {op} dump holds "
                f"{', '.join(expected_members)} and params)"
            )
    for member in expected_members:
        if member not in members and member not in _OPTIONAL_MEMBERS:
            raise InputError(
                f"{name}: missing member {member!r} (a {op} dump holds "
                f"{', '.join(expected_members)} and params)"
            )
    held = [member for member in GRADIENT_MEMBERS if member in members]
    if held and "grad_output" not in members:
        raise InputError(f"{name}: {', '.join(held)} without 'grad_output', which they follow from")
    tolerances: dict[str, float | None] = {}
    for key in ("rtol", "atol"):
        value = document.pop(key, None)
        try:
            tolerances[key] = None if value is None else tolerance(value, key)
        except ConvcliError as exc:
            raise InputError(f"{name}: member 'params': {exc}") from exc
    source = document.pop("source", None)
    if source is not None and not isinstance(source, str):
        raise InputError(f"{name}: member 'params': source must be a string, got {source!r}")
    params = {
        key: tuple(value) if isinstance(value, list) else value for key, value in document.items()
    }
    return ReferenceDump(
        path=path,
        op=op,
        params=params,
        input=members["input"],
        output=members["output"],
        kernel=members.get("kernel"),
        bias=members.get("bias"),
        rtol=tolerances["rtol"],
        atol=tolerances["atol"],
        source=source,
        gradients={name: members[name] for name in GRADIENT_MEMBERS if name in members},
        grad_output=members.get("grad_output"),
    )
