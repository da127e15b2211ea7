"""Running a planned batch on a Dask cluster: a task per file, and per chunk of a large .npy.

:func:`run_on_cluster` is :func:`convcli.batch.runner.run_jobs` for ``--scheduler``: each job goes
through :func:`~convcli.batch.jobs.run_item` in a Dask task on a cluster or on a LocalCluster, and
its result is yielded as it completes. Workers read and write the files (paths are made
absolute: a shared file system); only report rows come back. A 4-D .npy over the chunk limit
is a task per chunk along N (the local rule), writing parts that a last task joins into the
output atomically. Beside its output each job keeps temporary files named with the run's
token: a mark per attempt, so that a worker's death blames the task it ran (Dask blames all
it held), and a link to the output it committed, so that a task Dask runs again because its
result died with a worker knows that output for its own.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import logging
import math
import multiprocessing
import multiprocessing.forkserver
import os
import secrets
import shutil
import signal
import threading
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import contextmanager, nullcontext, suppress
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from convcli.batch import jobs
from convcli.batch.jobs import ItemResult, Job, Settings, Step, run_item
from convcli.batch.pipeline import Row, naming_errors
from convcli.engine.threads import available_cores
from convcli.errors import ConvcliError
from convcli.io import arrays, fileio
from convcli.io.fileio import remove_run_temporary_files as remove_run_files
from convcli.io.quiet import library_noise_silenced

#: ``--scheduler local``: a LocalCluster on this machine, one single-threaded worker per core.
LOCAL = "local"
#: Seconds to reach a scheduler (Dask's 30 s is long for a typo), then for a first worker.
CONNECT_TIMEOUT = 10.0
WORKER_TIMEOUT = 30.0
#: Workers that may die running one task before its job fails ("died on it 3 times").
DEATHS_ALLOWED = 2
#: Jobs in flight: enough to keep a cluster busy, few enough to keep memory flat.
IN_FLIGHT = 1000
MISSING_EXTRA = "--scheduler needs Dask: pip install 'convcli[dask]'"


def _import(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError as error:
        raise ConvcliError(f"{MISSING_EXTRA} ({error})") from None


def run_on_cluster(
    planned: Sequence[Job], settings: Settings, address: str
) -> Generator[ItemResult, None, None]:
    """Run every job on the Dask cluster at ``address``; yield each result as it completes.

    Leaving the loop early (an exception, Ctrl-C, SIGTERM, closing it) cancels the tasks,
    closes the client (and LocalCluster) and removes the run's temporary files. Engine
    threads default to one per task: Dask runs a task per thread.

    Raises:
        ConvcliError: Dask is not installed, no scheduler answers at ``address`` within
            :data:`CONNECT_TIMEOUT` seconds or it has no worker, or it went away mid-run.
    """
    dask, distributed = _import("dask"), _import("distributed")
    if not planned:
        return
    token, output = f"d{secrets.token_hex(6)}", settings.output
    output = dataclasses.replace(output, threads=output.threads or 1)
    settings = dataclasses.replace(settings, output=output, run_token=token)
    folders = sorted({os.path.dirname(os.path.abspath(job.target)) for job in planned})
    missing = _missing(folders)
    quiet = (
        nullcontext()
        if settings.debug
        else distributed.utils.silence_logging_cmgr(logging.CRITICAL)
    )
    with _signals_deferred() as check, quiet:
        client, cluster = _connect(dask, distributed, address, settings)
        batch = None
        try:
            batch = _Batch(client, address, settings, planned)
            yield from batch.results(check)
        except BaseException:
            with _sigint_ignored(), suppress(Exception):
                if batch is not None:
                    batch.cancel()
            raise
        finally:
            with _sigint_ignored():
                for closing in (client, cluster):
                    with suppress(Exception):
                        if closing is not None:
                            closing.close(timeout=CONNECT_TIMEOUT)
                # the LocalCluster's workers are gone: nothing of this run writes any more
                for folder in folders:
                    remove_run_files(Path(folder), token)
                for folder in missing:  # made for a task's marks, left empty: as a local run
                    with suppress(OSError):
                        os.rmdir(folder)
        check()  # a signal that came while cleaning up


def _missing(folders: list[str]) -> list[str]:
    """The folders among ``folders`` and their parents that do not exist, deepest first."""
    missing: set[str] = set()
    for folder in folders:
        while folder not in missing and not os.path.isdir(folder):
            missing.add(folder)
            folder = os.path.dirname(folder)
    return sorted(missing, key=len, reverse=True)


def _connect(
    dask: ModuleType, distributed: ModuleType, address: str, settings: Settings
) -> tuple[Any, Any | None]:
    """A client of the scheduler at ``address``, and the LocalCluster started for ``local``."""
    if address != LOCAL:
        try:
            client = distributed.Client(address, timeout=CONNECT_TIMEOUT, set_as_default=False)
        except (OSError, TimeoutError, ValueError) as error:
            message = f"--scheduler {address}: cannot reach the Dask scheduler ({error})"
            raise ConvcliError(message) from None
        try:
            client.wait_for_workers(1, timeout=WORKER_TIMEOUT)
        except (OSError, TimeoutError):
            client.close()
            message = f"--scheduler {address}: no Dask worker joined in {WORKER_TIMEOUT:.0f} s"
            raise ConvcliError(f"{message} (start one: dask worker {address})") from None
        return client, None
    # Dask's own count of deaths above the tasks' (which blame only the task that ran), and
    # every task handed to a worker at once: queued, each waits for a round trip (5-7 ms).
    config: dict[str, object] = {
        "distributed.scheduler.allowed-failures": DEATHS_ALLOWED + 1,
        "distributed.scheduler.worker-saturation": math.inf,
    }
    try:
        # Ctrl-C reaches the process group, but this process decides: workers forked from a
        # fork server started with SIGINT ignored (or spawned so) ignore it too.
        forked = "forkserver" in multiprocessing.get_all_start_methods()
        if forked:  # which also starts them with Dask and convcli imported
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(["distributed", __name__])
            with _sigint_ignored():
                multiprocessing.forkserver.ensure_running()
            config["distributed.worker.multiprocessing-method"] = "forkserver"
        with dask.config.set(config), nullcontext() if forked else _sigint_ignored():
            cluster = distributed.LocalCluster(
                n_workers=available_cores(),
                threads_per_worker=1,
                dashboard_address=None,
                silence_logs=logging.WARNING if settings.debug else logging.CRITICAL,
            )
    except (OSError, RuntimeError, TimeoutError) as error:
        raise ConvcliError(f"--scheduler local: cannot start a Dask cluster ({error})") from error
    try:
        return distributed.Client(cluster, timeout=CONNECT_TIMEOUT, set_as_default=False), cluster
    except BaseException:
        cluster.close()
        raise


class _Batch:
    """The jobs of a run as Dask tasks, at most :data:`IN_FLIGHT` jobs in flight."""

    def __init__(self, client: Any, address: str, settings: Settings, plan: Sequence[Job]) -> None:
        self.distributed, self.client, self.address = _import("distributed"), client, address
        self.settings, self.token, self.planned = settings, settings.run_token, plan
        absolute = os.path.abspath
        self.sent = [Job(absolute(j.source), absolute(j.target), j.format) for j in plan]
        # A task holding the settings, an argument of every job's task: pickled once, and
        # recomputed if the worker holding them dies.
        self.shared = client.submit(_unchanged, settings, key=f"convcli-settings-{self.token}")
        self.pending = self.distributed.as_completed(
            loop=client.loop, with_results=True, raise_errors=False
        )
        self.live: dict[str, tuple[int, Any]] = {}  # key -> (job index, future)
        self.chunks: dict[int, list[Any]] = {}  # job index -> its chunks' futures
        self.submitted = self.done = 0

    def key(self, kind: str, index: int) -> str:
        return f"convcli-{kind}-{index}-{self.token}"

    def ledger(self, index: int) -> str:
        """The prefix of job ``index``'s temporary files, named after this process."""
        folder = os.path.dirname(self.sent[index].target)
        return os.path.join(folder, fileio.temp_prefix(os.getpid(), _job_token(self.token, index)))

    def results(self, check: Callable[[], None]) -> Iterator[ItemResult]:
        """Each job's result as its last task completes; signals are raised in ``check``.

        Dask's thread fetches the results (``as_completed``), so this one never blocks on a
        worker that died, and stays ready for Ctrl-C.
        """
        self.submit()
        while self.live:
            since = time.monotonic()
            while self.live and not self.pending.has_ready():
                check()
                time.sleep(0.005)
                if time.monotonic() - since > 2:  # a lost result that failed when recomputed
                    since = time.monotonic()  # is never yielded by as_completed: seen here
                    for _, future in list(self.live.values()):
                        if future.status in ("error", "cancelled"):
                            yield self.finish(future, None)
            check()
            for future, value in self.pending.next_batch(block=False):
                if future.key in self.live:
                    yield self.finish(future, value)
            self.submit()

    def submit(self) -> None:
        """Top up to :data:`IN_FLIGHT` jobs once half are done, in groups: each submission
        is a graph update costing milliseconds on the scheduler, however small."""
        if len(self.live) > IN_FLIGHT // 2:
            return
        files: list[int] = []
        while len(self.live) + len(files) < IN_FLIGHT and self.submitted < len(self.sent):
            index = self.submitted
            self.submitted += 1
            try:
                chunks = jobs.chunking(self.sent[index], self.settings)
            except ConvcliError:  # an unreadable header: the job's own task says so
                chunks = None
            if chunks is None:
                files.append(index)
            else:
                self.submit_chunks(index, *chunks)
        if files:
            arguments = [[self.sent[n] for n in files], [self.shared] * len(files)]
            arguments.append([self.ledger(n) for n in files])
            keys = [self.key("file", n) for n in files]
            self.track(files, self.client.map(_file_task, files, *arguments, key=keys))

    def submit_chunks(self, index: int, header: arrays.NpyHeader, per_chunk: int) -> None:
        """A task per ``per_chunk`` samples, writing its part, and one joining the parts."""
        job, ledger, count = self.sent[index], self.ledger(index), header.shape[0]
        stop, starts = f"convcli-{self.token}-stop", range(0, count, per_chunk)
        submit = functools.partial(self.client.submit, _chunk_task, index, job, self.shared)
        chunks = [
            submit(header, start, min(per_chunk, count - start), ledger, stop,
                   key=self.key(f"chunk-{start}", index))
            for start in starts
        ]  # fmt: skip
        parts = [f"{ledger}c{start}-part" for start in starts]
        join = self.client.submit(_join_task, index, job, self.shared, ledger, header, parts,
                                  *chunks, key=self.key("join", index))  # fmt: skip
        self.chunks[index] = chunks
        self.track([index], [join])

    def track(self, indices: list[int], futures: list[Any]) -> None:
        for index, future in zip(indices, futures, strict=True):
            self.live[future.key] = (index, future)
        self.pending.update(futures)

    def finish(self, future: Any, value: object) -> ItemResult:
        """A job's result, named as the user named its files; its link to the output dropped.

        ``value`` is what ``as_completed`` got: the ItemResult, ``(type, error, traceback)``,
        or the CancelledError of a future the scheduler dropped.
        """
        index, _ = self.live.pop(future.key)
        self.chunks.pop(index, None)
        with suppress(FileNotFoundError):
            os.unlink(f"{self.ledger(index)}done")
        if not isinstance(value, ItemResult):
            value = self.failure(future, index, value)
        self.done += 1
        return _renamed(value, self.planned[index], self.sent[index])

    def failure(self, future: Any, index: int, value: object) -> ItemResult:
        job = self.sent[index]
        if future.status == "cancelled" or isinstance(value, BaseException):
            raise ConvcliError(
                f"--scheduler {self.address}: lost the Dask scheduler after {self.done:,} of "
                f"{len(self.sent):,} items (rerun with --skip-existing to resume)"
            )
        error = value[1] if isinstance(value, tuple) else future.exception(CONNECT_TIMEOUT)
        if isinstance(error, self.distributed.KilledWorker):  # Dask's count came first
            remove_run_files(Path(job.target).parent, _job_token(self.token, index))
            reason = _died(job, error.allowed_failures + 1)
        elif self.settings.debug:
            raise error
        else:
            reason = f"{job.source}: the Dask task failed: {type(error).__name__}: {error}"
        return ItemResult(index, job.source, [], reason)

    def cancel(self) -> None:
        """Cancel every task; chunk tasks still running drop the part they write."""
        if self.chunks:
            self.distributed.Event(f"convcli-{self.token}-stop", client=self.client).set()
        futures = [future for _, future in self.live.values()]
        futures += [future for chunks in self.chunks.values() for future in chunks]
        self.client.cancel([*futures, self.shared], force=True)


