"""The task, in Flower's vocabulary (Flower examples' ``task.py``): the model, the dataset, the
loader and the one training loop, :func:`fit`, that every training path shares -- central
pretraining (:mod:`clef_core.train.loop`), a site's federated round and its DP-SGD round
(:mod:`clef_core.federation.local`, :mod:`clef_core.privacy.dpsgd`), distillation
(:mod:`clef_core.distill`), the supervised control and fine-tuning (:mod:`clef_core.evaluation`).

:func:`fit` owns the epochs (the loader of each, the step budget, the progress bar, the
callbacks); :meth:`clef_core.train.trainer.Trainer.train_epoch` owns the steps (the schedule,
the non-finite check, the statistics); what differs between the paths is what they pass in:
the trainer's criterion and batch unpacking, or a whole step (DP-SGD's Poisson-sampled,
clipped and noised one).

Determinism: the loader of epoch ``e`` shuffles with a generator seeded from ``(train.seed, e)``
and tells the dataset its epoch, so an epoch's batches depend on nothing else (a resumed run
sees the batches an uninterrupted one would).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import DataLoader, Dataset

if TYPE_CHECKING:
    from clef_core.data.augment import ViewConfig
    from clef_core.encoders.config import EncoderConfig
    from clef_core.encoders.net1d import Net1D
    from clef_core.pipeline import PreparedSite
    from clef_core.train.config import TrainConfig
    from clef_core.train.trainer import EpochStats, StepFn, StepInfo, Trainer


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


def fit(
    trainer: Trainer,
    loader: Callable[[int], Iterable[object]],
    *,
    epochs: int,
    max_steps: int = 0,
    lr: float | None = None,
    schedule: bool = True,
    proximal_mu: float = 0.0,
    global_params: Mapping[str, torch.Tensor] | None = None,
    step: StepFn | None = None,
    on_step: Callable[[StepInfo], None] | None = None,
    on_epoch: Callable[[EpochStats], None] | None = None,
    progress: Callable[[int, int], str] | None = None,
) -> list[EpochStats]:
    """Train from ``trainer.epoch`` up to epoch ``epochs`` (exclusive), over ``loader(e)`` in epoch
    ``e``, stopping once the trainer has made ``max_steps`` steps in all (0: no cap); returns the
    statistics of the epochs run. A resumed trainer continues where it stopped.

    ``lr``: a fixed rate for the whole call (the federated round's), else the schedule sets it
    (``schedule=False``: the current rate is kept); ``proximal_mu`` / ``global_params``: FedProx;
    ``step``: a whole optimizer step of its own (DP-SGD); ``on_step`` after every step,
    ``on_epoch`` after every epoch (a metrics line, the resumable state); ``progress(epoch, step)``:
    the label of a progress bar per epoch (none without it)."""
    history: list[EpochStats] = []
    for epoch in range(trainer.epoch, epochs):
        remaining = max_steps - trainer.step if max_steps else None
        if remaining is not None and remaining <= 0:
            break
        batches = loader(epoch)
        bar = _progress_bar(progress(epoch, trainer.step), _length(batches), remaining) if progress else None
        stats = trainer.train_epoch(batches, lr=lr, schedule=schedule, max_steps=remaining, proximal_mu=proximal_mu,
                                    global_params=global_params, step=step, on_step=_with_bar(bar, on_step))
        if bar is not None:
            bar.close()
        history.append(stats)
        if on_epoch is not None:
            on_epoch(stats)
    return history


def _with_bar(bar: Any, on_step: Callable[[StepInfo], None] | None) -> Callable[[StepInfo], None] | None:
    """``on_step`` plus the bar's advance; the bar shows the loss only when it redraws (a device
    read at most every ``mininterval``, not every step)."""
    if bar is None:
        return on_step

    def callback(info: StepInfo) -> None:
        if bar.update(1):
            bar.set_postfix(loss=f"{info.loss:.4f}", lr=f"{info.lr:.2e}")
        if on_step is not None:
            on_step(info)

    return callback


def _progress_bar(desc: str, length: int | None, remaining: int | None) -> Any:
    from tqdm.auto import tqdm

    total = length if remaining is None else (remaining if length is None else min(length, remaining))
    return tqdm(total=total, desc=desc, unit="batch", leave=False, dynamic_ncols=True)


def _length(batches: Iterable[object]) -> int | None:
    try:
        return len(batches)  # type: ignore[arg-type]
    except TypeError:
        return None
