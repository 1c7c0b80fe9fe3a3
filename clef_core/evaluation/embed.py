"""Embeddings of single-lead windows by a frozen encoder (eval mode, no gradient).

Inputs are z-scored per window exactly as in pretraining (``clef_core.data.preprocess.zscore``,
applied after band-pass); z-scoring an already z-scored window changes it by at most the
epsilon, so arrays from ``LabelledWindows.to_numpy`` can be passed as they are.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from clef_core.data.preprocess import zscore


def _first(item: Any) -> torch.Tensor:
    if isinstance(item, dict):
        return item["x"] if "x" in item else item["view1"]
    if isinstance(item, (tuple, list)):
        return item[0]
    return item


def _as_batch(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    x = torch.as_tensor(x, dtype=torch.float32)
    if x.ndim == 2:
        x = x[:, None, :]
    if x.ndim != 3 or x.shape[1] != 1:
        raise ValueError(f"embed: windows must be (N, T) or (N, 1, T), got {tuple(x.shape)}")
    return x


def embed(
    encoder: nn.Module,
    data: np.ndarray | Dataset,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    normalize: bool = True,
    on_batch: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Embeddings (N, emb_dim) float32 of ``data``: an array of windows (N, T) / (N, 1, T) in mV or
    z-scored, or a Dataset whose items are ``(x, ...)``, ``x`` or a dict with ``x``. With
    ``normalize`` every window is z-scored first (as the encoder was trained). The encoder's
    train/eval mode is restored afterwards. ``on_batch(done, total)`` follows the progress."""
    device = torch.device(device) if device is not None else next(encoder.parameters()).device
    was_training = encoder.training
    encoder.eval()
    out: list[np.ndarray] = []
    try:
        with torch.inference_mode():
            if isinstance(data, Dataset):
                loader = DataLoader(data, batch_size=batch_size, shuffle=False, collate_fn=lambda items: torch.stack([_first(i) for i in items]))
                batches = (b for b in loader)
            else:
                arr = np.asarray(data)
                batches = (arr[i : i + batch_size] for i in range(0, len(arr), batch_size))
            for batch in batches:
                x = np.asarray(batch, dtype=np.float32) if not isinstance(batch, torch.Tensor) else batch.numpy()
                if normalize:
                    x = zscore(x)
                out.append(encoder(_as_batch(x).to(device)).float().cpu().numpy())
                if on_batch is not None:
                    on_batch(sum(len(o) for o in out), len(data))
    finally:
        encoder.train(was_training)
    emb_dim = int(getattr(encoder, "emb_dim", 0))
    return np.concatenate(out) if out else np.zeros((0, emb_dim), np.float32)
