"""Folder batches through the real command line: images/s and peak memory, --jobs 1 vs 2.

    python benchmarks/batch_bench.py                  # 2,000 64x64 PNGs, --jobs 1 and 2
    python benchmarks/batch_bench.py --rounds 5 --jobs 1,2,4
    python benchmarks/batch_bench.py --memory         # main-process peak: 1,000 vs 10,000 files

Each run is ``convcli conv DIR -k sharpen -o OUT -q --jobs N`` in a fresh process, the
contenders interleaved round by round so a machine whose speed drifts slows all alike;
medians are printed. Peak memory of the main convcli process is exact: each run goes through
a small wrapper process whose only waited-for child is convcli, so the wrapper's
``getrusage(RUSAGE_CHILDREN).ru_maxrss`` is convcli's peak (workers are children of the
fork server, which reaps them, so they are not counted there). The workers' peak is their
kernel high-water mark (VmHWM in /proc, Linux only), sampled while the run lasts.

Not a test: nothing here gates CI on a wall-clock time.
"""

from __future__ import annotations

import argparse
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


def run_once(source: Path, output: Path, jobs: int) -> Run:
    """One timed ``convcli conv`` run into a fresh output folder."""
    shutil.rmtree(output, ignore_errors=True)
    command = [sys.executable, "-m", "convcli", "conv", str(source), "-k", "sharpen"]
    command += ["-o", str(output), "-q", "--jobs", str(jobs)]
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
    return Run(seconds, main_kib, max(worker_peaks.values(), default=0) if jobs > 1 else 0)


def throughput(args: argparse.Namespace, scratch: Path) -> None:
    source = scratch / "images"
    make_images(source, args.count, args.size)
    contenders = [int(n) for n in args.jobs.split(",")]
    runs: dict[int, list[Run]] = {jobs: [] for jobs in contenders}
    for round_ in range(args.rounds):
        order = contenders[round_ % len(contenders) :] + contenders[: round_ % len(contenders)]
        for jobs in order:
            runs[jobs].append(run_once(source, scratch / f"out{jobs}", jobs))
    base = statistics.median(run.seconds for run in runs[contenders[0]])
    print(
        f"{args.count:,} {args.size}x{args.size} PNGs, conv -k sharpen, median of {args.rounds}; "
        f"{os.cpu_count()} cores, Python {platform.python_version()}, {platform.machine()}"
    )
    print()
    print(
        "| --jobs | wall time (median) | images/s | speed-up | best round | "
        "main peak RSS | worker peak RSS |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for jobs in contenders:
        seconds = statistics.median(run.seconds for run in runs[jobs])
        main = max(run.main_kib for run in runs[jobs]) / 1024
        worker = max(run.worker_kib for run in runs[jobs]) / 1024
        best = min(run.seconds for run in runs[jobs])
        print(
            f"| {jobs} | {seconds:.2f} s | {args.count / seconds:,.0f} | {base / seconds:.2f}x "
            f"| {args.count / best:,.0f} images/s "
            f"| {main:.0f} MiB | {f'{worker:.0f} MiB' if worker else '-'} |"
        )


def memory(args: argparse.Namespace, scratch: Path) -> None:
    """Main-process peak RSS for 1,000 and 10,000 tiny files: it must not grow with the folder."""
    print(f"main-process peak RSS, 16x16 PNGs, --jobs {args.memory_jobs}")
    print()
    print("| files | wall time | main peak RSS | worker peak RSS |")
    print("|---:|---:|---:|---:|")
    for count in (1_000, 10_000):
        source = scratch / f"tiny{count}"
        make_images(source, count, 16)
        run = run_once(source, scratch / f"tiny_out{count}", args.memory_jobs)
        worker = f"{run.worker_kib / 1024:.0f} MiB" if run.worker_kib else "-"
        print(f"| {count:,} | {run.seconds:.1f} s | {run.main_kib / 1024:.0f} MiB | {worker} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=2_000, help="images (default 2,000)")
    parser.add_argument("--size", type=int, default=64, help="image side (default 64)")
    parser.add_argument("--jobs", default="1,2", help="--jobs values to compare (default 1,2)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--memory", action="store_true", help="1,000 vs 10,000 files instead")
    parser.add_argument("--memory-jobs", type=int, default=2, help="--jobs for --memory")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="convcli-batch-bench-") as scratch:
        if args.memory:
            memory(args, Path(scratch))
        else:
            throughput(args, Path(scratch))


if __name__ == "__main__":
    main()
