"""Encoder configuration: the Net1D hyper-parameters and the three published scales.

The scales are the CLEF reference code's ``create_net1d_by_size`` (Nokia-Bell-Labs/ecg-foundation-model,
``clef/baselines/models/CLEF.py``), tabulated in ``shared/reference/clef-method.md``:

========  ====  =====  =======================================  =================  ============  ====
scale     stem  ratio  filters                                  blocks             groups width  emb
========  ====  =====  =======================================  =================  ============  ====
small     32    0.5    32,64,64,128,128,256                     1,1,2,2,2,2        8             256
medium    64    1.0    64,160,160,400,400,1024,1024             2,2,2,3,3,4,4      16            1024
large     128   1.5    128,256,256,512,512,1024,1024,2048,2048  2,3,3,4,4,5,5,6,6  32            2048
========  ====  =====  =======================================  =================  ============  ====

``tiny`` is not from the paper: the wearable student of ``clef distill`` (docs/edge.md, "Wearable
student"): the small layout (same stages and blocks) at half the width, with squeeze-excitation
reduction 4 (``se_reduction``), 95,612 parameters. Run at 250 Hz its first
stage is 1250 x 16 int8 (20 KB per tensor, against 2500 x 32 for the small encoder at 500 Hz),
which keeps the TFLite Micro arena near 100 KiB.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from clef_core.config import require

NORMS = ("none", "batch", "group")


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
    """Everything needed to rebuild a Net1D encoder (stored in checkpoints as ``asdict``).

    ``filters[s]`` / ``blocks[s]``: output channels / number of blocks of stage ``s``; the bottleneck
    width of a block is ``int(filters[s] * ratio)`` and its grouped conv has
    ``filters[s] // groups_width`` groups (as the reference computes them). ``emb_dim`` is
    ``filters[-1]``: the embedding is the time-averaged last feature map, there is no projection head.
    ``norm``: "none" (the paper; no normalisation modules at all), "batch" (BatchNorm1d before each
    activation, where the reference puts it) or "group" (GroupNorm with ``norm_groups`` groups at the
    same places; per-example, so usable with differential privacy).
    """

    scale: str
    stem: int
    ratio: float
    filters: tuple[int, ...]
    blocks: tuple[int, ...]
    groups_width: int
    emb_dim: int
    kernel_size: int = 16
    norm: str = "none"
    norm_groups: int = 8
    in_channels: int = 1
    se_reduction: int = 2  # squeeze-excitation bottleneck = channels // se_reduction (reference: 2)

    def __post_init__(self) -> None:
        # lists come back from JSON/TOML/checkpoints; keep the dataclass hashable and comparable
        object.__setattr__(self, "filters", tuple(int(f) for f in self.filters))
        object.__setattr__(self, "blocks", tuple(int(b) for b in self.blocks))
        _require(self.norm in NORMS, "norm", self.norm, f"one of {', '.join(NORMS)}")
        _require(len(self.filters) >= 1, "filters", self.filters, "at least one stage")
        _require(len(self.filters) == len(self.blocks), "blocks", self.blocks,
                 f"one entry per stage ({len(self.filters)} filters given)")
        _require(all(b >= 1 for b in self.blocks), "blocks", self.blocks, "every stage >= 1 block")
        _require(self.stem >= 1 and self.in_channels >= 1, "stem/in_channels", (self.stem, self.in_channels), ">= 1")
        _require(self.kernel_size >= 1, "kernel_size", self.kernel_size, ">= 1")
        _require(self.ratio > 0, "ratio", self.ratio, "> 0")
        _require(1 <= self.se_reduction <= min(self.filters), "se_reduction", self.se_reduction,
                 f"between 1 and the narrowest stage width {min(self.filters)}")
        _require(self.emb_dim == self.filters[-1], "emb_dim", self.emb_dim,
                 f"equal to filters[-1] = {self.filters[-1]} (no projection head)")
        for s, width in enumerate(self.filters):
            mid, groups = self.mid_channels(s), self.groups(s)
            _require(groups >= 1 and mid >= 1 and mid % groups == 0, f"filters[{s}]", width,
                     f"a width whose bottleneck ({mid} = int({width} * ratio)) splits into "
                     f"{width} // groups_width = {groups} groups")
        if self.norm == "group":
            for channels in self.normalised_widths():
                _require(channels % self.norm_groups == 0, "norm_groups", self.norm_groups,
                         f"a divisor of every normalised width (not of {channels})")

    def mid_channels(self, stage: int) -> int:
        return int(self.filters[stage] * self.ratio)

    def groups(self, stage: int) -> int:
        return self.filters[stage] // self.groups_width

    def normalised_widths(self) -> list[int]:
        """Channel counts that get a norm layer: the stem output, block inputs and bottlenecks."""
        return [self.stem, *self.filters, *(self.mid_channels(s) for s in range(len(self.filters)))]


SCALES: dict[str, dict[str, Any]] = {
    "small": dict(stem=32, ratio=0.5, filters=(32, 64, 64, 128, 128, 256),
                  blocks=(1, 1, 2, 2, 2, 2), groups_width=8, emb_dim=256),
    "medium": dict(stem=64, ratio=1.0, filters=(64, 160, 160, 400, 400, 1024, 1024),
                   blocks=(2, 2, 2, 3, 3, 4, 4), groups_width=16, emb_dim=1024),
    "large": dict(stem=128, ratio=1.5, filters=(128, 256, 256, 512, 512, 1024, 1024, 2048, 2048),
                  blocks=(2, 3, 3, 4, 4, 5, 5, 6, 6), groups_width=32, emb_dim=2048),
    "tiny": dict(stem=16, ratio=0.5, filters=(16, 32, 32, 64, 64, 128),
                 blocks=(1, 1, 2, 2, 2, 2), groups_width=8, emb_dim=128, se_reduction=4),
}

FIELDS = tuple(f.name for f in dataclasses.fields(EncoderConfig))


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The ``[model]`` section: the encoder's ``scale`` and normalisation (``build_encoder(**asdict(model))``)."""

    scale: str = "small"
    norm: str = "none"
    norm_groups: int = 8  # GroupNorm groups when norm = "group"

    def __post_init__(self) -> None:
        require(self.scale in SCALES, "model.scale", self.scale, " | ".join(SCALES))
        require(self.norm in NORMS, "model.norm", self.norm, " | ".join(NORMS))
        require(self.norm_groups >= 1, "model.norm_groups", self.norm_groups, ">= 1")

    def encoder_config(self) -> EncoderConfig:
        """The full :class:`EncoderConfig` of this scale and normalisation."""
        return make_config(**dataclasses.asdict(self))


