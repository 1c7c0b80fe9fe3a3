"""Net1D: the 1-D ResNeXt with squeeze-excitation of ECGFounder and CLEF.

Architecture (shared/reference/clef-method.md; reference: Hong et al.'s net1d as used in
Nokia-Bell-Labs/ecg-foundation-model ``clef/baselines/models/CLEF.py``):

    stem:   same-conv(k, stride 2, in -> stem) -> norm -> Swish
    stage s (filters[s] channels, blocks[s] blocks; the first block strides 2, the others 1):
      block: [norm -> Swish]  (skipped by the network's very first block)
             -> 1x1 conv (-> mid = int(filters * ratio)) -> norm -> Swish
             -> grouped same-conv k (stride, groups = filters // groups_width) -> norm -> Swish
             -> 1x1 conv (-> filters) -> squeeze-excitation
             + shortcut: same max-pool 2 (zero padded) when striding, then zero channels
               ((out - in) // 2 before, the rest after) when the width grows
    head:   mean over time -> embedding (B, filters[-1]); no projection head.

Time length: T -> ceil(T/2) (stem) -> halved (ceil) by every stage. Norm placement follows the
reference's BatchNorm (before each activation); with ``norm="none"`` the network holds no norm
parameters at all (the reference builds BatchNorm modules and never uses them). Dropout, off in the
reference (``use_do=False``), is not built.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from clef_core.encoders.config import EncoderConfig
from clef_core.encoders.layers import SamePadConv1d, SamePadMaxPool1d, SqueezeExcitation, Swish, make_norm


class BasicBlock(nn.Module):
    """Pre-activation bottleneck block with grouped conv and squeeze-excitation (see module doc)."""

    def __init__(self, in_channels: int, out_channels: int, mid_channels: int, *, kernel_size: int,
                 stride: int, groups: int, is_first_block: bool, norm: str, norm_groups: int,
                 se_reduction: int = 2):
        super().__init__()
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride
        self.is_first_block = is_first_block
        if is_first_block:  # the stem already ended with an activation
            self.pre: nn.Module = nn.Identity()
        else:
            self.pre = nn.Sequential(make_norm(norm, in_channels, norm_groups), Swish())
        self.conv1 = SamePadConv1d(in_channels, mid_channels, 1)
        self.norm2 = make_norm(norm, mid_channels, norm_groups)
        self.activation2 = Swish()
        self.conv2 = SamePadConv1d(mid_channels, mid_channels, kernel_size, stride=stride, groups=groups)
        self.norm3 = make_norm(norm, mid_channels, norm_groups)
        self.activation3 = Swish()
        self.conv3 = SamePadConv1d(mid_channels, out_channels, 1)
        self.se = SqueezeExcitation(out_channels, se_reduction)
        self.shortcut_pool = SamePadMaxPool1d(stride) if stride > 1 else nn.Identity()
        extra = out_channels - in_channels
        if extra < 0:
            raise ValueError(f"a block cannot narrow its width ({in_channels} -> {out_channels} channels)")
        self.channel_pad = (0, 0, extra // 2, extra - extra // 2)  # F.pad on dim -2 (channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(self.pre(x))
        out = self.conv2(self.activation2(self.norm2(out)))
        out = self.conv3(self.activation3(self.norm3(out)))
        out = self.se(out)
        identity = self.shortcut_pool(x)
        if self.channel_pad != (0, 0, 0, 0):
            identity = F.pad(identity, self.channel_pad)
        return out + identity


class BasicStage(nn.Module):
    """``blocks`` blocks of one width; the first strides 2 and takes the previous width."""

    def __init__(self, cfg: EncoderConfig, stage: int, in_channels: int, stride: int = 2):
        super().__init__()
        width = cfg.filters[stage]
        self.block_list = nn.ModuleList(
            BasicBlock(
                in_channels if b == 0 else width,
                width,
                cfg.mid_channels(stage),
                kernel_size=cfg.kernel_size,
                stride=stride if b == 0 else 1,
                groups=cfg.groups(stage),
                is_first_block=stage == 0 and b == 0,
                norm=cfg.norm,
                norm_groups=cfg.norm_groups,
                se_reduction=cfg.se_reduction,
            )
            for b in range(cfg.blocks[stage])
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.block_list:
            x = block(x)
        return x


class Net1D(nn.Module):
    """(B, in_channels, T) -> (B, emb_dim) ECG encoder. Build it with ``build_encoder``."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.config = cfg
        self.emb_dim = cfg.emb_dim
        self.first_conv = SamePadConv1d(cfg.in_channels, cfg.stem, cfg.kernel_size, stride=2)
        self.first_norm = make_norm(cfg.norm, cfg.stem, cfg.norm_groups)
        self.first_activation = Swish()
        widths = (cfg.stem, *cfg.filters)
        self.stage_list = nn.ModuleList(BasicStage(cfg, s, widths[s]) for s in range(len(cfg.filters)))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map (B, emb_dim, ceil(T / 2**(1 + n_stages)))."""
        out = self.first_activation(self.first_norm(self.first_conv(x)))
        for stage in self.stage_list:
            out = stage(out)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x).mean(dim=-1)

    @staticmethod
    def time_lengths(cfg: EncoderConfig, length: int) -> list[int]:
        """Time lengths after the stem and after each stage for an input of ``length`` samples."""
        lengths = [-(-length // 2)]
        for _ in cfg.filters:
            lengths.append(-(-lengths[-1] // 2))
        return lengths
