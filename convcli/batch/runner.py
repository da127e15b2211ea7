"""Running a plan: every job, wherever it runs, and the summary of what came of them.

:class:`Run` is the runner of every conv/pool invocation, a single file's included. It
runs the plan's jobs in this process, in worker processes (:mod:`convcli.batch.workers`) or on a
Dask cluster (:mod:`convcli.batch.dask_runner`), yields each :class:`~convcli.batch.jobs.ItemResult`
as it completes (for a progress bar and streamed ``--json``) and fills in its
:class:`Summary`. Memory does not grow with the batch: the rows of the first ``keep_rows``
jobs are kept for the report, the rest counted.
"""

from __future__ import annotations

import os
import time
from collections.abc import Generator, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

from convcli.batch.jobs import ItemResult, Job, Settings, run_item
from convcli.batch.pipeline import Row
from convcli.batch.plan import Plan
from convcli.io.fileio import remove_stale_temporary_files, remove_temporary_files


@dataclass
class Summary:
    """What a run did: counts, failures (input, reason) and the rows kept for the report."""

    processed: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    ignored: int = 0
    seconds: float = 0.0
    rows: list[Row] = field(default_factory=list)
    rows_not_kept: int = 0

    @property
    def rate(self) -> float:
        return self.processed / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict[str, object]:
        return {
            "processed": self.processed,
            "skipped": self.skipped,
            "failed": len(self.failed),
            "ignored": self.ignored,
            "seconds": round(self.seconds, 3),
            "items_per_second": round(self.rate, 2),
            "failures": [{"input": name, "error": reason} for name, reason in self.failed],
        }


class Run:
    """The jobs of ``plan`` with ``settings`` on ``workers`` processes (1: this process), or
    on the Dask cluster at ``scheduler`` (``local``: a LocalCluster); one input runs here.

    Iterate over :meth:`results` to run it; :attr:`summary` is complete once the iteration
    ends. Leaving the loop early (an exception, Ctrl-C, SIGTERM) stops the workers and
    removes the temporary files of the jobs they were on.
    """

    def __init__(
        self,
        plan: Plan,
        settings: Settings,
        *,
        workers: int | None = None,
        keep_rows: int = 20,
        scheduler: str | None = None,
    ) -> None:
        self.plan = plan
        self.settings = settings
        self.workers = 1 if plan.single else worker_count(workers, len(plan.jobs))
        self.scheduler = None if plan.single else scheduler
        self.keep_rows = keep_rows
        self.summary = Summary(
            skipped=plan.skipped, ignored=plan.ignored, failed=list(plan.failures)
        )

    def results(self) -> Iterator[ItemResult]:
        """Run every job; yield each result as it completes."""
        started = time.perf_counter()
        if self.settings.skip_existing:
            # a resumed run clears what killed runs left in the folders it writes to
            for folder in sorted({str(Path(job.target).parent) for job in self.plan.jobs}):
                remove_stale_temporary_files(Path(folder))
        kept: list[tuple[int, Row]] = []
        failures: list[tuple[int, str, str]] = []
        results = run_jobs(
            self.plan.jobs, self.settings, workers=self.workers, scheduler=self.scheduler
        )
        with closing(results):
            for result in results:
                if result.error is not None:
                    failures.append((result.index, result.source, result.error))
                elif result.skipped:
                    self.summary.skipped += 1
                else:
                    self.summary.processed += 1
                    if result.index < self.keep_rows:
                        kept.extend((result.index, row) for row in result.rows)
                    else:
                        self.summary.rows_not_kept += len(result.rows)
                yield result
        self.summary.failed += [(source, error) for _, source, error in sorted(failures)]
        self.summary.rows = [row for _, row in sorted(kept, key=lambda item: item[0])]
        self.summary.seconds = time.perf_counter() - started

    def run(self) -> Summary:
        """Run to the end without looking at the results one by one."""
        for _ in self.results():
            pass
        return self.summary


def worker_count(requested: int | None, jobs: int) -> int:
    """Workers for ``jobs`` jobs: ``requested`` (default: the cores), never more than jobs."""
    from convcli.engine.threads import available_cores

    return max(1, min(requested or available_cores(), jobs))


def run_jobs(
    jobs: Sequence[Job], settings: Settings, *, workers: int, scheduler: str | None = None
) -> Generator[ItemResult, None, None]:
    """Run every job; yield each result as it completes (in job order for one worker).

    With ``workers`` > 1, jobs run in worker processes (multiprocessing is imported only
    then); with a ``scheduler``, as tasks on that Dask cluster (Dask is imported only then).
    Close the iterator, or let an exception leave the loop over it, to stop them.
    """
    if scheduler is not None:
        from convcli.batch.dask_runner import run_on_cluster

        return run_on_cluster(jobs, settings, scheduler)
    if workers <= 1:
        return _run_here(jobs, settings)
    from convcli.batch.workers import Pool

    return Pool(jobs, settings, workers).results()


def _run_here(jobs: Sequence[Job], settings: Settings) -> Generator[ItemResult, None, None]:
    for index, job in enumerate(jobs):
        try:
            result = run_item(index, job, settings)
        except BaseException:
            # the job's own temporary file is gone already; this catches a chunked job's
            # file if the interruption came between its writes
            remove_temporary_files(Path(job.target).parent, os.getpid())
            raise
        yield result
