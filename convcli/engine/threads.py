"""How many worker threads the engine uses, and running blocks on them.

NumPy releases the GIL inside ufunc loops, FFTs and matrix products on large arrays, so plain
Python threads over independent row blocks use several cores without copying data between
processes. The dense GEMM path runs its bands on these threads too, with NumPy's OpenBLAS
limited to one thread for the call (:func:`single_blas_thread`): OpenBLAS's own threads
synchronise after every product and drifted 2-4x slower whenever the VM delayed one of
them (see docs/performance.md).
"""

from __future__ import annotations

import contextlib
import contextvars
import ctypes
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from convcli.errors import ConvcliError

__all__ = ["THREADS_ENV", "available_cores", "resolve_threads", "run_blocks", "single_blas_thread"]

#: Environment variable capping the engine's worker threads (the `threads` argument wins).
THREADS_ENV = "CONVCLI_THREADS"

Task = TypeVar("Task")


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity where the platform reports it)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def resolve_threads(threads: int | None) -> int:
    """The worker-thread count: ``threads``, else $CONVCLI_THREADS, else the available cores."""
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ConvcliError(f"threads must be a positive int, got {threads!r}")
        return threads
    setting = os.environ.get(THREADS_ENV, "").strip()
    if not setting:
        return available_cores()
    try:
        value = int(setting)
    except ValueError:
        value = 0
    if value < 1:
        raise ConvcliError(f"{THREADS_ENV} must be a positive integer, got {setting!r}")
    return value


def run_blocks_one_blas_thread(
    tasks: Sequence[Task], work: Callable[[Task], None], threads: int, most: int | None = None
) -> None:
    """:func:`run_blocks` with OpenBLAS held to one thread while 2 to ``most`` Python threads
    run the tasks (each task's products are too small, or sync too often, to thread well
    inside BLAS); in order on this thread otherwise, or when OpenBLAS cannot be limited."""
    workers = min(threads, len(tasks))
    if 2 <= workers and (most is None or workers <= most):
        with single_blas_thread() as single:
            if single:
                run_blocks(tasks, work, threads)
                return
    for task in tasks:
        work(task)


def run_blocks(tasks: Sequence[Task], work: Callable[[Task], None], threads: int) -> None:
    """Call ``work`` on every task, on up to ``threads`` threads; re-raise the first error.

    Tasks write disjoint parts of one output array, so their order does not matter. Workers
    pull the next task from a shared iterator (one lock per task, no future per task): a
    thousand small row bands cost microseconds to hand out, and a slow core takes fewer.
    """
    workers = min(threads, len(tasks))
    if workers <= 1:
        for task in tasks:
            work(task)
        return
    # Imported here: a small image's one band, the usual command-line case, needs no pool.
    from concurrent.futures import ThreadPoolExecutor

    pending = iter(tasks)
    lock = threading.Lock()
    failed = threading.Event()

    def drain() -> None:
        while not failed.is_set():
            with lock:
                task = next(pending, None)
            if task is None:
                return
            try:
                work(task)
            except BaseException:
                failed.set()
                raise

    with ThreadPoolExecutor(max_workers=workers - 1, thread_name_prefix="convcli") as pool:
        # Each helper runs in a copy of the caller's context, so settings kept in context
        # variables (numpy.errstate, for one) apply to every band, not only the caller's.
        helpers = [pool.submit(contextvars.copy_context().run, drain) for _ in range(workers - 1)]
        try:
            drain()
        finally:
            # Wait for the helpers even when this thread failed: they write into the output.
            errors = [helper.exception() for helper in helpers]
    for error in errors:
        if error is not None:
            raise error


#: (get, set) thread-count functions of the OpenBLAS NumPy links, names as exported by the
#: wheels' scipy-openblas (64-bit integer build) and by plain OpenBLAS.
_OPENBLAS_NAMES = [
    ("scipy_openblas_get_num_threads64_", "scipy_openblas_set_num_threads64_"),
    ("scipy_openblas_get_num_threads", "scipy_openblas_set_num_threads"),
    ("openblas_get_num_threads64_", "openblas_set_num_threads64_"),
    ("openblas_get_num_threads", "openblas_set_num_threads"),
]
_blas_lock = threading.Lock()
_blas_users = 0
_blas_saved = 0
_blas_control: list[tuple[Any, Any] | None] = []


def _openblas_control() -> tuple[Any, Any] | None:
    """NumPy's OpenBLAS (get, set) thread-count functions, or None (another BLAS, no wheel)."""
    if _blas_control:
        return _blas_control[0]
    import glob

    import numpy

    found: tuple[Any, Any] | None = None
    root = os.path.dirname(os.path.dirname(numpy.__file__))
    # Wheels bundle the library beside the package (numpy.libs, or numpy/.dylibs on macOS);
    # loading the same file again returns the instance NumPy already uses.
    candidates = glob.glob(os.path.join(root, "numpy.libs", "*openblas*"))
    candidates += glob.glob(os.path.join(os.path.dirname(numpy.__file__), ".dylibs", "*openblas*"))
    for path in candidates:
        try:
            library = ctypes.CDLL(path)
        except OSError:
            continue
        for get_name, set_name in _OPENBLAS_NAMES:
            if hasattr(library, get_name) and hasattr(library, set_name):
                getter, setter = getattr(library, get_name), getattr(library, set_name)
                getter.restype, getter.argtypes = ctypes.c_int, []
                setter.restype, setter.argtypes = None, [ctypes.c_int]
                found = (getter, setter)
                break
        if found is not None:
            break
    _blas_control.append(found)
    return found


@contextlib.contextmanager
def single_blas_thread() -> Iterator[bool]:
    """Limit NumPy's OpenBLAS to one thread inside the block; yields whether that worked.

    The setting is process-wide: the first caller to enter saves the count and the last to
    leave restores it, so overlapping calls from several threads leave it as they found it.
    """
    global _blas_users, _blas_saved
    control = _openblas_control()
    if control is None:
        yield False
        return
    getter, setter = control
    with _blas_lock:
        if _blas_users == 0:
            _blas_saved = int(getter())
            if _blas_saved != 1:
                setter(1)
        _blas_users += 1
    try:
        yield True
    finally:
        with _blas_lock:
            _blas_users -= 1
            if _blas_users == 0 and _blas_saved != 1:
                setter(_blas_saved)
