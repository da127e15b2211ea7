"""How many worker threads the engine uses, and running blocks on them.

NumPy releases the GIL inside ufunc loops, FFTs and matrix products on large arrays, so plain
Python threads over independent row blocks use several cores without copying data between
processes. The BLAS library has its own threads: the GEMM paths run their blocks one after
another and let the BLAS spread each product over the cores (measured faster here than two
Python threads over a BLAS limited to one thread each; see docs/performance.md).
"""

from __future__ import annotations

import contextvars
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from convcli.errors import ConvcliError

__all__ = ["THREADS_ENV", "available_cores", "resolve_threads", "run_blocks"]

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
