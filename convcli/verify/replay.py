"""Replaying a reference dump: recomputing its output and each gradient with the engine,
and comparing them with what the framework recorded.
"""

from __future__ import annotations

from pathlib import Path

from convcli.errors import InputError, LimitError
from convcli.limits import DEFAULT_MAX_BYTES
from convcli.verify.compare import Comparison, compare_arrays
from convcli.verify.dump_grads import forward
from convcli.verify.dump_grads import gradients as recompute_gradients
from convcli.verify.dumps import Array, ReferenceDump, read_reference


def _members(dump: ReferenceDump) -> dict[str, Array]:
    members: dict[str, Array] = {"input": dump.input, **dump.gradients}
    for name, value in (
        ("kernel", dump.kernel),
        ("bias", dump.bias),
        ("grad_output", dump.grad_output),
    ):
        if value is not None:
            members[name] = value
    return members


def recompute(dump: ReferenceDump, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Array:
    """Run the dump's operation on its input with the engine.

    Returns
    -------
    ndarray
        float64 for a float64 input, else float32, in the dump's layout.

    Raises
    ------
    InputError
        The engine refuses the dump's arguments (the message names the dump).
    LimitError
        The result or scratch memory would exceed ``max_bytes``.
    """
    return recompute_all(dump, max_bytes=max_bytes, gradients=False)[0][1]


def recompute_all(
    dump: ReferenceDump, *, max_bytes: int = DEFAULT_MAX_BYTES, gradients: bool = True
) -> list[tuple[str, Array, Array]]:
    """(member, recomputed, expected) for the output and each gradient the dump holds.

    The output comes first; then ``grad_input``, ``grad_weight``, ``grad_bias`` as present.

    Raises
    ------
    InputError, LimitError
        As :func:`recompute`.
    """
    params = dict(dump.params)
    members = _members(dump)
    if dump.op in ("conv", "conv_transpose") and dump.kernel is None:
        raise InputError(f"{dump.path}: missing member 'kernel'")
    try:
        rows = [("output", forward(dump.op, members, params, max_bytes), dump.output)]
        if gradients:
            found = recompute_gradients(dump.op, members, params, max_bytes)
            rows += [(name, found[name], dump.gradients[name]) for name in found]
    except LimitError as exc:
        raise LimitError(f"{dump.path}: {exc}") from exc
    except (ValueError, TypeError) as exc:
        raise InputError(f"{dump.path}: cannot recompute {dump.op}: {exc}") from exc
    return rows


def dump_tolerances(
    dump: ReferenceDump, rtol: float | None, atol: float | None
) -> tuple[float | None, float | None]:
    """Command-line values first, then the dump's; None leaves the dtype default."""
    return (rtol if rtol is not None else dump.rtol, atol if atol is not None else dump.atol)


def verify_dump(
    path: Path,
    *,
    rtol: float | None = None,
    atol: float | None = None,
    show: int = 0,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Comparison:
    """Recompute a reference dump with the engine and compare with its ``output``.

    Tolerances: ``rtol``/``atol`` if given, else the dump's, else the defaults of the
    expected (``output``) dtype.

    Returns
    -------
    Comparison
        Named after the dump's path.

    Raises
    ------
    InputError
        A malformed dump (see :func:`read_reference`) or arguments the engine refuses.

    Notes
    -----
    A float32 reference summed in another order (e.g. by PyTorch's convolution) can differ
    from the engine's float32 result by more than float32's default rtol of 1.3e-6 when a
    filter has many taps (C * kh * kw in the hundreds); the defaults are not loosened for
    that. Record ``rtol``/``atol`` in the dump, or pass them.
    """
    return verify_dump_all(path, rtol=rtol, atol=atol, show=show, max_bytes=max_bytes)[0]


def verify_dump_all(
    path: Path,
    *,
    rtol: float | None = None,
    atol: float | None = None,
    show: int = 0,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> list[Comparison]:
    """:func:`verify_dump` for the output and each gradient the dump holds, in that order.

    The output's comparison is named after the dump's path, a gradient's ``PATH:grad_input``
    (``grad_weight``, ``grad_bias``); tolerances as :func:`verify_dump`, the defaults by
    each expected array's dtype.
    """
    dump = read_reference(path, max_bytes=max_bytes)
    used_rtol, used_atol = dump_tolerances(dump, rtol, atol)
    return [
        compare_arrays(
            actual,
            expected,
            name=str(path) if member == "output" else f"{path}:{member}",
            rtol=used_rtol,
            atol=used_atol,
            show=show,
        )
        for member, actual, expected in recompute_all(dump, max_bytes=max_bytes)
    ]
