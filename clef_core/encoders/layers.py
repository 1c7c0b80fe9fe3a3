"""Building blocks of Net1D: 'same'-padded conv and max-pool, Swish, squeeze-excitation, norms.

'Same' padding follows TensorFlow's SAME and the reference ``MyConv1dPadSame``: for input length L,
stride s and kernel k the output length is ceil(L / s), the total padding is
p = max(0, (ceil(L / s) - 1) * s + k - L), split as floor(p / 2) on the left and the rest on the right.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def same_pad(length: int, kernel_size: int, stride: int) -> tuple[int, int]:
    """(left, right) zero padding that makes a conv of ``kernel_size``/``stride`` output ceil(L/stride)."""
    out = -(-length // stride)
    total = max(0, (out - 1) * stride + kernel_size - length)
    return total // 2, total - total // 2


def static_same_pad(kernel_size: int, stride: int) -> tuple[int, int] | None:
    """The 'same' padding when it does not depend on the input length, else None.

    A fixed pad (left, k - 1 - left) always yields ceil(L / s) outputs; it equals the per-length
    'same' pad (up to trailing zeros no window reaches) when floor(p / 2) is the same for every
    residue of L mod s, e.g. stride 1, or stride 2 with an even kernel (k = 16: (7, 8)). A static
    pad keeps the forward free of shape arithmetic, which exporters prefer.
    """
    if kernel_size < stride:
        return None
    lefts = {same_pad(length, kernel_size, stride)[0] for length in range(kernel_size, kernel_size + stride)}
    if len(lefts) != 1:
        return None
    left = lefts.pop()
    return left, kernel_size - 1 - left


class SamePadConv1d(nn.Module):
    """``nn.Conv1d`` (held as ``.conv``, as in the reference) with 'same' zero padding."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1):
        super().__init__()
        self.kernel_size, self.stride = kernel_size, stride
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, stride=stride, groups=groups)
        self.pad = static_same_pad(kernel_size, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = self.pad if self.pad is not None else same_pad(x.shape[-1], self.kernel_size, self.stride)
        if pad != (0, 0):
            x = F.pad(x, pad)
        return self.conv(x)


class SamePadMaxPool1d(nn.Module):
    """Max-pool of size and stride ``kernel_size`` with the reference's zero padding.

    The reference (``MyMaxPool1dPadSame``) always pads ``kernel_size - 1`` zeros, floor half left;
    for size 2 that is one zero on the right, so the output has ceil(L / 2) samples and an odd
    input's last window is max(x[-1], 0). Zeros, not -inf: this is what the published models saw.
    """

    def __init__(self, kernel_size: int):
        super().__init__()
        total = max(0, kernel_size - 1)
        self.kernel_size = kernel_size
        self.pad = (total // 2, total - total // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # as a (1, k) 2-D pool: torch.export's max_pool1d pins the time length to the example's
        k = self.kernel_size
        return F.max_pool2d(F.pad(x, self.pad).unsqueeze(-2), (1, k), (1, k)).squeeze(-2)


class Swish(nn.Module):
    """x * sigmoid(x) (SiLU)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(x)


class SqueezeExcitation(nn.Module):
    """Channel gate: s = sigmoid(W2 swish(W1 mean_t(x) + b1) + b2), out = x * s (reduction 2).

    Kept as two ``nn.Linear`` layers named ``se_fc1``/``se_fc2`` like the reference, so published
    weights map one to one (an exporter may swap them for 1x1 convs).
    """

    def __init__(self, channels: int, reduction: int = 2):
        super().__init__()
        self.se_fc1 = nn.Linear(channels, channels // reduction)
        self.se_activation = Swish()
        self.se_fc2 = nn.Linear(channels // reduction, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.se_fc2(self.se_activation(self.se_fc1(x.mean(dim=-1)))))
        return x * gate.unsqueeze(-1)


def make_norm(kind: str, channels: int, groups: int) -> nn.Module:
    """BatchNorm1d, GroupNorm or a parameter-free identity for ``norm`` = batch | group | none."""
    if kind == "batch":
        return nn.BatchNorm1d(channels)
    if kind == "group":
        return nn.GroupNorm(groups, channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm {kind!r} is unknown (none | batch | group)")
