#!/usr/bin/env python3
"""Write reference dumps from PyTorch layers, then check them with ``convcli verify``.

A reference dump is an .npz holding a layer's input, its output as PyTorch computed it, its
weights and the call's parameters; ``convcli verify DUMP.npz`` recomputes the output with
convcli's NumPy engine and compares (exit status 0 when they agree). A dump may also hold a
``grad_output`` and autograd's ``grad_input``/``grad_weight``/``grad_bias``: verify then checks
convcli's backward pass too. Write one from your own model the same way to check that convcli
reproduces it.

Usage::

    python examples/torch_dump.py [OUTPUT_FOLDER]

Without OUTPUT_FOLDER the dumps go to a temporary folder that is removed afterwards. Needs
torch and convcli in the same environment; without torch it says so and exits 0.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path


def write_dumps(folder: Path) -> list[Path]:
    """A Conv2d, a MaxPool2d and an AvgPool2d on random data, each as one dump, and the
    Conv2d's gradients (autograd, for a random grad_output) as a fourth."""
    import torch

    from convcli import write_reference

    torch.manual_seed(0)
    x = torch.randn(2, 3, 16, 16)
    conv = torch.nn.Conv2d(3, 8, kernel_size=3, stride=2, padding=1, bias=True)
    max_pool = torch.nn.MaxPool2d(kernel_size=3, stride=2, padding=1, ceil_mode=True)
    avg_pool = torch.nn.AvgPool2d(kernel_size=3, stride=2, padding=1, count_include_pad=False)
    with torch.no_grad():
        conv_out = conv(x)
        max_out = max_pool(x)
        avg_out = avg_pool(x)
    source = f"torch {torch.__version__}"

    # The convolution in convcli's own layouts: NCHW -> NHWC data, OIHW -> OHWI weights.
    conv_dump = folder / "torch_conv2d.npz"
    write_reference(
        conv_dump,
        op="conv",
        input=x.permute(0, 2, 3, 1).numpy(),
        output=conv_out.permute(0, 2, 3, 1).numpy(),
        kernel=conv.weight.detach().permute(0, 2, 3, 1).numpy(),
        bias=conv.bias.detach().numpy(),
        stride=2,
        padding=1,
        source=f"{source} nn.Conv2d(3, 8, 3, stride=2, padding=1)",
    )
    # The pools kept as PyTorch holds them: the dump says layout="NCHW".
    max_dump = folder / "torch_max_pool2d.npz"
    write_reference(
        max_dump,
        op="max_pool",
        input=x.numpy(),
        output=max_out.numpy(),
        size=3,
        stride=2,
        padding=1,
        ceil_mode=True,
        layout="NCHW",
        source=f"{source} nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True)",
    )
    avg_dump = folder / "torch_avg_pool2d.npz"
    write_reference(
        avg_dump,
        op="avg_pool",
        input=x.numpy(),
        output=avg_out.numpy(),
        size=3,
        stride=2,
        padding=1,
        count_include_pad=False,
        layout="NCHW",
        source=f"{source} nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)",
    )
    # A gradient dump: autograd's gradients for a random grad_output, as extra members that
    # verify recomputes with convcli.conv2d_backward (one row per gradient).
    images = x.clone().requires_grad_()
    out = conv(images)
    grad_output = torch.randn_like(out)
    out.backward(grad_output)
    assert images.grad is not None and conv.weight.grad is not None and conv.bias.grad is not None
    grad_dump = folder / "torch_conv2d_grad.npz"
    write_reference(
        grad_dump,
        op="conv",
        input=x.numpy(),
        output=out.detach().numpy(),
        kernel=conv.weight.detach().numpy(),
        bias=conv.bias.detach().numpy(),
        grad_output=grad_output.numpy(),
        grad_input=images.grad.numpy(),
        grad_weight=conv.weight.grad.numpy(),
        grad_bias=conv.bias.grad.numpy(),
        stride=2,
        padding=1,
        layout="NCHW",
        kernel_layout="OIHW",
        source=f"{source} autograd through nn.Conv2d(3, 8, 3, stride=2, padding=1)",
    )
    return [conv_dump, max_dump, avg_dump, grad_dump]


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
    try:
        import torch  # noqa: F401
    except ImportError:
        print("skipped: torch is not installed")
        return 0
    if len(sys.argv) > 1:
        folder = Path(sys.argv[1])
        folder.mkdir(parents=True, exist_ok=True)
        return verify(write_dumps(folder))
    with tempfile.TemporaryDirectory() as temporary:
        return verify(write_dumps(Path(temporary)))


if __name__ == "__main__":
    sys.exit(main())
