"""ECG encoders: Net1D at the CLEF paper's three scales, and a `tiny` wearable student scale.

>>> enc = build_encoder("small")               # (B, 1, T) -> (B, 256)
>>> enc.config.emb_dim, enc.emb_dim
(256, 256)
>>> again = encoder_from_config(dataclasses.asdict(enc.config))   # e.g. from a checkpoint

Parameter counts (``count_parameters``): small 0.443M (norm="none"), 0.448M (norm="batch", the
reference's published size, which counts its unused BatchNorm parameters); medium 30.7M; large 296M.
Build large on the meta device to count it without allocating: ``with torch.device("meta"): ...``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from clef_core.encoders.settings import NORMS, SCALES, EncoderConfig, config_from_dict, make_config
from clef_core.encoders.net1d import Net1D


def build_encoder(scale: str = "small", norm: str = "none", **overrides: Any) -> Net1D:
    """A randomly initialised Net1D of ``scale`` (small | medium | large | tiny) with ``norm`` (none | batch |
    group); ``overrides`` replace any :class:`EncoderConfig` field (e.g. ``norm_groups=4``). The result
    maps (B, in_channels=1, T) to (B, emb_dim) and exposes ``.config`` and ``.emb_dim``."""
    return Net1D(make_config(scale, norm, **overrides))


def encoder_from_config(config: Mapping[str, Any] | EncoderConfig) -> Net1D:
    """Rebuild an encoder (random weights) from ``asdict(encoder.config)`` or the dataclass itself."""
    if isinstance(config, EncoderConfig):
        return Net1D(config)
    return Net1D(config_from_dict(config))


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements (works on meta-device modules, which hold no memory)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


__all__ = [
    "NORMS",
    "SCALES",
    "EncoderConfig",
    "Net1D",
    "build_encoder",
    "count_parameters",
    "encoder_from_config",
]
