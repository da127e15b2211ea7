"""Running a planned batch: in this process, or in worker processes that survive bad items.

:func:`run_jobs` yields one :class:`~convcli.batch.ItemResult` per job as it completes.
Workers each read, compute and write their own item, so only a few hundred bytes per item
travel back and the main process's memory does not grow with the batch. A failing item costs
only itself; a worker that dies on one (a decoder crash, the OOM killer) fails that item and
is replaced. Ctrl-C (or closing the iterator) stops the workers at once and removes the
temporary files of the items they were on.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import signal
import sys
import threading
import time
import types
from collections import deque
from collections.abc import Generator, Iterator, Sequence
from contextlib import contextmanager, suppress
from multiprocessing.connection import Connection, wait
from multiprocessing.context import BaseContext
from pathlib import Path

from convcli.batch.jobs import ItemResult, Job, Settings, run_item
from convcli.engine.threads import available_cores
from convcli.errors import ConvcliError
from convcli.io.fileio import remove_temporary_files
from convcli.io.quiet import library_noise_silenced

#: Tasks handed to a worker at once: the one it runs and the next, so it never waits for us.
QUEUE_DEPTH = 2
#: Seconds workers get to exit (after their last task, or SIGTERM) before they are killed.
STOP_TIMEOUT = 10.0
#: BLAS/OpenMP pools limited to one thread in workers, set before the worker imports NumPy.
BLAS_THREADS_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def _context() -> BaseContext:
    """forkserver where the platform has it, else spawn; never a plain fork.

    Forking the main process copies whatever threads and locks it holds (rich's refresh
    thread, the engine's pool, BLAS threads), which can deadlock the child. The fork server
    is a clean single-threaded process with convcli imported once, so a worker (or the
    replacement for a dead one) starts in milliseconds rather than re-importing NumPy.
    """
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["convcli.batch.workers"])
        return context
    return multiprocessing.get_context("spawn")


@contextmanager
def _worker_environment() -> Iterator[None]:
    """One BLAS thread per worker (unless the user chose), for processes started inside.

    The BLAS library reads these when NumPy is imported, so they must be in the
    environment the fork server or spawned worker starts with; ours is restored after.
    """
    saved = {name: os.environ.get(name) for name in BLAS_THREADS_ENV}
    for name in BLAS_THREADS_ENV:
        os.environ.setdefault(name, "1")
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextmanager
def _main_module_hidden(settings: Settings) -> Iterator[None]:
    """Start workers that do not re-run the caller's ``__main__``.

    multiprocessing runs the main script again in every spawned or fork-server child, so that
    pickled references into it resolve. A worker needs nothing from it (its task is convcli
    code), and running it again fails for a script read from stdin, repeats the work of an
    unguarded script, and imports the whole CLI once more per worker. So the main module is
    out of sys.modules while a worker starts, unless the operation itself is defined there.
    """
    if type(settings.operation).__module__ == "__main__":
        yield
        return
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main


def _worker_main(conn: Connection, settings: Settings) -> None:
    """A worker: take ``(index, job)`` tasks until ``None``, send back each result."""
    # Ctrl-C reaches the whole process group; the main process decides. It stops us with
    # SIGTERM's default action, at once, even inside NumPy, and then removes the temporary
    # file we were writing (named by our pid). Raising from a handler instead could land in
    # a finalizer, where Python prints and swallows it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    try:
        # Problems are reported as item failures; decoder warnings and logs stay off stderr.
        with library_noise_silenced():
            while (task := conn.recv()) is not None:
                index, job = task
                conn.send(run_item(index, job, settings))
    except (EOFError, OSError):
        # The main process went away: nothing is left to report to, so the worker just ends.
        return


class _Worker:
    """One worker process, its pipe, and the indices of the jobs sent to it, oldest first."""

    def __init__(self, context: BaseContext, settings: Settings) -> None:
        self.conn, child = context.Pipe()
        try:
            with _worker_environment(), _main_module_hidden(settings):
                self.process = context.Process(  # type: ignore[attr-defined]
                    target=_worker_main, args=(child, settings), daemon=True
                )
                self.process.start()
        except OSError as error:
            self.conn.close()
            raise ConvcliError(
                f"cannot start a worker process ({error.strerror or error}); try --jobs 1"
            ) from error
        finally:
            child.close()
        self.queue: deque[int] = deque()
        self.broken = False

    def send(self, index: int, job: Job) -> bool:
        try:
            self.conn.send((index, job))
        except OSError:
            self.broken = True  # it died: its sentinel is ready, and we bury it next
            return False
        self.queue.append(index)
        return True

    def receive(self) -> tuple[list[ItemResult], bool]:
        """The results waiting in the pipe, and whether the worker has gone."""
        results: list[ItemResult] = []
        try:
            while self.conn.poll():
                results.append(self.conn.recv())
                self.queue.popleft()
        except (EOFError, OSError):
            return results, True
        return results, self.broken or self.process.exitcode is not None

    def death(self) -> str:
        """Why the process ended, once it has."""
        self.process.join(STOP_TIMEOUT)
        code = self.process.exitcode
        self.conn.close()
        if code is not None and code < 0:
            with suppress(ValueError):
                return f"killed by {signal.Signals(-code).name}"
        return f"exit code {code}"


class Pool:
    """Worker processes running ``jobs``, each fed up to :data:`QUEUE_DEPTH` jobs at a time.

    Each worker computes with ``settings.output.threads`` engine threads, by default its
    share of the cores, so that the workers together do not oversubscribe them.
    """

    def __init__(self, jobs: Sequence[Job], settings: Settings, size: int) -> None:
        self.jobs = jobs
        output = settings.output
        if output.threads is None:
            output = dataclasses.replace(output, threads=max(1, available_cores() // size))
        self.settings = dataclasses.replace(settings, output=output)
        self.size = size
        self.context = _context()
        self.workers: list[_Worker] = []
        self.retry: deque[int] = deque()  # sent to a worker that died before starting them
        self.unsent = 0  # jobs[unsent:] have not been handed out yet

    def results(self) -> Generator[ItemResult, None, None]:
        try:
            while self.work_left() or any(worker.queue for worker in self.workers):
                while len(self.workers) < self.size and self.work_left():
                    self.workers.append(_Worker(self.context, self.settings))
                self.hand_out()
                yield from self.collect()
        except BaseException:
            self.abort()
            raise
        for worker in self.workers:
            with suppress(OSError):
                worker.conn.send(None)
        _join(self.workers, STOP_TIMEOUT)

    def work_left(self) -> bool:
        return bool(self.retry) or self.unsent < len(self.jobs)

    def next_index(self) -> int | None:
        if self.retry:
            return self.retry.popleft()
        if self.unsent < len(self.jobs):
            self.unsent += 1
            return self.unsent - 1
        return None

    def hand_out(self) -> None:
        # Round-robin, one level of depth at a time, so short batches spread evenly.
        for depth in range(QUEUE_DEPTH):
            for worker in self.workers:
                if worker.broken or len(worker.queue) > depth:
                    continue
                index = self.next_index()
                if index is None:
                    return
                if not worker.send(index, self.jobs[index]):
                    self.retry.appendleft(index)

    def collect(self) -> Iterator[ItemResult]:
        """Wait for results or deaths; yield the results, and a failure per death mid-job."""
        watched = [worker for worker in self.workers if worker.queue or worker.broken]
        ready = set(wait([w.conn for w in watched] + [w.process.sentinel for w in watched]))
        for worker in watched:
            if worker.conn not in ready and worker.process.sentinel not in ready:
                continue
            results, dead = worker.receive()
            yield from results
            if dead:
                self.workers.remove(worker)
                failed = self.bury(worker)
                if failed is not None:
                    yield failed

    def bury(self, worker: _Worker) -> ItemResult | None:
        """A worker died: fail the job it was running, requeue the ones it had not started."""
        reason = worker.death()
        if not worker.queue:
            return None
        index = worker.queue.popleft()
        self.retry.extendleft(reversed(worker.queue))
        worker.queue.clear()
        job = self.jobs[index]
        remove_temporary_files(Path(job.target).parent, worker.process.pid)
        return ItemResult(
            index, job.source, [], f"{job.source}: the worker process died on it ({reason})"
        )

    def abort(self) -> None:
        """Stop every worker, then remove the temporary files of the jobs they were on."""
        with _sigint_ignored():
            for worker in self.workers:
                if worker.process.exitcode is None:
                    worker.process.terminate()
            _join(self.workers, STOP_TIMEOUT)
            for worker in self.workers:
                for index in worker.queue:
                    folder = Path(self.jobs[index].target).parent
                    remove_temporary_files(folder, worker.process.pid)


def _join(pool: list[_Worker], timeout: float) -> None:
    """Wait up to ``timeout`` seconds in all for the workers to exit, then kill the rest."""
    deadline = time.monotonic() + timeout
    for worker in pool:
        worker.process.join(max(0.0, deadline - time.monotonic()))
        if worker.process.exitcode is None:
            worker.process.kill()
            worker.process.join()
        worker.conn.close()


@contextmanager
def _sigint_ignored() -> Iterator[None]:
    """Hold a second Ctrl-C off while the first one's cleanup runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