def _renamed(result: ItemResult, original: Job, sent: Job) -> ItemResult:
    """``result`` naming the input and output as the user did, not by absolute paths."""
    if original == sent:
        return result
    pairs = sorted([(sent.source, original.source), (sent.target, original.target)], reverse=True)

    def named(text: str) -> str:
        for absolute, given in pairs:  # the longer first, in case one holds the other
            text = text.replace(absolute, given)
        return text

    rows = [dataclasses.replace(row, name=named(row.name)) for row in result.rows]
    error = None if result.error is None else named(result.error)
    return dataclasses.replace(result, source=original.source, rows=rows, error=error)


def _died(job: Job, times: int) -> str:
    return f"{job.source}: a Dask worker died on it {times} times (KilledWorker)"


# --------------------------------------------------------------------------- worker side


def _unchanged(settings: Settings) -> Settings:
    return settings


def _job_token(token: str, index: int) -> str:
    """The token of one job's temporary files: the run's, then the job's index."""
    return f"{token}-i{index}"


@contextmanager
def _attempt(ledger: str, job: Job, settings: Settings) -> Iterator[int]:
    """Mark an attempt of a task (``<ledger>a<n>``); yield how many earlier ones died.

    An attempt removes its marks when it ends, so the marks found are those of attempts
    whose worker died running them. Decoder warnings stay off the worker's stderr, as in
    convcli's workers, in a one-thread worker (a LocalCluster's, whose stderr is the user's
    terminal): the warning filters are process-wide, not safe to change from threads.
    """
    number = 1
    with suppress(OSError, ConvcliError):  # unwritable: the job's own write will say so
        fileio.make_folder(Path(job.target))
        while True:
            try:
                os.close(os.open(f"{ledger}a{number}", os.O_CREAT | os.O_EXCL, 0o644))
                break
            except FileExistsError:
                number += 1
    try:
        threads = _import("distributed").get_worker().state.nthreads
    except ValueError:  # not in a worker
        threads = 1
    try:
        with library_noise_silenced(settings.debug or threads > 1):
            yield number - 1
    finally:
        for mark in range(1, number + 1):
            with suppress(FileNotFoundError):
                os.unlink(f"{ledger}a{mark}")


