"""Large images and photos through the real command line: convcli against vips and ImageMagick.

Run from the environment where convcli is installed, with ``vips`` (libvips-tools) and
ImageMagick's ``convert`` on the machine (a missing peer is reported and skipped)::

    python benchmarks/scale_bench.py                 # rows 1-3, 5, 6; 3 interleaved rounds
    python benchmarks/scale_bench.py --rounds 5 --only 1,2
    python benchmarks/scale_bench.py --big           # adds row 4 (a 40000x40000 TIFF, ~5 GB)
    python benchmarks/scale_bench.py --sizes         # convcli's time and peak RSS against size
    python benchmarks/scale_bench.py --workdir /data/convcli-scale

Rows (issue 12): 1. a 6000x4000 JPEG, 3x3 sharpen; 2. the same JPEG, Gaussian sigma 2, with
each output's max |difference| from a float64 reference; 3. a 20000x20000 tiled RGB TIFF,
Gaussian sigma 2, TIFF out; 4. the same at 40000x40000 (``--big``); 5. a 2048x2048 PNG,
sharpen; 6. start-up on an 8x8 PNG against ``python -c "import numpy"``.

Every command runs in a fresh process, and all contenders of all rows run in one interleaved
run: each round runs every contender once, in a rotating order within its row, so a machine
whose speed drifts (this one by up to 2x over minutes) slows them all alike. Only the ratios
convcli/peer of one run mean anything; medians are printed. Peak memory is exact: each command
runs under a tiny wrapper process whose only waited-for child is the command, so the
wrapper's ``getrusage(RUSAGE_CHILDREN).ru_maxrss`` is the command's peak RSS. Commands run
with Python's bytecode cache on (``PYTHONDONTWRITEBYTECODE`` unset, the cache under the work
folder, warmed by an untimed first run), as an installed convcli has it.

Inputs are generated once and cached in ``--workdir`` (default /tmp/convcli-scale); outputs
go to a scratch folder inside it that is removed at the end.

Not a test (it lives outside ``tests/`` and pytest never collects it): it gates nothing.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[Any]
MiB = 1024**2
GB = 1000**3
SHARPEN = "0 -1 0\n-1 5 -1\n0 -1 0\n"
MAGICK_SHARPEN = "3x3:0,-1,0,-1,5,-1,0,-1,0"
SIGMA = 2.0
#: Free disk space needed before row 4 (and the 40000x40000 size) is generated.
BIG_FREE_BYTES = 20 * GB
#: Tile side of the generated TIFFs.
TILE = 512

#: Runs argv[3:] with stdout to argv[1] ("-": discarded) and a timeout of argv[2] seconds
#: (0: none); prints JSON: exit code (or "timeout"), seconds, peak RSS in KiB, stderr's tail.
#: The command is this process's only child, so RUSAGE_CHILDREN's ru_maxrss is its peak.
WRAPPER = """
import json, resource, subprocess, sys, time
target, timeout, command = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
out = subprocess.DEVNULL if target == "-" else open(target, "wb")
start = time.perf_counter()
try:
    done = subprocess.run(command, stdout=out, stderr=subprocess.PIPE, timeout=timeout or None)
    code, err = done.returncode, done.stderr
except subprocess.TimeoutExpired as expired:
    code, err = "timeout", expired.stderr or b""
