"""Folder batches through the real command line: images/s and peak memory, --jobs 1 vs 2,
against ImageMagick's mogrify and convcli on a Dask cluster.

    python benchmarks/batch_bench.py                  # 2,000 64x64 PNGs, --jobs 1 and 2
    python benchmarks/batch_bench.py --rounds 5 --jobs 1,2,4
    python benchmarks/batch_bench.py --peers          # and mogrify, --scheduler local and tcp://
    python benchmarks/batch_bench.py --memory         # main-process peak: 1,000 vs 10,000 files

Each run is ``convcli conv DIR -k sharpen -o OUT -q --jobs N`` in a fresh process, the
contenders interleaved round by round so a machine whose speed drifts slows all alike;
medians are printed. With ``--peers``, the same rounds also time ``mogrify -path OUT
-morphology Convolve 3x3:0,-1,0,-1,5,-1,0,-1,0`` on the same files (the same sharpen, edge
pixels replicated as convcli's preset does), ``--scheduler local`` (a LocalCluster started
and stopped by each run: its start-up is included) and ``--scheduler tcp://...`` against a
``dask scheduler`` and one one-thread ``dask worker`` per core that the benchmark starts once
(start-up excluded). Peak memory of the main convcli process is exact: each run goes through
a small wrapper process whose only waited-for child is convcli, so the wrapper's
``getrusage(RUSAGE_CHILDREN).ru_maxrss`` is convcli's peak (workers are children of the
fork server, which reaps them, so they are not counted there). The workers' peak is their
kernel high-water mark (VmHWM in /proc, Linux only), sampled while the run lasts.

Not a test: nothing here gates CI on a wall-clock time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import imageio.v3 as iio
import numpy as np

#: Runs convcli (argv[1:]) and prints its exit code and peak RSS in KiB.
WRAPPER = (
    "import resource, subprocess, sys;"
    "code = subprocess.run(sys.argv[1:]).returncode;"
    "print(code, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
)


@dataclass
class Run:
    seconds: float
    main_kib: int
    worker_kib: int


def make_images(folder: Path, count: int, size: int) -> None:
    """``count`` random RGB PNGs of ``size`` x ``size``, 100 per subfolder."""
    rng = np.random.default_rng(0)
    for index in range(count):
        sub = folder / f"part{index // 100:03d}"
        sub.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        iio.imwrite(sub / f"img{index:05d}.png", pixels)


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(child) for child in text.split()]


def _descendants(pid: int) -> list[int]:
    found, stack = [], [pid]
    while stack:
        for child in _children(stack.pop()):
            found.append(child)
            stack.append(child)
    return found


def _high_water_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


#: The sharpen preset, [[0, -1, 0], [-1, 5, -1], [0, -1, 0]], as ImageMagick takes it.
MOGRIFY_SHARPEN = ["-morphology", "Convolve", "3x3:0,-1,0,-1,5,-1,0,-1,0"]


def command_for(contender: str, source: Path, output: Path) -> list[str]:
    """The argv of one run: a ``--jobs`` count, ``mogrify``, or a ``--scheduler`` address."""
    if contender == "mogrify":
        output.mkdir(parents=True)
        return ["mogrify", "-path", str(output), *MOGRIFY_SHARPEN, *map(str, pngs(source))]
    command = [sys.executable, "-m", "convcli", "conv", str(source), "-k", "sharpen"]
    command += ["-o", str(output), "-q"]
    if contender.isdigit():
        return [*command, "--jobs", contender]
    return [*command, "--scheduler", contender]


def pngs(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.png"))


def run_once(source: Path, output: Path, contender: str) -> Run:
    """One timed run into a fresh output folder."""
    shutil.rmtree(output, ignore_errors=True)
    command = command_for(contender, source, output)
    started = time.perf_counter()
    wrapper = subprocess.Popen([sys.executable, "-c", WRAPPER, *command], stdout=subprocess.PIPE)
    worker_peaks: dict[int, int] = {}
    while wrapper.poll() is None:
        for convcli_pid in _children(wrapper.pid):
            # convcli's children: the fork server (and resource tracker); workers under it
            for pid in _descendants(convcli_pid):
                if _children(pid):
                    continue  # the fork server itself
                worker_peaks[pid] = max(worker_peaks.get(pid, 0), _high_water_kib(pid))
        time.sleep(0.02)
    seconds = time.perf_counter() - started
    assert wrapper.stdout is not None
    code, main_kib = map(int, wrapper.stdout.read().split())
    if code != 0:
        raise SystemExit(f"convcli exited with {code}: {' '.join(command)}")
    if contender.isdigit() and int(contender) == 1:
        return Run(seconds, main_kib, 0)
    return Run(seconds, main_kib, max(worker_peaks.values(), default=0))


class DaskCluster:
    """``dask scheduler`` and ``workers`` one-thread ``dask worker`` processes on 127.0.0.1,
    started once and stopped at the end (tasks not queued on the scheduler, as convcli's
    LocalCluster does)."""

    def __init__(self, folder: Path, workers: int) -> None:
        root = str(Path(__file__).resolve().parents[1])
        path = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
        env = {**os.environ, "PYTHONPATH": path}
        env["DASK_DISTRIBUTED__SCHEDULER__WORKER_SATURATION"] = "inf"
        dask = [sys.executable, "-m", "dask"]
        file = folder / "scheduler.json"
        self.logs = open(folder / "dask.log", "wb")  # closed in stop()
        self.processes: list[subprocess.Popen[bytes]] = []
        try:
            scheduler = [*dask, "scheduler", "--host", "127.0.0.1", "--port", "0"]
            self.spawn([*scheduler, "--no-dashboard", "--scheduler-file", str(file)], env)
            while not (file.exists() and file.read_text()):
                time.sleep(0.1)
            self.address = json.loads(file.read_text())["address"]
            worker = [*dask, "worker", self.address, "--nthreads", "1", "--no-dashboard"]
            for _ in range(workers):
                self.spawn([*worker, "--host", "127.0.0.1"], env)
            deadline = time.monotonic() + 120
            while (folder / "dask.log").read_bytes().count(b"Registered to") < workers:
                if time.monotonic() > deadline:
                    raise SystemExit("the dask workers did not start; see dask.log")
                time.sleep(0.1)
        except BaseException:
            self.stop()
            raise

    def spawn(self, argv: list[str], env: dict[str, str]) -> None:
        self.processes.append(subprocess.Popen(argv, stdout=self.logs, stderr=self.logs, env=env))

    def stop(self) -> None:
        """Workers first (they would wait for a scheduler gone), then the scheduler."""
        for group in (self.processes[1:], self.processes[:1]):
            for process in group:
                process.terminate()
            for process in group:
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        self.logs.close()


def throughput(args: argparse.Namespace, scratch: Path) -> None:
    source = scratch / "images"
    make_images(source, args.count, args.size)
    contenders = args.jobs.split(",")
    names = {jobs: f"convcli --jobs {jobs}" for jobs in contenders}
    cluster = None
    if args.peers:
        if shutil.which("mogrify"):
            contenders.append("mogrify")
            names["mogrify"] = "ImageMagick mogrify"
        else:
            print("mogrify not found: ImageMagick is left out\n")
        cores = os.cpu_count() or 1
        cluster = DaskCluster(scratch, cores)
        contenders += ["local", cluster.address]
        names["local"] = f"convcli --scheduler local ({cores} workers, start-up included)"
        names[cluster.address] = f"convcli --scheduler tcp:// ({cores} workers, running)"
    runs: dict[str, list[Run]] = {contender: [] for contender in contenders}
    try:
        for round_ in range(args.rounds):
            shift = round_ % len(contenders)
            for number, contender in enumerate(contenders[shift:] + contenders[:shift]):
                out = scratch / f"out{number}"
                runs[contender].append(run_once(source, out, contender))
                if contender != "mogrify":  # a wrong output would make a fast contender
                    assert len(pngs(out)) == args.count, f"{contender}: outputs missing"
    finally:
        if cluster is not None:
            cluster.stop()
    print(
        f"{args.count:,} {args.size}x{args.size} PNGs, conv -k sharpen, median of {args.rounds}; "
        f"{os.cpu_count()} cores, Python {platform.python_version()}, {platform.machine()}"
    )
    print()
    medians = {name: statistics.median(run.seconds for run in runs[name]) for name in contenders}
    ratios = [("vs --jobs 1", contenders[0])]
    ratios += [(f"vs {names[peer]}", peer) for peer in ("2", "mogrify") if peer in runs]
    print(
        "| run | wall time (median) | images/s | "
        + "".join(f"{title} | " for title, _ in ratios)
        + "best round | main peak RSS | worker peak RSS |"
    )
    print("|---|---:|---:|" + "---:|" * len(ratios) + "---:|---:|---:|")
    for contender in contenders:
        seconds = medians[contender]
        main = max(run.main_kib for run in runs[contender]) / 1024
        worker = max(run.worker_kib for run in runs[contender]) / 1024
        best = min(run.seconds for run in runs[contender])
        versus = "".join(f"{medians[peer] / seconds:.2f}x | " for _, peer in ratios)
        print(
            f"| {names[contender]} | {seconds:.2f} s | {args.count / seconds:,.0f} | {versus}"
            f"{args.count / best:,.0f} images/s "
            f"| {main:.0f} MiB | {f'{worker:.0f} MiB' if worker else '-'} |"
        )
    print()
    print("Ratios are images/s over the peer's: above 1 is faster than it.")


def memory(args: argparse.Namespace, scratch: Path) -> None:
    """Main-process peak RSS for 1,000 and 10,000 tiny files: it must not grow with the folder."""
    print(f"main-process peak RSS, 16x16 PNGs, --jobs {args.memory_jobs}")
    print()
    print("| files | wall time | main peak RSS | worker peak RSS |")
    print("|---:|---:|---:|---:|")
    for count in (1_000, 10_000):
        source = scratch / f"tiny{count}"
        make_images(source, count, 16)
        run = run_once(source, scratch / f"tiny_out{count}", str(args.memory_jobs))
        worker = f"{run.worker_kib / 1024:.0f} MiB" if run.worker_kib else "-"
        print(f"| {count:,} | {run.seconds:.1f} s | {run.main_kib / 1024:.0f} MiB | {worker} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=2_000, help="images (default 2,000)")
    parser.add_argument("--size", type=int, default=64, help="image side (default 64)")
    parser.add_argument("--jobs", default="1,2", help="--jobs values to compare (default 1,2)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--memory", action="store_true", help="1,000 vs 10,000 files instead")
    parser.add_argument(
        "--peers", action="store_true", help="also mogrify and Dask (--scheduler local, tcp://)"
    )
    parser.add_argument("--memory-jobs", type=int, default=2, help="--jobs for --memory")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="convcli-batch-bench-") as scratch:
        if args.memory:
            memory(args, Path(scratch))
        else:
            throughput(args, Path(scratch))


if __name__ == "__main__":
    main()