def _ours(ledger: str, target: str) -> bool:
    """Whether ``target`` is what an earlier attempt of this job committed (and linked)."""
    try:
        done, output = os.stat(f"{ledger}done"), os.stat(target)
    except OSError:
        return False
    return (done.st_dev, done.st_ino) == (output.st_dev, output.st_ino)


def _last_task(
    index: int, job: Job, settings: Settings, ledger: str, step: Step, rows: list[Row]
) -> ItemResult:
    """A job's last task: :func:`~convcli.batch.jobs.run_item` with ``step``, linked when done.

    Dask runs a finished task again when its result was lost with its worker: the output
    found then is its own (linked to ``<ledger>done``), so it is rewritten (``rows`` is
    empty) or kept (with its ``rows``), not reported as having appeared.
    """
    token, done = _job_token(settings.run_token, index), f"{ledger}done"
    with _attempt(ledger, job, settings) as deaths:
        ours = _ours(ledger, job.target)
        if deaths > DEATHS_ALLOWED:
            result = ItemResult(index, job.source, [], _died(job, deaths))
        elif ours and rows:
            return ItemResult(index, job.source, rows)
        else:
            overwrite = settings.overwrite or ours
            job_settings = dataclasses.replace(settings, overwrite=overwrite, run_token=token)
            result = run_item(index, job, job_settings, step)
        if deaths:  # what the attempts that died were writing
            remove_run_files(Path(job.target).parent, token)
        if result.error is None and not result.skipped:  # linked before the mark goes
            with suppress(FileNotFoundError):
                os.unlink(done)  # an earlier attempt's, to the output replaced
            with suppress(OSError):
                os.link(job.target, done)
    return result


