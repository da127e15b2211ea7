"""Folder batches on a Dask cluster (``--scheduler``): the outputs, reports, exit codes and
safety of a local run, a worker killed mid-run, an input that keeps killing workers.

Cluster runs go through real processes (the CLI, ``dask scheduler``, ``dask worker``), so
Dask's threads and event loops never live in the test process. Only loopback addresses.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import imageio.v3 as iio
import numpy as np
import pytest

from convcli.batch import dask_runner, jobs, pipeline
from convcli.batch.jobs import Job, Settings
from convcli.io.fileio import temp_prefix
from tests.conftest import (
    SUBPROCESS_TIMEOUT,
    convcli,
    convcli_command,
    run,
    subprocess_env,
    temp_files,
)

pytest.importorskip("distributed", reason="the Dask tests need the convcli[dask] extra")

RNG = np.random.default_rng(14)
#: Over limits.CHUNK_BYTES (64 MiB): two chunk tasks (two samples, then one) on a cluster.
CHUNKED_SHAPE = (3, 2800, 2048, 1)


def png(path: Path, shape: tuple[int, ...] = (24, 20, 3)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, RNG.integers(0, 256, shape, dtype=np.uint8))
    return path


def files(folder: Path) -> dict[str, bytes]:
    """Every file below ``folder`` by relative path (temporary files included)."""
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def summary_of(stdout: bytes | str) -> dict[str, Any]:
    summary: dict[str, Any] = json.loads(stdout)["summary"]
    return summary


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Gray, RGB and RGBA PNGs, a JPEG, arrays, an .npz and a .npy big enough to chunk."""
    root = tmp_path_factory.mktemp("dask_inputs")
    for index in range(6):
        png(root / f"rgb{index}.png")
    png(root / "gray.png", (17, 13))
    png(root / "sub" / "rgba.png", (9, 11, 4))
    iio.imwrite(root / "sub" / "photo.jpg", RNG.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    (root / "arrays").mkdir()
    np.save(root / "arrays" / "x.npy", RNG.standard_normal((2, 6, 5, 3)).astype(np.float32))
    np.savez(root / "arrays" / "pair.npz", p=np.ones((5, 5)), q=np.arange(30.0).reshape(5, 6))
    big = np.lib.format.open_memmap(
        root / "arrays" / "big.npy", mode="w+", dtype=np.float32, shape=CHUNKED_SHAPE
    )
    for sample in range(CHUNKED_SHAPE[0]):  # samples that differ, so misplaced parts show
        big[sample] = RNG.standard_normal(CHUNKED_SHAPE[1:], dtype=np.float32) + sample
    big.flush()
    del big
    return root


@pytest.fixture(scope="module")
def local(inputs: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """The outputs and --json summary of a local run (``--jobs 1``) on :func:`inputs`."""
    out = tmp_path_factory.mktemp("dask_local") / "out"
    result = run("conv", inputs, "-k", "sharpen", "-o", out, "--jobs", "1", "--json")
    assert result.exit_code == 0, result.stderr
    return out, summary_of(result.stdout)


def on_cluster(*args: Any, scheduler: str = "local") -> subprocess.CompletedProcess[bytes]:
    return convcli(*args, "--scheduler", scheduler)


def stop(processes: list[subprocess.Popen[bytes]]) -> None:
    """Terminate ``processes``, then kill those that do not end within 10 s."""
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def dask_cluster(folder: Path) -> Iterator[tuple[str, list[subprocess.Popen[bytes]]]]:
    """``dask scheduler`` and two one-thread ``dask worker`` processes (no nanny: a dead one
    stays dead) on 127.0.0.1; their address and the workers. Tasks are not queued on the
    scheduler, as on convcli's LocalCluster (a round trip per small task otherwise)."""
    env = subprocess_env(DASK_DISTRIBUTED__SCHEDULER__WORKER_SATURATION="inf")
    dask = [sys.executable, "-m", "dask"]  # the dask command of this interpreter
    started: list[subprocess.Popen[bytes]] = []

    def spawn(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
        with open(log, "wb") as handle:
            started.append(subprocess.Popen(argv, stdout=handle, stderr=handle, env=env))
        return started[-1]

    scheduler_file = folder / "scheduler.json"
    try:
        scheduler = spawn(
            [*dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
             "--scheduler-file", str(scheduler_file)], folder / "scheduler.log",
        )  # fmt: skip
        ready = lambda: scheduler_file.exists() and scheduler_file.read_text()  # noqa: E731
        wait_until(ready, "scheduler", scheduler)
        address: str = json.loads(scheduler_file.read_text())["address"]
        worker = [*dask, "worker", address, "--nworkers", "1", "--nthreads", "1"]
        worker += ["--no-dashboard", "--no-nanny", "--host", "127.0.0.1"]
        logs = [folder / f"worker{n}.log" for n in range(2)]
        workers = [spawn(worker, log) for log in logs]
        for log, process in zip(logs, workers, strict=True):
            wait_until(lambda log=log: b"Registered to" in log.read_bytes(), "worker", process)
        yield address, workers
    finally:
        stop(started[1:])  # the workers first: they would wait for a scheduler gone
        stop(started[:1])


# --------------------------------------------------------------------------- LocalCluster


def test_a_local_cluster_writes_the_bytes_a_local_run_writes(
    inputs: Path, local: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    reference, local_summary = local
    out = tmp_path / "out"
    done = on_cluster("conv", inputs, "-k", "sharpen", "-o", out, "--json")
    assert done.returncode == 0, done.stderr
    assert files(out) == files(reference)  # the chunked big.npy included
    document = json.loads(done.stdout)
    summary = document["summary"]
    for count in ("processed", "skipped", "failed", "ignored"):
        assert summary[count] == local_summary[count]
    assert summary["processed"] == 12
    assert len(document["items"]) == 13  # the .npz gives a row per member
    assert {item["input"] for item in document["items"]} >= {str(inputs / "arrays" / "big.npy")}
    assert temp_files(out) == []


def test_skip_existing_and_existing_outputs_behave_as_in_a_local_run(
    inputs: Path, local: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    reference, _ = local
    out = tmp_path / "out"
    out.mkdir()
    for name in ("rgb0.png", "gray.png"):
        (out / name).write_bytes((reference / name).read_bytes())
    refused = on_cluster("conv", inputs, "-k", "sharpen", "-o", out)
    assert refused.returncode == 2
    assert b"output exists" in refused.stderr and b"--skip-existing" in refused.stderr
    assert sorted(files(out)) == ["gray.png", "rgb0.png"]  # refused before the first write
    resumed = on_cluster("conv", inputs, "-k", "sharpen", "-o", out, "--skip-existing", "--json")
    assert resumed.returncode == 0, resumed.stderr
    summary = summary_of(resumed.stdout)
    assert (summary["skipped"], summary["processed"]) == (2, 10)
    assert files(out) == files(reference)


def test_a_corrupt_file_fails_only_its_item(tmp_path: Path) -> None:
    source = tmp_path / "in"
    for index in range(3):
        png(source / f"good{index}.png")
    (source / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    expected = tmp_path / "expected"
    assert run("conv", source, "-k", "sharpen", "-o", expected, "-q").exit_code == 1
    out = tmp_path / "out"
    done = on_cluster("conv", source, "-k", "sharpen", "-o", out, "--json")
    assert done.returncode == 1, done.stderr
    summary = summary_of(done.stdout)
    assert (summary["processed"], summary["failed"]) == (3, 1)
    (failure,) = summary["failures"]
    assert failure["input"] == str(source / "bad.png")  # as given, not made absolute
    assert failure["error"].startswith(str(source / "bad.png"))
    assert files(out) == files(expected)


def test_an_input_that_keeps_killing_workers_fails_only_its_item(tmp_path: Path) -> None:
    """Three deaths fail the input that caused them, and only it (Dask, not queuing
    tasks, suspects every task on the worker); the temporary file each dying worker left,
    named with the run's token, is removed."""
    source, out = tmp_path / "in", tmp_path / "out"
    source.mkdir()
    for index in range(4):
        np.save(source / f"x{index}.npy", np.ones((4, 4), np.float32) * index)
    np.save(source / "crash.npy", np.ones((7, 7), np.float32))
    script = (
        "import json, sys\n"
        "from convcli.batch import pipeline, plan, runner\n"
        "from convcli.batch.jobs import Settings\n"
        "from tests.test_dask import killing\n"
        "jobs = plan.plan_run([sys.argv[1]], sys.argv[2])\n"
        "settings = Settings(killing(sys.argv[2]), pipeline.OutputOptions(format='npy'))\n"
        "summary = runner.Run(jobs, settings, scheduler=sys.argv[3]).run()\n"
        "print(json.dumps(summary.to_json()))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(source), str(out), "local"],
        capture_output=True,
        env=subprocess_env(),
        timeout=SUBPROCESS_TIMEOUT,
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert (summary["processed"], summary["failed"]) == (4, 1), summary["failures"]
    (failure,) = summary["failures"]
    assert (
        failure["error"]
        == f"{source / 'crash.npy'}: a Dask worker died on it 3 times (KilledWorker)"
    )
    assert sorted(path.name for path in out.iterdir()) == [f"x{index}.npy" for index in range(4)]
    assert temp_files(out) == []


class KillsItsWorker(pipeline.Pooling):
    """Max pooling that, on a 7x7 input, leaves a temporary file named as a job's writes are
    (in ``litter``) and kills its own process, as a decoder crash or the OOM killer would."""

    litter = ""

    def apply(self, x: Any, *, layout: str, max_bytes: int, threads: int | None = None) -> Any:
        if x.shape == (7, 7):
            Path(self.litter, f"{temp_prefix()}half-written.npy").write_bytes(b"x")
            os.kill(os.getpid(), signal.SIGKILL)
        return super().apply(x, layout=layout, max_bytes=max_bytes, threads=threads)


def killing(litter: str) -> KillsItsWorker:
    Path(litter).mkdir(parents=True, exist_ok=True)
    operation = KillsItsWorker("max", 2)
    object.__setattr__(operation, "litter", litter)
    return operation


# --------------------------------------------------------------------------- tasks, here


def task_settings(chunk_bytes: int | None = None) -> Settings:
    operation = pipeline.Pooling("max", 2)
    return Settings(operation, pipeline.OutputOptions(format="npy"), 10**8, chunk_bytes,
                    run_token="dtest")  # fmt: skip


def ledger(folder: Path, index: int = 0) -> str:
    """The prefix of job ``index``'s temporary files, as the run names them."""
    return str(folder / temp_prefix(os.getpid(), f"dtest-i{index}"))


def test_chunk_tasks_join_into_the_bytes_of_a_local_run(tmp_path: Path) -> None:
    """The worker side of a chunked .npy, run in this process: parts of two samples along N,
    joined into the output; a join run again (its result lost) keeps the output it wrote."""
    array = RNG.standard_normal((5, 6, 7, 2)).astype(np.float32)
    np.save(tmp_path / "x.npy", array)
    settings = task_settings(chunk_bytes=2 * array[0].nbytes)
    local = Job(str(tmp_path / "x.npy"), str(tmp_path / "local.npy"), "npy")
    assert jobs.process_job(local, settings)
    out = tmp_path / "out"
    job = Job(str(tmp_path / "x.npy"), str(out / "x.npy"), "npy")
    chunking = jobs.chunking(job, settings)
    assert chunking is not None
    header, per_chunk = chunking
    prefix = ledger(out)
    starts = range(0, 5, per_chunk)
    assert list(starts) == [0, 2, 4]
    chunks = [
        dask_runner._chunk_task(0, job, settings, header, start, min(2, 5 - start), prefix, "-")
        for start in starts
    ]
    parts = [f"{prefix}c{start}-part" for start in starts]
    joined = dask_runner._join_task(0, job, settings, prefix, header, parts, *chunks)
    assert joined.error is None, joined.error
    assert (out / "x.npy").read_bytes() == (tmp_path / "local.npy").read_bytes()
    again = dask_runner._join_task(0, job, settings, prefix, header, parts, *chunks)
    assert again.error is None and again.rows == joined.rows
    assert [path.name for path in temp_files(out)] == [Path(f"{prefix}done").name]


def test_a_task_run_again_after_its_result_was_lost_keeps_its_output(tmp_path: Path) -> None:
    """Dask runs a finished task again when its result died with its worker: the output it
    finds is linked to its own, so it is not reported as having appeared; without the link
    an output found is another process's."""
    np.save(tmp_path / "x.npy", np.ones((4, 4), np.float32))
    out, settings = tmp_path / "out", task_settings()
    job = Job(str(tmp_path / "x.npy"), str(out / "x.npy"), "npy")
    first = dask_runner._file_task(0, job, settings, ledger(out))
    assert first.error is None and first.rows
    written = (out / "x.npy").read_bytes()
    again = dask_runner._file_task(0, job, settings, ledger(out))
    assert again.error is None and not again.skipped and again.rows
    assert (out / "x.npy").read_bytes() == written
    os.unlink(f"{ledger(out)}done")
    other = dask_runner._file_task(0, job, settings, ledger(out))
    assert other.error is not None and "appeared while the run was going" in other.error


@pytest.mark.parametrize("deaths", [2, 3])
def test_the_attempts_a_dead_worker_left_count_against_their_task(
    tmp_path: Path, deaths: int
) -> None:
    """Each attempt marks itself and removes its mark when it ends: marks found are of
    attempts whose worker died on them. Two are allowed, a third fails the item alone."""
    np.save(tmp_path / "x.npy", np.ones((4, 4), np.float32))
    out = tmp_path / "out"
    out.mkdir()
    job = Job(str(tmp_path / "x.npy"), str(out / "x.npy"), "npy")
    for attempt in range(1, deaths + 1):
        Path(f"{ledger(out)}a{attempt}").touch()
    result = dask_runner._file_task(0, job, task_settings(), ledger(out))
    if deaths == 2:
        assert result.error is None and (out / "x.npy").exists()
    else:
        assert result.error == f"{job.source}: a Dask worker died on it 3 times (KilledWorker)"
        assert not (out / "x.npy").exists()
    assert [path.name for path in temp_files(out)] == (
        [Path(f"{ledger(out)}done").name] if deaths == 2 else []
    )


# --------------------------------------------------------------------------- flags, errors


def test_jobs_does_not_apply_with_a_scheduler(inputs: Path, tmp_path: Path) -> None:
    given = run(
        "conv", inputs, "-k", "sharpen", "-o", tmp_path / "a", "-j", "2", "--scheduler", "local"
    )
    assert given.exit_code == 2 and "--jobs does not apply with --scheduler" in given.stderr
    from_env = run(
        "conv", inputs, "-k", "sharpen", "-o", tmp_path / "b", "--jobs", "2",
        env={"DASK_SCHEDULER_ADDRESS": "tcp://127.0.0.1:1"},
    )  # fmt: skip
    assert from_env.exit_code == 2 and "DASK_SCHEDULER_ADDRESS" in from_env.stderr
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_a_single_input_runs_here_whatever_the_scheduler(inputs: Path, tmp_path: Path) -> None:
    """Nothing listens on port 1: the one file is done in this process, as without it."""
    out = tmp_path / "one.png"
    result = run(
        "conv", inputs / "gray.png", "-k", "sharpen", "-o", out, "--scheduler", "tcp://127.0.0.1:1"
    )
    assert result.exit_code == 0, result.stderr
    assert (
        run("conv", inputs / "gray.png", "-k", "sharpen", "-o", tmp_path / "two.png").exit_code == 0
    )
    assert out.read_bytes() == (tmp_path / "two.png").read_bytes()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def test_an_unreachable_scheduler_is_one_error_line(inputs: Path, tmp_path: Path) -> None:
    address = f"tcp://127.0.0.1:{free_port()}"
    done = on_cluster("conv", inputs, "-k", "sharpen", "-o", tmp_path / "out", scheduler=address)
    assert done.returncode == 2
    stderr = done.stderr.decode()
    assert "Traceback" not in stderr
    (line,) = stderr.splitlines()
    assert line.startswith(f"Error: --scheduler {address}: cannot reach the Dask scheduler")
    assert not (tmp_path / "out").exists()


def test_without_dask_the_error_names_the_extra(
    inputs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed now fails
    monkeypatch.setitem(sys.modules, "dask", None)
    result = run("conv", inputs, "-k", "sharpen", "-o", tmp_path / "out", "--scheduler", "local")
    assert result.exit_code == 2
    assert "--scheduler needs Dask: pip install 'convcli[dask]'" in result.stderr
    assert "Traceback" not in result.stderr


# --------------------------------------------------------------------------- a real cluster


def wait_until(condition: Any, what: str, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + SUBPROCESS_TIMEOUT
    while not condition():
        assert process is None or process.poll() is None, f"ended before {what}"
        assert time.monotonic() < deadline, f"no {what}"
        time.sleep(0.05)


def test_a_worker_killed_mid_run_costs_nothing(tmp_path: Path) -> None:
    """``dask scheduler`` and two ``dask worker`` processes; one is killed (SIGKILL) while
    the run goes on. Its tasks, and those whose results were lost with it, are run again on
    the other: every output is written, byte for byte as a local run writes it, and no
    temporary file is left."""
    source = tmp_path / "in"
    for index in range(120):
        png(source / f"part{index // 40}" / f"img{index:03d}.png", (96, 96, 3))
    expected = tmp_path / "expected"
    local = run("conv", source, "-k", "gaussian:size=9", "-o", expected, "-q", "-j", "1")
    assert local.exit_code == 0
    with dask_cluster(tmp_path) as (address, workers):
        out = tmp_path / "out"
        command = convcli_command("conv", source, "-k", "gaussian:size=9", "-o", out, "-q")
        cli = subprocess.Popen(
            [*command, "--scheduler", address],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=subprocess_env(),
        )
        try:
            wait_until(lambda: len(list(out.rglob("*.png"))) >= 20, "20 outputs", cli)
            workers[1].send_signal(signal.SIGKILL)
            workers[1].wait(timeout=SUBPROCESS_TIMEOUT)
            assert cli.poll() is None, "the run ended before the worker was killed"
            _, stderr = cli.communicate(timeout=SUBPROCESS_TIMEOUT)
        finally:
            stop([cli])
        assert cli.returncode == 0, stderr
        assert files(out) == files(expected)
        assert temp_files(out) == []
