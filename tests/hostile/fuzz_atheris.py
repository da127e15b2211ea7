"""Coverage-guided fuzzing of convcli's readers with atheris (optional; not run in CI).

    pip install atheris
    python tests/hostile/fuzz_atheris.py -atheris_runs=1000000 tests/hostile/corpus

The corpus folder seeds libFuzzer. The first input byte picks the reader (stdin-style
``read_source``, ``read_npy``, ``read_npz``, ``parse_kernel_json``); the rest is its input.
Anything but a ConvcliError (or success) is a crash that libFuzzer saves as ``crash-*``. Limits
are low so that headers claiming huge sizes are refused instead of decoded.
"""

from __future__ import annotations

import sys
import warnings

import atheris

with atheris.instrument_imports():
    from convcli import kernels
    from convcli.errors import ConvcliError
    from convcli.io import arrays, sources

MAX_BYTES = 16 * 1024 * 1024
MAX_PIXELS = 1 << 20


def _source(data: bytes) -> object:
    return sources.read_source(None, data=data, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS)


READERS = (
    _source,
    lambda data: arrays.read_npy(data, name="x.npy", max_bytes=MAX_BYTES),
    lambda data: arrays.read_npz(data, name="x.npz", max_bytes=MAX_BYTES),
    lambda data: kernels.parse_kernel_json(data, name="k.json"),
)


def test_one_input(data: bytes) -> None:
    if not data:
        return
    read = READERS[data[0] % len(READERS)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # as strict as the test suite
        try:
            read(data[1:])
        except ConvcliError:
            pass


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