def make_config(scale: str = "small", norm: str = "none", **overrides: Any) -> EncoderConfig:
    """The config of ``scale`` with ``overrides`` applied. Changing ``filters`` without giving
    ``emb_dim`` makes ``emb_dim = filters[-1]``."""
    if scale not in SCALES:
        raise ValueError(f"encoder scale {scale!r} is unknown (choose {', '.join(SCALES)})")
    unknown = sorted(set(overrides) - set(FIELDS))
    if unknown:
        raise ValueError(f"unknown encoder config key(s) {', '.join(unknown)} (known: {', '.join(FIELDS)})")
    values = {**SCALES[scale], **overrides, "scale": scale, "norm": norm}
    if "filters" in overrides and "emb_dim" not in overrides:
        values["emb_dim"] = int(_seq(overrides["filters"], "filters")[-1])
    return EncoderConfig(**values)


def config_from_dict(config: Mapping[str, Any]) -> EncoderConfig:
    """Inverse of ``dataclasses.asdict`` (e.g. a checkpoint's stored encoder config)."""
    config = dict(config)
    return make_config(config.pop("scale", "small"), config.pop("norm", "none"), **config)


def _seq(value: Any, name: str) -> Sequence[Any]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ValueError(f"encoder config {name}={value!r}: expected a list of integers")
    return value


def _require(ok: bool, name: str, value: Any, expected: str) -> None:
    if not ok:
        raise ValueError(f"encoder config {name}={value!r}: expected {expected}")
