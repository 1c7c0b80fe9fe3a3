"""The task, in Flower's vocabulary (Flower examples' ``task.py``): the model, the dataset and the
loader that every training path shares -- central pretraining, a site's federated round, DP-SGD,
distillation, the supervised control and the evaluation studies.

Determinism: the loader of epoch ``e`` shuffles with a generator seeded from ``(train.seed, e)``
and tells the dataset its epoch, so an epoch's batches depend on nothing else (a resumed run
sees the batches an uninterrupted one would).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch.utils.data import DataLoader, Dataset

if TYPE_CHECKING:
    from clef_core.data.augment import ViewConfig
    from clef_core.encoders.config import EncoderConfig
    from clef_core.encoders.net1d import Net1D
    from clef_core.pipeline import PreparedSite
    from clef_core.train.config import TrainConfig


def build_model(model: EncoderConfig) -> Net1D:
    """A randomly initialised encoder of ``[model]`` (``make_config(**cfg["model"])``); it draws from
    torch's global generator, so seed first (:func:`clef_core.train.trainer.seed_everything`)."""
    from clef_core.encoders.net1d import Net1D

    return Net1D(model)


def make_dataset(views: ViewConfig, site: PreparedSite, seed: int) -> Dataset:
    """``PretrainDataset`` over the site, with the noise bank of ``[views]`` at the store's rate."""
    from clef_core.data.datasets import PretrainDataset
    from clef_core.data.noise import NoiseBank

    bank = NoiseBank(sample_rate=site.store.preprocess["sample_rate"], noise_dir=views.noise_dir)
    return PretrainDataset(site.store, site.clinical, views, bank, seed=seed)


def make_loader(dataset: Dataset, train_cfg: TrainConfig, epoch: int) -> DataLoader:
    """A shuffled loader whose order depends only on (seed, epoch); the dataset is told the epoch
    when it supports ``set_epoch``."""
    if hasattr(dataset, "set_epoch"):
        dataset.set_epoch(epoch)
    generator = torch.Generator().manual_seed(train_cfg.seed * 1_000_003 + epoch)
    return DataLoader(
        dataset,
        batch_size=train_cfg.batch_size,
        shuffle=True,
        generator=generator,
        num_workers=train_cfg.num_workers,
        persistent_workers=False,
        pin_memory=torch.cuda.is_available(),
    )
