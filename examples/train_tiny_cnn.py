#!/usr/bin/env python3
"""Train a tiny CNN with convcli's forward and backward passes, and check it against PyTorch.

The network (NHWC, float64)::

    conv 3x3, 1 -> 4 channels, padding 1, bias -> ReLU -> max pool 2
    conv 3x3, 4 -> 8 channels, padding 1, bias -> ReLU -> average pool 2
    flatten -> linear 72 -> 3 -> softmax cross-entropy

learns which third of a noisy 12x12 image holds a bright bar, from synthetic data
(numpy.random), by plain gradient descent. The convolutions and pools, forward and backward,
are convcli's; the ReLU, the linear layer and the loss are a few lines of NumPy. When torch is
importable, the same network with the same initial weights is trained by torch autograd, and
both losses are printed step by step: they agree to rounding (about 1e-12 in float64).

Usage::

    python examples/train_tiny_cnn.py [--steps 15] [--lr 0.3]
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import numpy as np
import numpy.typing as npt

from convcli import (
    avg_pool2d,
    avg_pool2d_backward,
    conv2d,
    conv2d_backward,
    max_pool2d,
    max_pool2d_backward,
)

Array = npt.NDArray[Any]
Params = dict[str, Array]
CLASSES = 3


def synthetic_data(rng: np.random.Generator, count: int) -> tuple[Array, npt.NDArray[np.int64]]:
    """(count, 12, 12, 1) noisy images with a bright vertical bar in one of three bands."""
    labels = rng.integers(0, CLASSES, count)
    images = rng.normal(0.0, 0.3, (count, 12, 12, 1))
    for index, label in enumerate(labels):
        column = 4 * label + int(rng.integers(0, 4))
        images[index, :, column, 0] += 1.0
    return images, labels


def initial_parameters(rng: np.random.Generator) -> Params:
    """He-style random weights; conv filters in convcli's default OHWI layout."""
    return {
        "conv1": rng.normal(0.0, (2 / 9) ** 0.5, (4, 3, 3, 1)),
        "bias1": np.zeros(4),
        "conv2": rng.normal(0.0, (2 / 36) ** 0.5, (8, 3, 3, 4)),
        "bias2": np.zeros(8),
        "linear": rng.normal(0.0, (1 / 72) ** 0.5, (72, CLASSES)),
        "bias3": np.zeros(CLASSES),
    }


def cross_entropy(logits: Array, labels: npt.NDArray[np.int64]) -> tuple[float, Array]:
    """Mean softmax cross-entropy and its gradient with respect to the logits."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    count = len(labels)
    loss = -float(log_probs[np.arange(count), labels].mean())
    grad = np.exp(log_probs)
    grad[np.arange(count), labels] -= 1.0
    return loss, grad / count


def convcli_step(
    params: Params, images: Array, labels: npt.NDArray[np.int64]
) -> tuple[float, Params]:
    """One forward and backward pass: the loss and the gradient of every parameter."""
    # Forward, keeping what the backward pass needs.
    pre1 = conv2d(images, params["conv1"], params["bias1"], padding=1)
    act1 = np.maximum(pre1, 0.0)
    pool1 = max_pool2d(act1, 2)
    pre2 = conv2d(pool1, params["conv2"], params["bias2"], padding=1)
    act2 = np.maximum(pre2, 0.0)
    pool2 = avg_pool2d(act2, 2)
    features = pool2.reshape(len(images), -1)
    logits = features @ params["linear"] + params["bias3"]
    loss, grad_logits = cross_entropy(logits, labels)

    # Backward, layer by layer.
    grads: Params = {"linear": features.T @ grad_logits, "bias3": grad_logits.sum(axis=0)}
    grad_pool2 = (grad_logits @ params["linear"].T).reshape(pool2.shape)
    grad_act2 = avg_pool2d_backward(grad_pool2, act2.shape, 2)
    grad_pre2 = grad_act2 * (pre2 > 0)
    conv2 = conv2d_backward(grad_pre2, pool1, params["conv2"], params["bias2"], padding=1)
    assert conv2.input is not None and conv2.weight is not None and conv2.bias is not None
    grads["conv2"], grads["bias2"] = conv2.weight, conv2.bias
    grad_act1 = max_pool2d_backward(conv2.input, act1, 2)
    grad_pre1 = grad_act1 * (pre1 > 0)
    conv1 = conv2d_backward(
        grad_pre1, images, params["conv1"], params["bias1"], padding=1, needs=("weight", "bias")
    )
    assert conv1.weight is not None and conv1.bias is not None  # no input gradient asked
    grads["conv1"], grads["bias1"] = conv1.weight, conv1.bias
    return loss, grads


def train_convcli(
    params: Params, images: Array, labels: npt.NDArray[np.int64], steps: int, lr: float
) -> list[float]:
    params = {name: value.copy() for name, value in params.items()}
    losses = []
    for _ in range(steps):
        loss, grads = convcli_step(params, images, labels)
        losses.append(loss)
        for name in params:
            params[name] -= lr * grads[name]
    return losses


def train_torch(
    params: Params, images: Array, labels: npt.NDArray[np.int64], steps: int, lr: float
) -> list[float]:
    """The same network in PyTorch (NCHW, OIHW weights), trained by autograd."""
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(1)
    weights = {name: torch.tensor(value, requires_grad=True) for name, value in params.items()}
    x = torch.tensor(images).permute(0, 3, 1, 2)
    y = torch.tensor(labels)
    losses = []
    for _ in range(steps):
        hidden = F.conv2d(x, weights["conv1"].permute(0, 3, 1, 2), weights["bias1"], padding=1)
        hidden = F.max_pool2d(F.relu(hidden), 2)
        hidden = F.conv2d(hidden, weights["conv2"].permute(0, 3, 1, 2), weights["bias2"], padding=1)
        hidden = F.avg_pool2d(F.relu(hidden), 2)
        features = hidden.permute(0, 2, 3, 1).reshape(len(labels), -1)  # NHWC order, as convcli
        loss = F.cross_entropy(features @ weights["linear"] + weights["bias3"], y)
        losses.append(float(loss.detach()))
        loss.backward()
        with torch.no_grad():
            for weight in weights.values():
                assert weight.grad is not None
                weight -= lr * weight.grad
                weight.grad = None
    return losses


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--lr", type=float, default=0.3)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    images, labels = synthetic_data(rng, 32)
    params = initial_parameters(rng)
    ours = train_convcli(params, images, labels, args.steps, args.lr)
    theirs: list[Any]
    try:
        theirs = train_torch(params, images, labels, args.steps, args.lr)
    except ImportError:
        theirs = [None] * args.steps
        print("torch is not installed: convcli's losses only")
    print(f"{'step':>4}  {'convcli loss':>14}  {'torch loss':>14}  {'difference':>10}")
    for step, (mine, other) in enumerate(zip(ours, theirs, strict=True)):
        if other is None:
            print(f"{step:>4}  {mine:>14.10f}")
        else:
            print(f"{step:>4}  {mine:>14.10f}  {other:>14.10f}  {abs(mine - other):>10.2e}")
    if ours[-1] >= ours[0]:
        print("the loss did not decrease", file=sys.stderr)
        return 1
    if theirs[0] is not None and max(abs(a - b) for a, b in zip(ours, theirs, strict=True)) > 1e-6:
        print("convcli and torch disagree", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
