"""convcli's backward passes against PyTorch autograd's, on the workloads of issue 13.

Run from an environment where convcli and torch import (``pip install torch==2.13.0``)::

    python benchmarks/grad_bench.py                 # every workload, 5 interleaved rounds
    python benchmarks/grad_bench.py --only W1,W2 --rounds 9 --threads 2
    python benchmarks/grad_bench.py --parts         # also the input and weight passes alone

Workloads (the shapes of benchmarks/bench.py):

- W1: conv 32x224x224x3 input, 16 OHWI 5x5 filters, padding 2, with bias: the gradients
  with respect to input, weights and bias;
- W2: conv 8x128x128x64 input, 64 3x3 filters, padding 1, with bias: the same three;
- W5: max and average pooling of 32x224x224x64, 2x2 and 3x3 windows, stride 2: the
  gradient with respect to the input.

torch runs on channels-last views of the same NHWC memory (no layout copy), with as many
threads as convcli (``torch.set_num_threads``); its time is the backward alone
(``torch.autograd.grad`` on a graph kept from one forward). convcli's max-pool backward
recomputes each window's maximum, which torch saved during its forward. Each contender
runs once per round, in a rotating order, so a machine whose speed drifts over minutes
slows all of them alike; medians and their ratios are printed. Peak memory: NumPy
allocations traced by tracemalloc during one extra untimed convcli run (minus what it
returns), and the process's peak resident set at the end.

This is not a test and is never imported by the test suite: timings gate nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import resource
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from convcli import avg_pool2d_backward, conv2d_backward, max_pool2d_backward
from convcli.engine.threads import available_cores, single_blas_thread

Array = npt.NDArray[Any]
MiB = 1024**2
#: Seconds of idle time before each timed sample (lets worker threads stop spinning).
PAUSE = 0.05
#: The issue's goal: each backward within this factor of torch's.
GOAL = 2.0

try:
    import torch
except ImportError:  # pragma: no cover - the benchmark needs torch
    torch = None


@dataclass
class Workload:
    key: str
    title: str
    ours: Callable[[], object]
    theirs: Callable[[], object]
    medians: dict[str, float] = field(default_factory=dict)
    scratch_mib: float = 0.0


def conv_workload(
    key: str,
    title: str,
    shape: tuple[int, int, int, int],
    filters: int,
    k: int,
    threads: int,
    needs: tuple[str, ...] = ("input", "weight", "bias"),
) -> Workload:
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape, dtype=np.float32)
    w = rng.standard_normal((filters, k, k, shape[3]), dtype=np.float32)
    b = rng.standard_normal(filters, dtype=np.float32)
    pad = k // 2
    grad = rng.standard_normal((*shape[:3], filters), dtype=np.float32)
    images = torch.from_numpy(x).permute(0, 3, 1, 2).requires_grad_()
    kernel = torch.from_numpy(w).permute(0, 3, 1, 2).requires_grad_()
    offset = torch.from_numpy(b).requires_grad_()
    out = torch.nn.functional.conv2d(images, kernel, offset, padding=pad)
    wrt = {"input": images, "weight": kernel, "bias": offset}
    targets = tuple(wrt[name] for name in needs)
    grad_t = torch.from_numpy(grad).permute(0, 3, 1, 2)

    def theirs() -> object:
        return torch.autograd.grad(out, targets, grad_t, retain_graph=True)

    def ours() -> object:
        # The same thread count as torch's: with one thread, NumPy's OpenBLAS gets one too
        # (left alone it starts a thread per core, and loses badly on a busy machine).
        with single_blas_thread() if threads == 1 else contextlib.nullcontext():
            return conv2d_backward(grad, x, w, b, padding=pad, needs=needs, threads=threads)

    return Workload(key, title, ours, theirs)


def pool_workload(op: str, size: int, x: Array, threads: int) -> Workload:
    rng = np.random.default_rng(size)
    images = torch.from_numpy(x).permute(0, 3, 1, 2).requires_grad_()
    pool = torch.nn.functional.max_pool2d if op == "max" else torch.nn.functional.avg_pool2d
    out = pool(images, size, 2)
    grad = rng.standard_normal(tuple(out.permute(0, 2, 3, 1).shape), dtype=np.float32)
    grad_t = torch.from_numpy(grad).permute(0, 3, 1, 2)

    def theirs() -> object:
        return torch.autograd.grad(out, (images,), grad_t, retain_graph=True)

    if op == "max":

        def ours() -> object:
            return max_pool2d_backward(grad, x, size, 2, threads=threads)

    else:

        def ours() -> object:
            return avg_pool2d_backward(grad, x.shape, size, 2, threads=threads)

    return Workload(
        f"W5-{op}-{size}x{size}",
        f"{op} pool 32x224x224x64, {size}x{size} stride 2: grad input",
        ours,
        theirs,
    )


def workloads(selected: set[str], threads: int, parts: bool) -> list[Workload]:
    chosen: list[Workload] = []
    dense = {
        "W1": ("conv 32x224x224x3 -> 16 5x5, pad 2", (32, 224, 224, 3), 16, 5),
        "W2": ("conv 8x128x128x64 -> 64 3x3, pad 1", (8, 128, 128, 64), 64, 3),
    }
    for key, (title, shape, filters, k) in dense.items():
        if key not in selected:
            continue
        chosen.append(
            conv_workload(key, f"{title}: grad input+weight+bias", shape, filters, k, threads)
        )
        if parts:
            for part in ("input", "weight"):
                chosen.append(
                    conv_workload(
                        f"{key}-{part}",
                        f"{title}: grad {part}",
                        shape,
                        filters,
                        k,
                        threads,
                        (part,),
                    )
                )
    if "W5" in selected:
        x = np.random.default_rng(6).standard_normal((32, 224, 224, 64), dtype=np.float32)
        for op in ("max", "avg"):
            for size in (2, 3):
                chosen.append(pool_workload(op, size, x, threads))
    return chosen


def timed(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def scratch_mib(run: Callable[[], object]) -> float:
    """Peak traced NumPy allocation during ``run`` minus the bytes of what it returns."""
    tracemalloc.start()
    try:
        out = run()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    values = out if isinstance(out, tuple) else (out,)
    size = sum(v.nbytes for v in values if isinstance(v, np.ndarray))
    return (peak - size) / MiB


def measure(work: Workload, rounds: int) -> None:
    contenders = {"convcli": work.ours, "torch": work.theirs}
    for run in contenders.values():
        run()  # warm-up: first-call costs are not measured
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    names = list(contenders)
    for round_index in range(rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            time.sleep(PAUSE)
            samples[name].append(timed(contenders[name]))
    work.medians = {name: statistics.median(values) for name, values in samples.items()}
    work.scratch_mib = scratch_mib(work.ours)


def busy_seconds() -> float | None:
    """CPU seconds all processes have used, from /proc/stat (None where it is missing)."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    ticks = [int(value) for value in fields]
    return (sum(ticks[:8]) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def own_seconds() -> float:
    times = os.times()
    return times.user + times.system


def wait_until_quiet(limit: float) -> bool:
    """Wait (at most ``limit`` seconds) for a second in which others use < 0.2 cores."""
    deadline = time.monotonic() + limit
    while True:
        before, own = busy_seconds(), own_seconds()
        time.sleep(1.0)
        after = busy_seconds()
        if before is None or after is None or after - before - (own_seconds() - own) < 0.2:
            return True
        if time.monotonic() > deadline:
            return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument("--only", help="comma-separated workloads: W1,W2,W5")
    parser.add_argument("--threads", type=int, help="threads of both (default: every core)")
    parser.add_argument("--parts", action="store_true", help="also time input, weight alone")
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="before each workload, wait up to this long for other processes to go idle",
    )
    args = parser.parse_args()
    if torch is None:
        print("skipped: torch is not installed")
        return 0
    threads = args.threads or available_cores()
    torch.set_num_threads(threads)
    selected = set(args.only.split(",")) if args.only else {"W1", "W2", "W5"}
    print(
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"numpy {np.__version__}, torch {torch.__version__}; {threads} threads each"
    )
    print(f"{args.rounds} interleaved rounds; medians; goal: convcli <= {GOAL:g}x torch\n")
    start_busy, start_own, start_wall = busy_seconds(), own_seconds(), time.perf_counter()
    header = ["workload", "convcli", "torch", "ratio", "met", "convcli scratch"]
    rows = []
    for work in workloads(selected, threads, args.parts):
        if args.wait_quiet and not wait_until_quiet(args.wait_quiet):
            print(f"  {work.key}: the machine stayed busy; measuring anyway", file=sys.stderr)
        measure(work, args.rounds)
        ours, theirs = work.medians["convcli"], work.medians["torch"]
        ratio = ours / theirs
        rows.append(
            [
                work.key,
                f"{ours * 1e3:.1f} ms",
                f"{theirs * 1e3:.1f} ms",
                f"{ratio:.2f}x",
                "yes" if ratio <= GOAL else "no",
                f"{work.scratch_mib:.1f} MiB",
            ]
        )
        print(f"  {work.key}: {work.title}: done", file=sys.stderr)
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(f"\npeak resident set of this process (inputs of both included): {peak:.0f} MiB")
    end_busy = busy_seconds()
    if start_busy is not None and end_busy is not None:
        wall = time.perf_counter() - start_wall
        others = max(end_busy - start_busy - (own_seconds() - start_own), 0.0)
        print(
            f"other processes used {others:.1f} CPU-seconds in {wall:.0f} s "
            f"({others / wall:.2f} cores on average; near 0 for trustworthy ratios)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