def _file_task(index: int, job: Job, settings: Settings, ledger: str) -> ItemResult:
    """A job that is not chunked."""
    return _last_task(index, job, settings, ledger, jobs.process_job, [])


def _chunk_task(
    index: int, job: Job, settings: Settings, header: arrays.NpyHeader,
    start: int, rows: int, ledger: str, stop: str,
) -> ItemResult:  # fmt: skip
    """Samples ``start : start + rows`` of a chunked job, filtered into its part file."""
    ledger = f"{ledger}c{start}-"
    part = f"{ledger}part"
    step = functools.partial(_write_part, header=header, start=start, rows=rows, part=part)
    with _attempt(ledger, job, settings) as deaths:
        if deaths > DEATHS_ALLOWED:
            return ItemResult(index, job.source, [], _died(job, deaths))
        result = run_item(index, job, settings, step)
    # The run was stopped while this ran (Dask cannot stop a running task); it set the
    # event before removing its files, so a part written after that is removed here.
    with suppress(Exception):  # best effort: with no scheduler, the run is over anyway
        if _import("distributed").Event(stop).is_set():
            os.unlink(part)
    return result


def _write_part(
    job: Job, settings: Settings, *, header: arrays.NpyHeader, start: int, rows: int, part: str
) -> list[Row]:
    """One chunk filtered as a local run filters it (:func:`~convcli.batch.jobs.chunk_output`)."""
    operation, output = settings.operation, settings.output
    started = time.perf_counter()
    sample = header.nbytes // header.shape[0]
    piece = dataclasses.replace(header, shape=(rows, *header.shape[1:]), nbytes=rows * sample,
                                offset=header.offset + start * sample)  # fmt: skip
    with naming_errors(job.source, job.source, operation):
        ((_, chunk),) = arrays.iter_npy_slices(Path(job.source), piece, rows, name=job.source)
        result = operation.apply(
            chunk, layout=output.layout, max_bytes=output.max_bytes, threads=output.threads
        )
        del chunk
        result, clipped = jobs.chunk_output(result, output)
        # every chunk refuses an output over --max-bytes, as a local run does at its first
        shape = (header.shape[0], *result.shape[1:])
        jobs.npy_output_header(result.dtype, shape, job, output.max_bytes)
    try:
        with open(part, "wb") as handle:
            handle.write(result.data)
    except OSError as error:
        raise fileio.OutputError(
            f"{job.target}: cannot write: {error.strerror or error}"
        ) from error
    return [Row(job.source, piece.shape, result.shape, str(header.dtype), str(result.dtype),
                operation.describe(), time.perf_counter() - started, clipped)]  # fmt: skip