except OSError as error:
    code, err = "error", str(error).encode()
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
tail = err.decode("utf-8", "replace").strip()[-400:]
print(json.dumps({"code": code, "seconds": seconds, "kib": peak, "stderr": tail}))
"""


# --------------------------------------------------------------------------- inputs


def photo_block(r0: int, c0: int, rows: int, cols: int, height: int, width: int) -> Array:
    """A photo-like uint8 RGB block: smooth gradients and mild noise, the same for any tiling."""
    yy = (np.arange(r0, r0 + rows, dtype=np.float32) / height)[:, None]
    xx = (np.arange(c0, c0 + cols, dtype=np.float32) / width)[None, :]
    rng = np.random.default_rng([7, r0, c0])
    block = np.empty((rows, cols, 3), np.float32)
    block[..., 0] = 128 + 100 * np.sin(6 * xx + 3 * yy)
    block[..., 1] = 128 + 100 * np.cos(5 * yy - 2 * xx * yy)
    block[..., 2] = 128 + 90 * np.sin(9 * (xx - 0.5) ** 2 + 7 * (yy - 0.5) ** 2)
    block += rng.normal(0, 6, (rows, cols, 3)).astype(np.float32)
    return np.clip(block, 0, 255).astype(np.uint8)


def photo(height: int, width: int) -> Array:
    out = np.empty((height, width, 3), np.uint8)
    for r0 in range(0, height, 500):
        rows = min(500, height - r0)
        out[r0 : r0 + rows] = photo_block(r0, 0, rows, width, height, width)
    return out


def publish(path: Path, write: Callable[[Path], None]) -> Path:
    """Write ``path`` through a temporary name, so an interrupted run leaves no bad cache."""
    if path.exists():
        return path
    partial = path.with_name(path.name + ".partial")
    write(partial)
    partial.replace(path)
    return path


def make_jpeg(folder: Path, width: int, height: int) -> Path:
    from PIL import Image

    def write(target: Path) -> None:
        Image.fromarray(photo(height, width)).save(target, format="JPEG", quality=92)

    return publish(folder / f"photo_{width}x{height}_q92.jpg", write)


def make_png(folder: Path, side: int) -> Path:
    from PIL import Image

    def write(target: Path) -> None:
        Image.fromarray(photo(side, side)).save(target, format="PNG")

    return publish(folder / f"photo_{side}x{side}.png", write)


def make_tiff(folder: Path, side: int) -> Path:
    """A side x side RGB tiled BigTIFF (512 tiles, zlib), written tile by tile, never whole."""
    import tifffile

    def tiles() -> Iterator[Array]:
        for r0 in range(0, side, TILE):
            for c0 in range(0, side, TILE):
                rows, cols = min(TILE, side - r0), min(TILE, side - c0)
                full = np.zeros((TILE, TILE, 3), np.uint8)
                full[:rows, :cols] = photo_block(r0, c0, rows, cols, side, side)
                yield full

    def write(target: Path) -> None:
        started = time.perf_counter()
        print(f"  generating {side}x{side} tiled TIFF ...", file=sys.stderr, flush=True)
        tifffile.imwrite(
            target,
            tiles(),
            shape=(side, side, 3),
            dtype=np.uint8,
            tile=(TILE, TILE),
            photometric="rgb",
            compression="zlib",
            bigtiff=True,
            metadata=None,
            maxworkers=os.cpu_count() or 1,
        )
        print(f"  ... {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)

    return publish(folder / f"photo_{side}x{side}_tiled.tif", write)


def warm_page_cache(path: Path) -> None:
    """Read a file once, so the first timed run does not pay for the disk."""
    with path.open("rb") as handle:
        while handle.read(16 * MiB):
            pass


# --------------------------------------------------------------------------- running


@dataclass
class Contender:
    name: str
    command: list[str]
    output: Path | None  # removed before each run (and after it, unless ``keep``)
    stdout: Path | None = None  # the command's standard output goes here
    timeout: float = 0.0  # seconds; 0: none
    warm: bool = True  # an untimed first run (big images: no, it would cost minutes)
    keep: bool = True  # leave the output after a run (big outputs are removed at once)
    output_bytes: int = 0
    seconds: list[float] = field(default_factory=list)
    kib: int = 0
    #: Set when the first run fails ("refused/failed (exit N): ...", "timeout (...)"): the
    #: contender is not run again. A later run that fails goes to ``errors`` instead.
    failure: str = ""
    errors: list[str] = field(default_factory=list)
    succeeded: bool = False

    @property
    def median(self) -> float | None:
        return statistics.median(self.seconds) if self.seconds and not self.failure else None


@dataclass
class Goal:
    text: str
    measured: str
    met: bool | None  # None: could not be measured


@dataclass
class Row:
    key: str
    title: str
    contenders: list[Contender]
    #: convcli's contender is the first; ratios are convcli / each other one.
    goals: list[Goal] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


#: The checkout this script belongs to, if it is one: its convcli is the one measured.
CHECKOUT = Path(__file__).resolve().parents[1]


def environment(workdir: Path) -> dict[str, str]:
    """This environment with Python's bytecode cache on, kept under the work folder.

    Run from a checkout, the commands import that checkout's convcli (it goes first on
    PYTHONPATH), whatever an editable install in the environment points at meanwhile.
    """
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(workdir / "pycache")
    if (CHECKOUT / "convcli" / "__init__.py").exists():
        env["PYTHONPATH"] = os.pathsep.join(
            part for part in (str(CHECKOUT), env.get("PYTHONPATH")) if part
        )
    return env


def convcli_source(env: dict[str, str]) -> str:
    """Where the commands' ``import convcli`` comes from."""
    probe = subprocess.run(
        [sys.executable, "-c", "import convcli; print(convcli.__file__)"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    found = probe.stdout.strip() or probe.stderr.strip()[-200:]
    return str(Path(found).parent) if probe.returncode == 0 else f"(import failed: {found})"


def run(contender: Contender, env: dict[str, str], *, timed: bool = True) -> None:
    """One run in a fresh process under the wrapper; a failure stops the contender."""
    if contender.failure:
        return
    for path in (contender.output, contender.stdout):
        if path is not None:
            path.unlink(missing_ok=True)
    target = str(contender.stdout) if contender.stdout else "-"
    wrapper = [sys.executable, "-S", "-c", WRAPPER, target, str(contender.timeout)]
    probe = subprocess.run(
        [*wrapper, *contender.command], capture_output=True, text=True, env=env, check=False
    )
    try:
        result = json.loads(probe.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        contender.failure = f"failed: wrapper said {probe.stderr.strip()[-300:]!r}"
        return
    error = ""
    if result["code"] == "timeout":
        error = f"timeout (killed after {contender.timeout:.0f} s)"
    elif result["code"] != 0:
        message = " ".join(result["stderr"].split())[-300:]
        error = f"refused/failed (exit {result['code']}): {message}"
    if error and not contender.succeeded:
        contender.failure = error
    elif error:
        contender.errors.append(error)  # it worked before: a run that failed, not a refusal
    contender.succeeded = contender.succeeded or not error
    if not error:
        contender.kib = max(contender.kib, int(result["kib"]))
    for path in (contender.output, contender.stdout):
        if path is not None and path.exists():
            contender.output_bytes = path.stat().st_size
            if not contender.keep:
                path.unlink()
    if timed and not error:
        contender.seconds.append(float(result["seconds"]))


def run_interleaved(rows: list[Row], rounds: int, env: dict[str, str], warm: bool) -> None:
    """``rounds`` rounds; each runs every contender of every row once, rotating within rows."""
    if warm:
        for row in rows:
            for contender in row.contenders:
                if contender.warm:
                    run(contender, env, timed=False)
    for round_index in range(rounds):
        started = time.perf_counter()
        for row in rows:
            names = row.contenders
            shift = round_index % len(names)
            for contender in names[shift:] + names[:shift]:
                run(contender, env)
        print(
            f"  round {round_index + 1}/{rounds}: {time.perf_counter() - started:.0f} s",
            file=sys.stderr,
            flush=True,
        )


def convcli_command() -> list[str]:
    """The installed ``convcli`` script next to this interpreter, else ``python -m convcli``."""
    script = Path(sys.executable).parent / "convcli"
    return [str(script)] if script.exists() else [sys.executable, "-m", "convcli"]


def imagemagick() -> str | None:
    """ImageMagick's own convert (some machines put a wrapper script first on PATH)."""
    for candidate in ("/usr/bin/convert", shutil.which("magick"), shutil.which("convert")):
        if candidate and os.access(candidate, os.X_OK):
            version = subprocess.run(
                [candidate, "-version"], capture_output=True, text=True, check=False
            ).stdout
            if "ImageMagick" in version:
                return candidate
    return None


# --------------------------------------------------------------------------- rows


@dataclass
class Setup:
    workdir: Path
    scratch: Path
    vips: str | None
    magick: str | None
    magick_timeout: float
    mat: Path


def peers_sharpen(setup: Setup, source: Path, ext: str) -> list[Contender]:
    out = setup.scratch
    found = []
    if setup.vips:
        vips_out = out / f"vips_sharpen.{ext}"
        command = [setup.vips, "conv", str(source), str(vips_out), str(setup.mat)]
        found.append(Contender("vips conv", command, vips_out))
    if setup.magick:
        im_out = out / f"magick_sharpen.{ext}"
        command = [setup.magick, str(source), "-morphology", "Convolve", MAGICK_SHARPEN]
        found.append(Contender("ImageMagick -morphology Convolve", [*command, str(im_out)], im_out))
    return found


def convcli_conv(setup: Setup, source: Path, kernel: str, output: Path) -> Contender:
    command = [*convcli_command(), "conv", str(source), "-k", kernel, "-o", str(output)]
    return Contender("convcli", command, output)


def row_sharpen_jpeg(setup: Setup, jpeg: Path) -> Row:
    ours = convcli_conv(setup, jpeg, "sharpen", setup.scratch / "convcli_sharpen.jpg")
    row = Row("1", "6000x4000 JPEG (q92), 3x3 sharpen, JPEG out", [ours])
    row.contenders += peers_sharpen(setup, jpeg, "jpg")
    return row


def gauss_peers(setup: Setup, source: Path, ext: str, tag: str, big: bool) -> list[Contender]:
    out = setup.scratch
    found = []
    if setup.vips:
        suffix = "[tile,bigtiff,compression=deflate]" if ext == "tif" else ""
        for name, extra in (("vips gaussblur float", ["--precision", "float"]), ("vips", [])):
            file = out / f"{tag}_{name.replace(' ', '_')}.{ext}"
            label = name if extra else "vips gaussblur (default: approximate)"
            command = [setup.vips, "gaussblur", str(source), f"{file}{suffix}", f"{SIGMA:g}"]
            found.append(Contender(label, command + extra, file))
    if setup.magick:
        file = out / f"{tag}_magick.{ext}"
        command = [setup.magick, str(source), "-gaussian-blur", f"0x{SIGMA:g}", str(file)]
        timeout = setup.magick_timeout if big else 0.0
        found.append(Contender("ImageMagick -gaussian-blur", command, file, timeout=timeout))
    return found


def row_gauss_jpeg(setup: Setup, jpeg: Path) -> Row:
    ours = convcli_conv(setup, jpeg, f"gaussian:sigma={SIGMA:g}", setup.scratch / "cc_gauss.jpg")
    row = Row("2", "6000x4000 JPEG (q92), Gaussian sigma 2, JPEG out", [ours])
    row.contenders += gauss_peers(setup, jpeg, "jpg", "gauss", big=False)
    return row


def row_gauss_tiff(setup: Setup, key: str, tiff: Path, side: int) -> Row:
    output = setup.scratch / f"cc_big{side}.tif"
    ours = convcli_conv(setup, tiff, f"gaussian:sigma={SIGMA:g}", output)
    row = Row(key, f"{side}x{side} RGB tiled TIFF, Gaussian sigma 2, TIFF out", [ours])
    row.contenders += gauss_peers(setup, tiff, "tif", f"big{side}", big=True)
    for contender in row.contenders:
        contender.warm = contender.keep = False
    return row


def row_sharpen_png(setup: Setup, png: Path) -> Row:
    ours = convcli_conv(setup, png, "sharpen", setup.scratch / "convcli_sharpen.png")
    row = Row("5", "2048x2048 PNG, 3x3 sharpen, PNG out", [ours])
    row.contenders += peers_sharpen(setup, png, "png")
    return row


def row_startup(setup: Setup, tiny: Path) -> Row:
    ours = convcli_conv(setup, tiny, "sharpen", setup.scratch / "t.png")
    row = Row("6", "start-up: 8x8 PNG, sharpen", [ours])
    row.contenders.append(
        Contender("python -c 'import numpy'", [sys.executable, "-c", "import numpy"], None)
    )
    if setup.vips:
        row.contenders.append(Contender("vips --version", [setup.vips, "--version"], None))
    return row


# --------------------------------------------------------------------------- accuracy


def read_pixels(path: Path) -> Array:
    import imageio.v3 as iio

    pixels: Array = iio.imread(path)
    return pixels[..., :3] if pixels.ndim == 3 else pixels


def accuracy(setup: Setup, jpeg: Path, row: Row, env: dict[str, str]) -> list[list[str]]:
    """Max |output - float64 reference| of each contender of row 2, in 8-bit levels.

    The reference is scipy.ndimage.gaussian_filter (mode nearest: convcli's replicate
    padding) of the decoded JPEG in float64, truncated at convcli's radius ceil(3 sigma).
    Each contender is run once more, untimed, into a PNG (lossless); the JPEG it wrote in the
    timed runs is compared too, JPEG's own loss included.
    """
    from scipy import ndimage

    decoded = read_pixels(jpeg).astype(np.float64)
    radius = math.ceil(3 * SIGMA)
    reference = np.empty_like(decoded)
    for channel in range(3):
        ndimage.gaussian_filter(
            decoded[..., channel],
            SIGMA,
            output=reference[..., channel],
            mode="nearest",
            truncate=radius / SIGMA,
        )
    lines = []
    decoders: list[tuple[str, list[str], Path]] = []
    if setup.vips:
        file = setup.scratch / "decode_vips.png"
        decoders.append(("vips's JPEG decoder", [setup.vips, "copy", str(jpeg), str(file)], file))
    if setup.magick:
        file = setup.scratch / "decode_magick.png"
        decoders.append(("ImageMagick's JPEG decoder", [setup.magick, str(jpeg), str(file)], file))
    for name, command, file in decoders:
        probe = Contender(name, command, file)
        run(probe, env, timed=False)
        if probe.failure:
            lines.append([name + " vs Pillow's (input)", probe.failure, "-"])
        else:
            diff = np.abs(read_pixels(file).astype(np.float64) - decoded).max()
            lines.append([f"{name} vs Pillow's (the input itself)", f"{diff:.0f}", "-"])
        file.unlink(missing_ok=True)
    for contender in row.contenders:
        png = setup.scratch / "accuracy.png"
        command = [
            str(png) if part == str(contender.output) else part for part in contender.command
        ]
        probe = Contender(contender.name, command, png)
        run(probe, env, timed=False)
        lossless = "-" if probe.failure else f"{np.abs(read_pixels(png) - reference).max():.2f}"
        png.unlink(missing_ok=True)
        lossy = "-"
        if contender.output is not None and contender.output.exists():
            lossy = f"{np.abs(read_pixels(contender.output) - reference).max():.2f}"
        lines.append([contender.name, lossless, lossy])
        if contender.name == "convcli" and lossless != "-":
            met = float(lossless) <= 1.0
            row.goals.append(Goal("convcli within 1 level of the float64 reference", lossless, met))
    return lines


# --------------------------------------------------------------------------- report


class OtherLoad:
    """CPU time other processes used while the benchmark ran (from /proc/stat), and uptime."""

    def __init__(self) -> None:
        self.start = self._busy()
        self.own = self._own()
        self.wall = time.perf_counter()
        self.load = os.getloadavg()

    @staticmethod
    def _busy() -> float | None:
        try:
            fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        except OSError:
            return None
        ticks = [int(value) for value in fields]
        return (sum(ticks[:8]) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _own() -> float:
        times = os.times()
        return times.user + times.system + times.children_user + times.children_system

    def report(self) -> str:
        wall = time.perf_counter() - self.wall
        before = ", ".join(f"{value:.2f}" for value in self.load)
        after = ", ".join(f"{value:.2f}" for value in os.getloadavg())
        text = f"load average before: {before}; after: {after}; wall {wall:.0f} s"
        end = self._busy()
        if self.start is not None and end is not None:
            others = max(end - self.start - (self._own() - self.own), 0.0)
            text += (
                f"; other processes used {others:.0f} CPU-seconds "
                f"({others / wall:.2f} of {os.cpu_count()} cores on average)"
            )
        return text


def machine(setup: Setup) -> list[str]:
    line = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    try:
        model = next(
            text.split(":", 1)[1].strip()
            for text in Path("/proc/cpuinfo").read_text().splitlines()
            if text.startswith("model name")
        )
        line += f", {model}"
    except (OSError, StopIteration):
        pass
    lines = [line, f"numpy {np.__version__}"]
    try:
        import threadpoolctl

        for pool in threadpoolctl.threadpool_info():
            lines.append(
                f"  {pool['internal_api']} {pool.get('version') or ''} "
                f"{pool.get('architecture') or ''}, {pool['num_threads']} threads"
            )
    except ImportError:
        pass
    lines.append(f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE') or '(unset)'}")
    for tool, flag in ((setup.vips, "--version"), (setup.magick, "-version")):
        if tool:
            text = subprocess.run([tool, flag], capture_output=True, text=True, check=False)
            lines.append(text.stdout.splitlines()[0] if text.stdout else tool)
    return lines


def seconds_text(value: float) -> str:
    return f"{value * 1e3:.0f} ms" if value < 1 else f"{value:.2f} s"


def size_text(size: int) -> str:
    if not size:
        return "-"
    if size >= 1e9:
        return f"{size / 1e9:.2f} GB"
    return f"{size / 1e6:.1f} MB" if size >= 1e5 else f"{size / 1e3:.1f} kB"


def problems(contender: Contender) -> str:
    """The note for a contender that was refused, or some of whose runs failed ("" if none)."""
    if contender.failure:
        return f"{contender.name}: {contender.failure}"
    if contender.errors:
        count = len(contender.errors)
        return f"{contender.name}: {count} run(s) failed (not timed); first: {contender.errors[0]}"
    return ""


def short(failure: str) -> str:
    """The first words of a failure, for a table cell (the whole text goes in the notes)."""
    return failure.split(":", 1)[0]


def print_table(header: list[str], rows: list[list[str]]) -> None:
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print()


def row_goals(row: Row, peak_mib: float | None, time_goals: dict[str, float]) -> None:
    ours = row.contenders[0]
    for peer_name, limit in time_goals.items():
        peer = next((c for c in row.contenders if c.name == peer_name), None)
        text = f"convcli <= {limit:g}x {peer_name}"
        if peer is None or peer.median is None or ours.median is None:
            if peer is None:
                why = "not installed"
            else:
                broken = peer if peer.median is None else ours
                why = short(broken.failure or "".join(broken.errors[:1])) + f" ({broken.name})"
            row.goals.append(Goal(text, why, None))
            continue
        ratio = ours.median / peer.median
        row.goals.append(Goal(text, f"{ratio:.2f}x", ratio <= limit))
    if peak_mib is not None:
        measured = ours.kib / 1024
        met = None if not ours.succeeded else measured <= peak_mib
        shown = f"{measured:.0f} MiB" if ours.succeeded else "-"
        row.goals.append(Goal(f"convcli peak RSS <= {peak_mib:g} MiB", shown, met))


def report(rows: list[Row]) -> None:
    timing = []
    for row in rows:
        ours = row.contenders[0].median
        for contender in row.contenders:
            median = contender.median
            if median is None:
                why = short(contender.failure or "".join(contender.errors[:1])) or "-"
                timing.append([row.key, contender.name, why, "-", "-", "-", "-"])
                continue
            spread = f"{min(contender.seconds):.2f}-{max(contender.seconds):.2f} s"
            if contender.errors:
                spread += f" (n={len(contender.seconds)}; {len(contender.errors)} failed)"
            ratio = (
                "-" if contender is row.contenders[0] or ours is None else f"{ours / median:.2f}x"
            )
            peak = f"{contender.kib / 1024:.0f} MiB"
            output = size_text(contender.output_bytes)
            timing.append(
                [row.key, contender.name, seconds_text(median), spread, ratio, peak, output]
            )
    header = ["row", "contender", "median", "range", "convcli/this", "peak RSS", "output"]
    print_table(header, timing)
    goals = []
    for row in rows:
        for goal in row.goals:
            met = "-" if goal.met is None else ("yes" if goal.met else "**no**")
            goals.append([row.key, goal.text, goal.measured, met])
    print_table(["row", "goal", "measured", "met"], goals)
    for row in rows:
        for note in row.notes:
            print(f"row {row.key}: {note}")


# --------------------------------------------------------------------------- modes


def benchmark(args: argparse.Namespace, setup: Setup, env: dict[str, str]) -> None:
    selected = set(args.only.split(",")) if args.only else {"1", "2", "3", "5", "6"}
    if args.big:
        selected.add("4")
    elif "4" in selected:
        print("row 4 needs --big; skipped", file=sys.stderr)
        selected.discard("4")
    work = setup.workdir
    rows: list[Row] = []
    jpeg = make_jpeg(work, 6000, 4000) if selected & {"1", "2"} else None
    if "1" in selected and jpeg:
        rows.append(row_sharpen_jpeg(setup, jpeg))
    if "2" in selected and jpeg:
        rows.append(row_gauss_jpeg(setup, jpeg))
    if "3" in selected:
        rows.append(row_gauss_tiff(setup, "3", make_tiff(work, 20000), 20000))
    if "4" in selected:
        free = shutil.disk_usage(work).free
        if free < BIG_FREE_BYTES:
            print(f"row 4 skipped: {free / GB:.1f} GB free in {work}, under 20 GB")
        else:
            rows.append(row_gauss_tiff(setup, "4", make_tiff(work, 40000), 40000))
    if "5" in selected:
        rows.append(row_sharpen_png(setup, make_png(work, 2048)))
    if "6" in selected:
        tiny = publish(work / "tiny8x8.png", write_tiny)
        rows.append(row_startup(setup, tiny))
    for row in rows:
        for contender in row.contenders:
            for part in contender.command:
                if Path(part).suffix in (".tif", ".jpg", ".png") and Path(part).parent == work:
                    warm_page_cache(Path(part))
                    break
    # Big rows are not warmed (an untimed run would cost minutes), so a tiny run fills
    # convcli's bytecode cache whatever the rows.
    tiny = publish(work / "tiny8x8.png", write_tiny)
    warm_png = setup.scratch / "warm.png"
    command = [*convcli_command(), "conv", str(tiny), "-k", "sharpen", "-o", str(warm_png)]
    run(Contender("warm-up", command, warm_png), env, timed=False)
    print(
        f"{args.rounds} interleaved rounds, rows {', '.join(r.key for r in rows)}", file=sys.stderr
    )
    run_interleaved(rows, args.rounds, env, warm=True)
    accuracy_lines: list[list[str]] = []
    for row in rows:
        ours = row.contenders[0]
        if row.key in ("1", "2"):
            row_goals(
                row,
                236,
                {"vips conv": 1.5}
                if row.key == "1"
                else {"vips gaussblur float": 1.0, "ImageMagick -gaussian-blur": 1.0},
            )
        elif row.key in ("3", "4"):
            row_goals(row, 300, {"vips gaussblur float": 2.0})
            row.notes.append(
                "vips gaussblur --precision float writes float32 samples (4x the bytes of "
                "convcli's uint8 TIFF); the default (approximate) one writes uint8"
            )
        elif row.key == "5":
            row_goals(row, None, {"vips conv": 1.0})
        elif row.key == "6":
            row_goals(row, None, {"python -c 'import numpy'": 1.5})
        if row.key == "2" and jpeg and not ours.failure:
            accuracy_lines = accuracy(setup, jpeg, row, env)
    for row in rows:
        row.notes += [problems(c) for c in row.contenders if problems(c)]
    print("\n".join(machine(setup)))
    print(f"{args.rounds} interleaved rounds; medians; convcli: {' '.join(convcli_command())}\n")
    for row in rows:
        print(f"row {row.key}: {row.title}")
        for contender in row.contenders:
            shown = shlex.join(Path(p).name if "/" in p else p for p in contender.command)
            print(f"  {contender.name}: `{shown}`")
    print()
    report(rows)
    if accuracy_lines:
        print()
        print(
            f"row 2 accuracy: max |output - float64 reference| in 8-bit levels "
            f"(gaussian_filter sigma {SIGMA:g}, mode nearest, radius {math.ceil(3 * SIGMA)})\n"
        )
        print_table(["output", "PNG out (untimed run)", "the timed JPEG out"], accuracy_lines)


def write_tiny(path: Path) -> None:
    from PIL import Image

    Image.fromarray(photo(8, 8)).save(path, format="PNG")


def sizes(args: argparse.Namespace, setup: Setup, env: dict[str, str]) -> None:
    """convcli's time and peak RSS against size: Gaussian sigma 2 on tiled TIFFs."""
    sides = [1000, 2000, 5000, 10000, 20000]
    if args.big:
        if shutil.disk_usage(setup.workdir).free < BIG_FREE_BYTES:
            print("40000x40000 skipped: under 20 GB free", file=sys.stderr)
        else:
            sides.append(40000)
    kernel = f"gaussian:sigma={SIGMA:g}"
    contenders: list[tuple[int, str, Contender]] = []
    for side in sides:
        source = make_tiff(setup.workdir, side)
        warm_page_cache(source)
        output = setup.scratch / f"size{side}.tif"
        command = [*convcli_command(), "conv", str(source), "-k", kernel, "-o", str(output)]
        contenders.append((side, "streamed", Contender(f"{side} streamed", command, output)))
        if side <= 10000:
            # Standard output is never streamed: the same TIFF, decoded and written whole.
            memory = setup.scratch / f"size{side}_memory.tif"
            command = [*convcli_command(), "conv", str(source), "-k", kernel, "-o", "-"]
            command += ["--format", "tiff", "--max-pixels", str(side * side)]
            name = f"{side} in memory"
            contenders.append((side, "memory", Contender(name, command, None, stdout=memory)))
    for _, _, contender in contenders:
        contender.keep = False
    small = [c for side, _, c in contenders if side <= 2000]
    for contender in small:
        run(contender, env, timed=False)  # warm the bytecode cache
    row = Row("sizes", "sizes", [c for _, _, c in contenders])
    run_interleaved([row], args.rounds, env, warm=False)
    print("\n".join(machine(setup)))
    print(
        f"{args.rounds} interleaved rounds; medians. convcli conv IN.tif -k {kernel} -o OUT.tif "
        "(streamed when the decoded input is over 64 MiB) and -o - --format tiff > OUT.tif "
        "(in memory)\n"
    )
    table = []
    for side in sides:
        cells = [f"{side}x{side}", f"{side * side / 1e6:,.0f}"]
        for mode in ("streamed", "memory"):
            found = [c for s, m, c in contenders if s == side and m == mode]
            if not found:
                cells += ["-", "-", "-"]
                continue
            contender = found[0]
            median = contender.median
            if median is None:
                cells += [short(contender.failure or "".join(contender.errors[:1])), "-", "-"]
                continue
            cells += [
                seconds_text(median),
                f"{median / (side * side) * 1e9:.0f}",
                f"{contender.kib / 1024:.0f} MiB",
            ]
        streamed = side * side * 3 > 64 * MiB
        cells.insert(2, "streamed" if streamed else "whole (<= 64 MiB)")
        table.append(cells)
    header = ["image", "Mpixels", "default path", "default: time", "ns/pixel", "peak RSS"]
    header += ["in memory: time", "ns/pixel", "peak RSS"]
    print_table(header, table)
    for _, _, contender in contenders:
        if problems(contender):
            print(problems(contender))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--only", help="comma-separated rows, e.g. 1,2 (default 1,2,3,5,6)")
    parser.add_argument("--big", action="store_true", help="add row 4 / 40000x40000 (~5 GB)")
    parser.add_argument("--sizes", action="store_true", help="time and peak RSS against size")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path("/tmp/convcli-scale"),
        help="where generated inputs are cached (default /tmp/convcli-scale)",
    )
    parser.add_argument(
        "--magick-timeout",
        type=float,
        default=600.0,
        help="seconds before ImageMagick is killed on the big TIFFs (default 600)",
    )
    args = parser.parse_args()
    workdir: Path = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    others = OtherLoad()
    with tempfile.TemporaryDirectory(prefix="out-", dir=workdir) as scratch:
        mat = Path(scratch) / "sharpen.mat"
        mat.write_text("3 3 1 0\n" + SHARPEN)
        setup = Setup(
            workdir, Path(scratch), shutil.which("vips"), imagemagick(), args.magick_timeout, mat
        )
        env = environment(workdir)
        source = convcli_source(env)
        print(f"convcli from {source}", file=sys.stderr)
        if args.sizes:
            sizes(args, setup, env)
        else:
            benchmark(args, setup, env)
        after = convcli_source(env)
    print(others.report())
    print(f"convcli imported from {source}")
    if after != source:
        print(f"WARNING: at the end of the run, convcli imports from {after}")


if __name__ == "__main__":
    main()
