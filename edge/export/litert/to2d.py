"""The exact 2-D form of a clef_core Net1D for litert-torch (edge-net1d-notes.md, section 2).

litert-torch's PT2E quantizer handles 2-D convs and pools; 1-D layers are lowered as
reshape -> 2-D op -> reshape, which costs RESHAPE/TRANSPOSE ops, accuracy and speed. Here every
tensor is (N, C, 1, L) and every layer is rebuilt from the trained 1-D one:

* ``SamePadConv1d`` -> the 'same' zero pad for the actual length (= TF SAME, folded into the
  conv by the converter) + ``Conv2d`` with a 1 x k kernel (weights ``w[:, :, None, :]``), groups kept;
* ``SamePadMaxPool1d(2)`` -> ``MaxPool2d((1, 2))``, with its one zero of right padding added only
  when L is odd (for even L that padded column is never read, so the result is identical);
* the channel-expansion pad -> one zero ``F.pad`` on dimension 1, no transposes;
* squeeze-excitation -> keep-dim mean, flattened to (N, C), the two ``nn.Linear`` kept
  (FULLY_CONNECTED), the gate viewed back to (N, C, 1, 1). Keeping the mean 4-D lets the layout
  pass keep the graph NHWC (the flatten of a 1 x 1 map is a free RESHAPE); FULLY_CONNECTED instead
  of 1x1 CONV_2D saves TFLite Micro ~15 KB for the small encoder, because TFLM's conv keeps an int32
  multiplier and shift per output channel (even for per-tensor weights) and its fully-connected
  kernel one pair per op (SE holds 1,872 of the small encoder's 4,400 conv output channels);
* Swish stays ``x * sigmoid(x)``; the embedding is the mean over (H, W), or, for a fixed input
  length, the same mean as a depthwise 1 x L conv with a bias slot (``MeanPool``);
* eval-mode BatchNorm (``norm="batch"``) -> a depthwise 1x1 conv with the folded affine.
  GroupNorm normalises by statistics of each input and has no int8 equivalent here.

The module takes (N, 1, 1, T): the model input is already 4-D, so the input pad's observer is
the input's quantisation. Equality with the 1-D encoder is a test (max |diff| ~ 1e-6).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from clef_core.encoders.layers import SamePadConv1d, SamePadMaxPool1d, SqueezeExcitation, Swish, same_pad
from clef_core.encoders.net1d import BasicBlock, Net1D


class Conv1xK(nn.Module):
    def __init__(self, m: SamePadConv1d) -> None:
        super().__init__()
        c = m.conv
        self.kernel_size, self.stride = c.kernel_size[0], c.stride[0]
        self.conv = nn.Conv2d(c.in_channels, c.out_channels, (1, self.kernel_size), stride=(1, self.stride),
                              groups=c.groups, bias=c.bias is not None)
        with torch.no_grad():
            self.conv.weight.copy_(c.weight[:, :, None, :])
            if c.bias is not None:
                self.conv.bias.copy_(c.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the exact per-length 'same' pad (not the 1-D layer's static one, which adds a column
        # no window reads when L is even): it equals TF SAME, so the converter folds it into the conv
        pad = same_pad(x.shape[-1], self.kernel_size, self.stride)
        if pad != (0, 0):
            x = F.pad(x, pad)
        return self.conv(x)


class MaxPool1x2(nn.Module):
    def __init__(self, m: SamePadMaxPool1d) -> None:
        super().__init__()
        k = getattr(m, "kernel_size", None) or m.pool.kernel_size
        if tuple(m.pad) != (0, 1) or k != 2:
            raise ValueError(f"only the size-2 shortcut pool is supported, got size {k}, pad {m.pad}")
        self.pool = nn.MaxPool2d((1, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % 2:
            x = F.pad(x, (0, 1))
        return self.pool(x)


class Swish2d(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(x)


def copy_linear(lin: nn.Linear) -> nn.Linear:
    c = nn.Linear(lin.in_features, lin.out_features)
    with torch.no_grad():
        c.weight.copy_(lin.weight)
        c.bias.copy_(lin.bias)
    return c


class SE2d(nn.Module):
    """Squeeze-excitation on (N, C, 1, L): the squeeze as two FULLY_CONNECTED ops (see module doc)."""

    def __init__(self, m: SqueezeExcitation) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = copy_linear(m.se_fc1), Swish2d(), copy_linear(m.se_fc2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[0], x.shape[1]
        # mean with keepdim, then flatten: a plain mean to (N, C) made the layout pass transpose
        # every SE input to NCHW (11 TRANSPOSEs, measured)
        squeezed = x.mean(dim=(2, 3), keepdim=True).flatten(1)
        gate = torch.sigmoid(self.fc2(self.act(self.fc1(squeezed))))
        return x * gate.view(n, c, 1, 1)


def norm2d(m: nn.Module) -> nn.Module:
    if isinstance(m, nn.Identity):
        return nn.Identity()
    if isinstance(m, nn.BatchNorm1d):
        scale = m.weight / torch.sqrt(m.running_var + m.eps)
        c = nn.Conv2d(m.num_features, m.num_features, 1, groups=m.num_features)
        with torch.no_grad():
            c.weight.copy_(scale[:, None, None, None])
            c.bias.copy_(m.bias - m.running_mean * scale)
        return c
    raise ValueError(f"{type(m).__name__} cannot be exported to int8 (norm 'none' or 'batch' only)")


def act2d(m: nn.Module) -> nn.Module:
    if isinstance(m, Swish):
        return Swish2d()
    raise ValueError(f"unexpected activation {type(m).__name__}")


class SplitConvSwish(nn.Module):
    """``Swish(conv(x))`` computed in ``parts`` slices of output channels, concatenated: exact, and
    it lowers TFLite Micro's peak memory. Swish is three live tensors (x, sigmoid(x), product):
    for the small encoder's stem at 250 Hz, 3 x 1250 x 32 int8 = 120 KB, the whole arena's peak.
    In slices, the peak is the slices plus the concatenated output, 2 x 40 KB."""

    def __init__(self, conv: "Conv1xK", parts: int) -> None:
        super().__init__()
        c = conv.conv
        if c.groups != 1 or c.out_channels % parts:
            raise ValueError(f"cannot split a conv with {c.groups} groups / {c.out_channels} outputs in {parts}")
        self.kernel_size, self.stride = conv.kernel_size, conv.stride
        step = c.out_channels // parts
        self.convs = nn.ModuleList()
        for i in range(parts):
            part = nn.Conv2d(c.in_channels, step, c.kernel_size, stride=c.stride, bias=c.bias is not None)
            with torch.no_grad():
                part.weight.copy_(c.weight[i * step : (i + 1) * step])
                if c.bias is not None:
                    part.bias.copy_(c.bias[i * step : (i + 1) * step])
            self.convs.append(part)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = same_pad(x.shape[-1], self.kernel_size, self.stride)
        if pad != (0, 0):
            x = F.pad(x, pad)
        outs = []
        for conv in self.convs:
            y = conv(x)
            outs.append(y * torch.sigmoid(y))
        return torch.cat(outs, dim=1)


def conv_swish(conv: "Conv1xK", norm: nn.Module, act: nn.Module, parts: int) -> nn.Module:
    """``act(norm(conv(x)))``, split in ``parts`` (> 1) when there is no normalisation to fold."""
    if parts > 1 and isinstance(norm, nn.Identity) and isinstance(act, Swish2d):
        return SplitConvSwish(conv, parts)
    return nn.Sequential(conv, norm, act)


class Block2d(nn.Module):
    def __init__(self, b: BasicBlock, split_parts: int = 1) -> None:
        super().__init__()
        self.pre = nn.Identity() if isinstance(b.pre, nn.Identity) else nn.Sequential(*(
            norm2d(m) if not isinstance(m, Swish) else Swish2d() for m in b.pre))
        self.conv1 = conv_swish(Conv1xK(b.conv1), norm2d(b.norm2), act2d(b.activation2), split_parts)
        self.conv2 = Conv1xK(b.conv2)
        self.post2 = nn.Sequential(norm2d(b.norm3), act2d(b.activation3))
        self.conv3 = Conv1xK(b.conv3)
        self.se = SE2d(b.se)
        self.pool = MaxPool1x2(b.shortcut_pool) if isinstance(b.shortcut_pool, SamePadMaxPool1d) else nn.Identity()
        _, _, c0, c1 = b.channel_pad
        self.channel_pad = (0, 0, 0, 0, c0, c1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv3(self.post2(self.conv2(self.conv1(self.pre(x)))))
        out = self.se(out)
        identity = self.pool(x)
        if any(self.channel_pad):
            identity = F.pad(identity, self.channel_pad)
        return out + identity


class MeanPool(nn.Module):
    """The time mean of (N, C, 1, L) as a depthwise conv with a 1 x L kernel of 1 / L, plus a
    per-channel bias (zero unless set): exact for that L, and it gives the int8 graph an int32
    bias at the embedding, added before the output is rounded, where the export folds its
    quantisation-bias correction (edge/export/litert/bias_correction.py). A MEAN has no bias."""

    def __init__(self, channels: int, length: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, (1, length), groups=channels)
        with torch.no_grad():
            self.conv.weight.fill_(1.0 / length)
            self.conv.bias.zero_()

    def set_bias(self, bias: torch.Tensor) -> None:
        with torch.no_grad():
            self.conv.bias.copy_(bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).flatten(1)


class Net1D2d(nn.Module):
    """(N, 1, 1, T) -> (N, emb_dim); numerically the given Net1D on (N, 1, T)."""

    def __init__(self, net: Net1D, split_parts: int = 1, window_samples: int | None = None) -> None:
        super().__init__()
        self.stem = conv_swish(Conv1xK(net.first_conv), norm2d(net.first_norm), act2d(net.first_activation), split_parts)
        blocks = [b for stage in net.stage_list for b in stage.block_list]
        # only the first block works at the stem's length: later ones are shorter and not the peak
        self.blocks = nn.Sequential(*(Block2d(b, split_parts if i == 0 else 1) for i, b in enumerate(blocks)))
        self.pool = (MeanPool(net.config.emb_dim, Net1D.time_lengths(net.config, window_samples)[-1])
                     if window_samples else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.blocks(self.stem(x))
        return self.pool(features) if self.pool is not None else features.mean(dim=(2, 3))


def to_2d(net: nn.Module, split_parts: int = 1, window_samples: int | None = None) -> Net1D2d:
    """The 2-D form of ``net``; ``split_parts`` > 1 computes the stem's and the first block's
    conv + Swish in that many channel slices (:class:`SplitConvSwish`, for the TFLM arena);
    ``window_samples`` fixes the input length and pools the embedding with :class:`MeanPool`
    (a bias slot for the int8 export), else it is a plain mean (any length)."""
    if not isinstance(net, Net1D):
        raise ValueError(f"to_2d: expected a clef_core Net1D, got {type(net).__name__}")
    return Net1D2d(net.eval(), split_parts, window_samples).eval()
