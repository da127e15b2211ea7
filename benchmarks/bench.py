"""convcli's engine and CLI against their peers, on the workloads of issue 6.

Run from any environment where convcli imports, with whichever peers are installed
(``pip install -e '.[bench]'``; torch separately, e.g. ``pip install torch==2.13.0``;
``apt-get install libvips-tools imagemagick`` for the command-line peers)::

    python benchmarks/bench.py            # every workload, 7 interleaved rounds
    python benchmarks/bench.py --quick    # 3 rounds, no W5 (411 MB input) and no CLI
    python benchmarks/bench.py --only W1,W4b --rounds 11 --markdown

Every contender of a workload runs once per round, in a rotating order, so a machine whose
speed drifts over minutes slows all of them alike; medians and their ratios are printed.
Peak memory: NumPy allocations traced by tracemalloc during one extra untimed run (convcli's
scratch = peak minus its output), and the maximum resident set of each command-line run.

This is not a test and is never imported by the test suite: timings gate nothing.
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
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from convcli import engine
from convcli.engine.conv import conv2d
from convcli.engine.pool import max_pool2d

Array = npt.NDArray[Any]
MiB = 1024**2
#: Seconds of idle time before each timed sample.
PAUSE = 0.05


# --------------------------------------------------------------------------- peers


def optional_import(name: str) -> Any:
    try:
        return __import__(name, fromlist=["_"])
    except ImportError:
        return None


torch = optional_import("torch")
cv2 = optional_import("cv2")
ndimage = optional_import("scipy.ndimage")
signal = optional_import("scipy.signal")
threadpoolctl = optional_import("threadpoolctl")


@dataclass
class Goal:
    peer: str
    ratio: float


@dataclass
class Workload:
    key: str
    title: str
    #: convcli's run, then each peer's; a peer that is not installed is left out.
    ours: Callable[[], object]
    peers: dict[str, Callable[[], object]]
    goals: list[Goal]
    #: Calls per timed sample: tiny workloads are timed as a loop and divided.
    loops: int = 1
    path: str = ""
    scratch_mib: float | None = None
    medians: dict[str, float] = field(default_factory=dict)


@dataclass
class CommandResult:
    seconds: list[float] = field(default_factory=list)
    max_rss: int = 0
    output_bytes: int = 0


# --------------------------------------------------------------------------- workloads


def torch_conv(x: Array, weights_ohwi: Array, padding: int) -> Callable[[], object]:
    """torch conv2d on channels_last views of the same NHWC memory: no layout copy."""
    images = torch.from_numpy(x).permute(0, 3, 1, 2)
    filters = torch.from_numpy(np.ascontiguousarray(weights_ohwi)).permute(0, 3, 1, 2)
    assert images.is_contiguous(memory_format=torch.channels_last)

    def run() -> object:
        with torch.no_grad():
            return torch.nn.functional.conv2d(images, filters, padding=padding)

    return run


def torch_max_pool(x: Array, size: int, stride: int) -> Callable[[], object]:
    images = torch.from_numpy(x).permute(0, 3, 1, 2)
    return lambda: torch.nn.functional.max_pool2d(images, size, stride)


def gaussian(size: int, sigma: float) -> Array:
    g: Array = np.exp(-0.5 * ((np.arange(size) - size // 2) / sigma) ** 2)
    normalized: Array = (g / g.sum()).astype(np.float32)
    return normalized


def dense(
    key: str,
    title: str,
    shape: tuple[int, ...],
    filters: int,
    k: int,
    goal: float,
    threads: int | None,
    loops: int = 1,
) -> Workload:
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape, dtype=np.float32)
    w = rng.standard_normal((filters, k, k, shape[3]), dtype=np.float32)
    pad = k // 2
    peers = {} if torch is None else {"torch": torch_conv(x, w, pad)}
    return Workload(
        key,
        title,
        lambda: conv2d(x, w, padding=pad, threads=threads),
        peers,
        [Goal("torch", goal)],
        loops=loops,
        path=engine.conv2d_path(x, w, padding=pad),
    )


def w3(threads: int | None) -> Workload:
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, (4096, 4096, 3), dtype=np.uint8)
    k = rng.standard_normal((3, 3)).astype(np.float32)
    peers: dict[str, Callable[[], object]] = {}
    if ndimage is not None:
        peers["scipy.ndimage"] = lambda: [
            ndimage.correlate(x[:, :, c], k, output=np.float32, mode="constant") for c in range(3)
        ]
    if cv2 is not None:
        peers["cv2"] = lambda: cv2.filter2D(x, cv2.CV_32F, k, borderType=cv2.BORDER_CONSTANT)
    return Workload(
        "W3",
        "4096x4096 RGB uint8, 3x3 per channel, same -> float32",
        lambda: conv2d(x, k, padding="same", threads=threads),
        peers,
        [Goal("scipy.ndimage", 0.5), Goal("cv2", 2.0)],
        path=engine.conv2d_path(x, k, padding="same"),
    )


def w4(threads: int | None) -> Workload:
    x = np.random.default_rng(4).random((2048, 2048), dtype=np.float32)
    g = gaussian(31, 5.0)
    kernel = np.outer(g, g)
    peers: dict[str, Callable[[], object]] = {}
    if cv2 is not None:
        peers["cv2.sepFilter2D"] = lambda: cv2.sepFilter2D(
            x, cv2.CV_32F, g, g, borderType=cv2.BORDER_CONSTANT
        )
    return Workload(
        "W4",
        "2048x2048 gray, 31x31 Gaussian",
        lambda: conv2d(x, kernel, padding="same", threads=threads),
        peers,
        [Goal("cv2.sepFilter2D", 2.0)],
        path=engine.conv2d_path(x, kernel, padding="same"),
    )


def w4b(threads: int | None) -> Workload:
    rng = np.random.default_rng(5)
    x = rng.random((2048, 2048), dtype=np.float32)
    kernel = rng.random((31, 31), dtype=np.float32)
    flipped = np.ascontiguousarray(kernel[::-1, ::-1])  # fftconvolve convolves
    peers: dict[str, Callable[[], object]] = {}
    if signal is not None:
        peers["scipy.signal.fftconvolve"] = lambda: signal.fftconvolve(x, flipped, mode="same")
    return Workload(
        "W4b",
        "2048x2048 gray, random 31x31",
        lambda: conv2d(x, kernel, padding="same", threads=threads),
        peers,
        [Goal("scipy.signal.fftconvolve", 1.0)],
        path=engine.conv2d_path(x, kernel, padding="same"),
    )


def w5(size: int, goal: float, threads: int | None, x: Array) -> Workload:
    peers = {} if torch is None else {"torch": torch_max_pool(x, size, 2)}
    return Workload(
        f"W5-{size}x{size}",
        f"max pool 32x224x224x64, {size}x{size} stride 2",
        lambda: max_pool2d(x, size, 2, threads=threads),
        peers,
        [Goal("torch", goal)],
        path="pool",
    )


def workloads(selected: set[str], quick: bool, threads: int | None) -> list[Workload]:
    makers: dict[str, Callable[[], Workload]] = {
        "W1": lambda: dense(
            "W1",
            "conv 32x224x224x3 -> 16 filters 5x5, pad 2",
            (32, 224, 224, 3),
            16,
            5,
            1.2,
            threads,
        ),
        "W2": lambda: dense(
            "W2",
            "conv 8x128x128x64 -> 64 filters 3x3, pad 1",
            (8, 128, 128, 64),
            64,
            3,
            1.5,
            threads,
        ),
        "W6": lambda: dense(
            "W6",
            "the seed's 4x9x9x3 -> 8 filters 5x5, pad 2",
            (4, 9, 9, 3),
            8,
            5,
            1.0,
            threads,
            loops=200,
        ),
        "W3": lambda: w3(threads),
        "W4": lambda: w4(threads),
        "W4b": lambda: w4b(threads),
    }
    chosen = [makers[key]() for key in makers if key in selected]
    if "W5" in selected and not quick:
        x = np.random.default_rng(6).standard_normal((32, 224, 224, 64), dtype=np.float32)
        chosen += [w5(2, 0.4, threads, x), w5(3, 0.5, threads, x)]
    return chosen


# --------------------------------------------------------------------------- measuring


def timed(run: Callable[[], object], loops: int) -> float:
    start = time.perf_counter()
    for _ in range(loops):
        run()
    return (time.perf_counter() - start) / loops


def scratch_mib(run: Callable[[], object]) -> float:
    """Peak traced NumPy allocation during ``run`` minus the bytes of what it returns."""
    tracemalloc.start()
    try:
        out = run()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    size = out.nbytes if isinstance(out, np.ndarray) else 0
    return (peak - size) / MiB


def measure(work: Workload, rounds: int) -> None:
    contenders = {"convcli": work.ours, **work.peers}
    for run in contenders.values():
        run()  # warm-up: first-call costs (imports, thread pools, plans) are not measured
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    names = list(contenders)
    for round_index in range(rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            # Let the previous contender's worker threads (OpenMP, OpenBLAS) stop spinning
            # first: a spinning pool steals the cores from whoever runs next.
            time.sleep(PAUSE)
            samples[name].append(timed(contenders[name], work.loops))
    work.medians = {name: statistics.median(values) for name, values in samples.items()}
    work.scratch_mib = scratch_mib(work.ours)


#: Runs a command and prints its wall time and peak resident set. A fresh, small helper
#: process is needed: Linux starts a child's ru_maxrss from its parent's at fork/exec, so
#: measured from this process (hundreds of MiB of arrays) every command would look huge.
RSS_PROBE = """
import os, sys, time
start = time.perf_counter()
pid = os.fork()
if pid == 0:
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.execvp(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
print(time.perf_counter() - start, usage.ru_maxrss * 1024, os.waitstatus_to_exitcode(status))
"""


def run_command(command: list[str], result: CommandResult, env: dict[str, str]) -> None:
    """Run once; record wall time and the command's own peak resident set."""
    probe = subprocess.run(
        [sys.executable, "-S", "-c", RSS_PROBE, *command],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    fields = probe.stdout.split()
    if len(fields) != 3 or fields[2] != "0":
        raise RuntimeError(f"{' '.join(command)} failed: {probe.stderr.strip()[-500:]}")
    result.seconds.append(float(fields[0]))
    result.max_rss = max(result.max_rss, int(fields[1]))


#: The file each command-line contender writes, in the run's folder.
CLI_OUTPUTS = {"convcli": "convcli.png", "vips conv": "vips.png", "ImageMagick": "magick.png"}


def command_environment(folder: Path) -> dict[str, str]:
    """This environment, with Python's bytecode cache on (in ``folder``, not in the tree).

    An installed convcli has its modules compiled once, at install time or on first run. An
    editable install under PYTHONDONTWRITEBYTECODE=1 (as in some sandboxes) would recompile
    all of them on every run, about 60 ms that no user pays; the warm-up run fills the cache.
    """
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(folder / "pycache")
    return env


def cli_commands(folder: Path) -> dict[str, list[str]]:
    """convcli and its command-line peers on one 2048x2048 RGB PNG, 3x3 sharpen, PNG out."""
    import imageio.v3 as iio

    yy, xx = np.mgrid[0:2048, 0:2048] / 2048.0
    rng = np.random.default_rng(7)
    # A photo-like image (smooth shapes and mild noise): PNG time depends on the content.
    picture = np.stack(
        [
            128 + 100 * np.sin(6 * xx + 3 * yy),
            128 + 100 * np.cos(5 * yy - 2 * xx * yy),
            128 + 90 * np.sin(9 * (xx - 0.5) ** 2 + 7 * (yy - 0.5) ** 2),
        ],
        axis=-1,
    ) + rng.normal(0, 6, (2048, 2048, 3))
    source = folder / "photo.png"
    iio.imwrite(source, np.clip(picture, 0, 255).astype(np.uint8))
    sharpen = "0 -1 0\n-1 5 -1\n0 -1 0\n"
    (folder / "sharpen.mat").write_text("3 3 1 0\n" + sharpen)
    commands = {
        "convcli": [
            sys.executable,
            "-m",
            "convcli",
            "conv",
            str(source),
            "-k",
            "sharpen",
            "-o",
            str(folder / CLI_OUTPUTS["convcli"]),
            "--overwrite",
            "-q",
        ],
    }
    if shutil.which("vips"):
        commands["vips conv"] = [
            "vips",
            "conv",
            str(source),
            str(folder / CLI_OUTPUTS["vips conv"]),
            str(folder / "sharpen.mat"),
        ]
    # /usr/bin/convert before PATH's: some machines put a wrapper script first on PATH.
    candidates = [shutil.which("magick"), "/usr/bin/convert", shutil.which("convert")]
    magick = next((c for c in candidates if c and os.access(c, os.X_OK)), None)
    if (
        magick
        and "ImageMagick"
        in subprocess.run([magick, "-version"], capture_output=True, text=True, check=False).stdout
    ):
        commands["ImageMagick"] = [
            magick,
            str(source),
            "-convolve",
            sharpen.replace("\n", " ").strip().replace(" ", ","),
            str(folder / CLI_OUTPUTS["ImageMagick"]),
        ]
    return commands


def measure_cli(rounds: int) -> tuple[dict[str, float], dict[str, CommandResult]] | str:
    """Median wall time of each command, and its results (peak RSS, output size)."""
    with tempfile.TemporaryDirectory() as directory:
        folder = Path(directory)
        commands = cli_commands(folder)
        env = command_environment(folder)
        results = {name: CommandResult() for name in commands}
        try:
            for command in commands.values():
                run_command(command, CommandResult(), env)  # warm the caches
            names = list(commands)
            for round_index in range(rounds):
                shift = round_index % len(names)
                for name in names[shift:] + names[:shift]:
                    run_command(commands[name], results[name], env)
        except RuntimeError as error:
            return f"skipped: {error}"
        for name in commands:
            results[name].output_bytes = (folder / CLI_OUTPUTS[name]).stat().st_size
    medians = {name: statistics.median(result.seconds) for name, result in results.items()}
    return medians, results


# --------------------------------------------------------------------------- report


class OtherLoad:
    """CPU time that other processes used during the run, from /proc/stat.

    Other processes slow multi-threaded BLAS far more than anything else, so a run during
    which they kept a core busy has suspect ratios. (The load average is no guide: on some
    virtual machines it is stale.)
    """

    def __init__(self) -> None:
        self.start = self._busy_seconds()
        self.own = self._own_seconds()
        self.wall = time.perf_counter()

    @staticmethod
    def _busy_seconds() -> float | None:
        try:
            fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        except OSError:
            return None
        ticks = [int(value) for value in fields]
        idle = ticks[3] + ticks[4]  # idle + iowait
        return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")

    @classmethod
    def wait_until_quiet(cls, limit: float) -> bool:
        """Wait (at most ``limit`` seconds) for a second in which others use < 0.2 cores."""
        deadline = time.monotonic() + limit
        while True:
            before = cls._busy_seconds()
            time.sleep(1.0)
            after = cls._busy_seconds()
            if before is None or after is None or after - before < 0.2:
                return True
            if time.monotonic() > deadline:
                return False

    @staticmethod
    def _own_seconds() -> float:
        times = os.times()
        return times.user + times.system + times.children_user + times.children_system

    def report(self) -> str:
        end = self._busy_seconds()
        if self.start is None or end is None:
            return "CPU use of other processes: unknown (no /proc/stat)"
        others = max(end - self.start - (self._own_seconds() - self.own), 0.0)
        wall = time.perf_counter() - self.wall
        return (
            f"other processes used {others:.1f} CPU-seconds in {wall:.0f} s "
            f"({others / wall:.2f} cores on average; near 0 for trustworthy ratios)"
        )


def machine() -> list[str]:
    lines = [f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"]
    try:
        model = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
        lines[0] += f", {model}"
    except (OSError, StopIteration):
        pass
    lines.append(f"numpy {np.__version__}")
    if threadpoolctl is not None:
        for pool in threadpoolctl.threadpool_info():
            lines.append(
                f"  {pool['internal_api']} {pool.get('version') or ''} "
                f"{pool.get('architecture') or ''}, {pool['num_threads']} threads "
                f"({Path(pool['filepath']).name})"
            )
    for name in ("torch", "cv2", "scipy"):
        module = optional_import(name)
        lines.append(f"{name} {getattr(module, '__version__', 'not installed')}")
    coretype = os.environ.get("OPENBLAS_CORETYPE")
    lines.append(f"OPENBLAS_CORETYPE={coretype or '(unset)'}")
    return lines


def format_seconds(value: float) -> str:
    if value < 1e-3:
        return f"{value * 1e6:.1f} us"
    if value < 1:
        return f"{value * 1e3:.1f} ms"
    return f"{value:.2f} s"


def rows_for(work: Workload) -> list[list[str]]:
    ours = work.medians["convcli"]
    rows = []
    for goal in work.goals:
        if goal.peer not in work.medians:
            rows.append(
                [
                    work.key,
                    format_seconds(ours),
                    goal.peer,
                    "not installed",
                    "-",
                    f"<= {goal.ratio:g}x",
                    "-",
                ]
            )
            continue
        ratio = ours / work.medians[goal.peer]
        rows.append(
            [
                work.key,
                format_seconds(ours),
                goal.peer,
                format_seconds(work.medians[goal.peer]),
                f"{ratio:.2f}x",
                f"<= {goal.ratio:g}x",
                "yes" if ratio <= goal.ratio else "no",
            ]
        )
    return rows


def print_table(header: list[str], rows: list[list[str]], markdown: bool) -> None:
    if markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "|".join("---" for _ in header) + "|")
        for row in rows:
            print("| " + " | ".join(row) + " |")
        return
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    for row in [header, *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds; skip W5 and the CLI")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 7, quick 3)")
    parser.add_argument("--only", help="comma-separated workloads: W1,W2,W6,W3,W4,W4b,W5,CLI")
    parser.add_argument("--threads", type=int, help="convcli's threads (torch/cv2 keep theirs)")
    parser.add_argument("--markdown", action="store_true", help="print Markdown tables")
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="before each workload, wait up to this long for other processes to go idle",
    )
    args = parser.parse_args()
    rounds = args.rounds or (3 if args.quick else 7)
    everything = {"W1", "W2", "W6", "W3", "W4", "W4b", "W5", "CLI"}
    selected = set(args.only.split(",")) if args.only else everything
    if torch is not None:
        torch.set_num_threads(os.cpu_count() or 1)

    print("\n".join(machine()))
    print(f"{rounds} interleaved rounds; medians\n")
    others = OtherLoad()
    header = ["workload", "convcli", "peer", "peer median", "ratio", "goal", "met"]
    rows: list[list[str]] = []
    details: list[list[str]] = []
    for work in workloads(selected, args.quick, args.threads):
        if args.wait_quiet and not others.wait_until_quiet(args.wait_quiet):
            print(f"  {work.key}: the machine stayed busy; measuring anyway", file=sys.stderr)
        measure(work, rounds)
        rows += rows_for(work)
        details.append([work.key, work.title, work.path, f"{work.scratch_mib:.1f}"])
        print(f"  {work.key}: done", file=sys.stderr)
    if "CLI" in selected and not args.quick:
        if args.wait_quiet:
            others.wait_until_quiet(args.wait_quiet)
        outcome = measure_cli(rounds)
        if isinstance(outcome, str):
            rows.append(["CLI", outcome, "vips conv", "-", "-", "<= 1x", "-"])
        else:
            medians, results = outcome
            ours = medians["convcli"]
            for peer in ("vips conv", "ImageMagick"):
                if peer in medians:
                    ratio = ours / medians[peer]
                    goal = "<= 1x" if peer == "vips conv" else "-"
                    met = ("yes" if ratio <= 1.0 else "no") if peer == "vips conv" else "-"
                    rows.append(
                        [
                            "CLI",
                            format_seconds(ours),
                            peer,
                            format_seconds(medians[peer]),
                            f"{ratio:.2f}x",
                            goal,
                            met,
                        ]
                    )
            peak = results["convcli"].max_rss / MiB
            peers = [name for name in ("vips conv", "ImageMagick") if name in results]
            for peer in peers:
                rows.append(
                    [
                        "CLI peak RSS",
                        f"{peak:.0f} MiB",
                        peer,
                        f"{results[peer].max_rss / MiB:.0f} MiB",
                        "-",
                        "<= 150 MiB" if peer == "vips conv" else "-",
                        ("yes" if peak <= 150 else "no") if peer == "vips conv" else "-",
                    ]
                )
            size = results["convcli"].output_bytes
            for peer in peers:
                other = results[peer].output_bytes
                rows.append(
                    ["CLI PNG size", f"{size:,} B", peer, f"{other:,} B", f"{size / other:.3f}x"]
                    + ["-", "-"]
                )
    scratch = [float(detail[3]) for detail in details if detail[2] != "pool"]
    if scratch:
        rows.append(
            [
                "conv2d scratch",
                f"{max(scratch):.1f} MiB",
                "-",
                "-",
                "-",
                "<= 64 MiB",
                "yes" if max(scratch) <= 64 else "no",
            ]
        )
    print_table(header, rows, args.markdown)
    print()
    print_table(["workload", "shape", "engine path", "scratch MiB"], details, args.markdown)
    print(f"\n{others.report()}")


if __name__ == "__main__":
    main()