def _join_task(
    index: int, job: Job, settings: Settings, ledger: str, header: arrays.NpyHeader,
    parts: list[str], *chunks: ItemResult,
) -> ItemResult:  # fmt: skip
    """A chunked job's output: header and parts written atomically; then the parts removed."""
    try:
        failed = [chunk.error for chunk in chunks if chunk.error is not None]
        if failed:  # the first chunk's failure, where a local run stops
            return ItemResult(index, job.source, [], failed[0])
        first = chunks[0].rows[0]
        row = Row(job.source, header.shape, (header.shape[0], *first.shape_out[1:]),
                  str(header.dtype), first.dtype_out, first.operation,
                  sum(chunk.rows[0].seconds for chunk in chunks),
                  sum(chunk.rows[0].clipped for chunk in chunks))  # fmt: skip
        step = functools.partial(_write_parts, parts=parts, whole=row)
        return _last_task(index, job, settings, ledger, step, [row])
    finally:
        for part in parts:
            with suppress(FileNotFoundError):
                os.unlink(part)


def _write_parts(job: Job, settings: Settings, *, parts: list[str], whole: Row) -> list[Row]:
    """The header and the parts into the output: a temporary file, fsynced, no clobbering."""
    dtype = np.dtype(whole.dtype_out)
    head = jobs.npy_output_header(dtype, whole.shape_out, job, settings.output.max_bytes)
    with fileio.writing(Path(job.target), replace=settings.overwrite) as handle:
        handle.write(head)
        for part in parts:
            with open(part, "rb") as source:
                shutil.copyfileobj(source, handle, 16 * 1024**2)
    return [whole]


# --------------------------------------------------------------------------- this process


@contextmanager
def _signals_deferred() -> Iterator[Callable[[], None]]:
    """SIGINT, SIGTERM and SIGHUP noted where they land, and raised by ``check()``.

    Raised where it lands, a KeyboardInterrupt (or the CLI's Terminated) can hit the
    finalizer of one of Dask's futures, where Python prints it and carries on.
    """
    if threading.current_thread() is not threading.main_thread():
        yield lambda: None
        return
    numbers = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {number: signal.getsignal(number) for number in numbers}
    pending: list[int] = []

    def restore() -> None:
        for number, handler in previous.items():
            signal.signal(number, handler)

    def check() -> None:
        if pending:  # raised again, now, to the handlers there were: where we are is safe
            number = pending[0]
            pending.clear()
            restore()
            signal.raise_signal(number)

    for number in numbers:
        signal.signal(number, lambda signum, frame: pending.append(signum))
    try:
        yield check
    finally:
        restore()


@contextmanager
def _sigint_ignored() -> Iterator[None]:
    """SIGINT ignored in the block, and by the processes started in it (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
