"""A torch Dataset of plain store windows (its own module: building a store needs no torch)."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import Dataset

from clef_core.data.store import ECGStore


class WindowDataset(Dataset):
    """Plain store windows for a DataLoader: ``{"signal": (12, T) float32 mV, "lead_mask": (12,) bool,
    "index": int}``. Safe with ``num_workers > 0``: the store drops its memmap when pickled and maps
    the file again in each worker process (:attr:`ECGStore.signals`)."""

    def __init__(self, store: ECGStore) -> None:
        self.store = store

    def __len__(self) -> int:
        return len(self.store)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {
            "signal": torch.from_numpy(self.store.window(i)),
            "lead_mask": torch.from_numpy(self.store.lead_mask[i].copy()),
            "index": int(i),
        }
