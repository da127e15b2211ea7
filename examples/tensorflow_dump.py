#!/usr/bin/env python3
"""Write reference dumps from TensorFlow (Keras) layers, then check them with ``convcli verify``.

Keras works channels-last like convcli, and its Conv2D kernel is (kh, kw, in, out): convcli's
HWIO kernel layout, so nothing needs transposing. ``padding="same"`` is TensorFlow's rule in
convcli too (stride 2 included); TensorFlow's SAME average pooling divides by the real pixels
only, which is convcli's ``count_include_pad=False``.

Usage::

    python examples/tensorflow_dump.py [OUTPUT_FOLDER]

Without OUTPUT_FOLDER the dumps go to a temporary folder that is removed afterwards. Needs
tensorflow and convcli in the same environment; without tensorflow it says so and exits 0.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path


def write_dumps(folder: Path) -> list[Path]:
    """A Conv2D (SAME, stride 2), a MaxPool2D and an AveragePooling2D, each as one dump."""
    import tensorflow as tf

    from convcli import write_reference

    tf.keras.utils.set_random_seed(0)
    x = tf.random.normal((2, 16, 16, 3))
    conv = tf.keras.layers.Conv2D(
        8, 3, strides=2, padding="same", use_bias=True, bias_initializer="random_normal"
    )
    max_pool = tf.keras.layers.MaxPool2D(pool_size=3, strides=2, padding="same")
    avg_pool = tf.keras.layers.AveragePooling2D(pool_size=3, strides=2, padding="same")
    conv_out, max_out, avg_out = conv(x), max_pool(x), avg_pool(x)
    kernel, bias = (weight.numpy() for weight in conv.weights)
    source = f"tensorflow {tf.__version__}"

    conv_dump = folder / "tf_conv2d_same_stride2.npz"
    write_reference(
        conv_dump,
        op="conv",
        input=x.numpy(),
        output=conv_out.numpy(),
        kernel=kernel,
        bias=bias,
        stride=2,
        padding="same",
        kernel_layout="HWIO",
        source=f"{source} keras.layers.Conv2D(8, 3, strides=2, padding='same')",
    )
    max_dump = folder / "tf_max_pool2d_same.npz"
    write_reference(
        max_dump,
        op="max_pool",
        input=x.numpy(),
        output=max_out.numpy(),
        size=3,
        stride=2,
        padding="same",
        source=f"{source} keras.layers.MaxPool2D(3, strides=2, padding='same')",
    )
    avg_dump = folder / "tf_avg_pool2d_same.npz"
    write_reference(
        avg_dump,
        op="avg_pool",
        input=x.numpy(),
        output=avg_out.numpy(),
        size=3,
        stride=2,
        padding="same",
        count_include_pad=False,
        source=f"{source} keras.layers.AveragePooling2D(3, strides=2, padding='same')",
    )
    return [conv_dump, max_dump, avg_dump]


def verify(dumps: list[Path]) -> int:
    """Run ``convcli verify`` on each dump; the worst exit status."""
    worst = 0
    for dump in dumps:
        print(f"$ convcli verify {dump.name}", flush=True)
        status = subprocess.run([sys.executable, "-m", "convcli", "verify", str(dump)]).returncode
        verdict = {0: "match", 1: "DIFFER"}.get(status, "error")
        print(f"{dump.name}: exit {status} ({verdict})\n", flush=True)
        worst = max(worst, status)
    return worst


def main() -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # hide TensorFlow's start-up chatter
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        print("skipped: tensorflow is not installed")
        return 0
    if len(sys.argv) > 1:
        folder = Path(sys.argv[1])
        folder.mkdir(parents=True, exist_ok=True)
        return verify(write_dumps(folder))
    with tempfile.TemporaryDirectory() as temporary:
        return verify(write_dumps(Path(temporary)))


if __name__ == "__main__":
    sys.exit(main())
