"""Central CLEF pretraining: epochs over one prepared site, resumable, logged, checkpointed.

A run folder holds
  train_state.pt   the :class:`~clef_core.train.trainer.Trainer` state after the last whole epoch
                   (written atomically every epoch; a new call resumes from it)
  metrics.jsonl    one JSON object per epoch ({"kind": "epoch", "epoch", "step", "train_loss",
                   "lr", "seconds", ...}) and, with ``train.log_every = k``, one per k steps
                   ({"kind": "step", ...})
  final_model.pt   the encoder in the clef model format (:mod:`clef_core.checkpoint`)
  status.json      running / complete / failed / interrupted, with the epochs and steps done

(:mod:`clef_core.run_folder`: on resume, metrics lines the state does not cover are dropped.)

Determinism: the encoder is initialised from ``train.seed``; epoch e shuffles with a generator
seeded from (seed, e), and the python/numpy/torch RNG states travel in ``train_state.pt``, so
"2 epochs" and "1 epoch, stop, resume, 1 more" give the same weights on CPU.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from pathlib import Path
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import torch

from clef_core.checkpoint import save_model, to_plain
from clef_core.data.augment import ViewConfig
from clef_core.encoders.config import make_config
from clef_core.run_folder import MetricsLog, RunFolder, covered, open_metrics_log
from clef_core.task import build_model, fit, make_dataset, make_loader
from clef_core.train.config import LossConfig, TrainConfig
from clef_core.train.trainer import EpochStats, StepInfo, Trainer, seed_everything

if TYPE_CHECKING:
    from clef_core.pipeline import PreparedSite

STATE_FILE = "train_state.pt"
FINAL_MODEL = "final_model.pt"


@dataclasses.dataclass
class PretrainResult:
    run_dir: Path
    final_model: Path
    epochs: int  # epochs completed in total (including resumed ones)
    steps: int
    final_loss: float  # mean loss of the last epoch run (NaN when this call ran none)
    seconds: float  # wall time of this call
    resumed_from_epoch: int | None
    history: list[EpochStats]  # the epochs run by this call


def pretrain(
    cfg: dict[str, Any],
    *,
    run_dir: str | Path,
    site: PreparedSite,
    resume: bool = True,
    progress: bool = True,
) -> PretrainResult:
    """Train ``[model]`` on ``site`` for ``train.epochs`` epochs (or until ``train.max_steps``
    steps), continuing from ``run_dir/train_state.pt`` when ``resume`` and it exists.

    Central pretraining applies no differential privacy: a config asking for it is refused
    rather than silently trained without it (DP runs at each site: clef simulate, deployment)."""
    refuse_privacy(cfg)
    started = time.perf_counter()
    run_dir = Path(run_dir)
    folder = RunFolder(run_dir)
    train_cfg = TrainConfig(**cfg["train"])
    loss_cfg = LossConfig(**cfg["loss"])
    state_path = run_dir / STATE_FILE

    seed_everything(train_cfg.seed)
    trainer = Trainer(build_model(make_config(**cfg["model"])), loss_cfg, train_cfg)
    resumed_from = None
    state = folder.resume_state(STATE_FILE, resume=resume)
    if state is not None:
        check_resumable(state, train_cfg, loss_cfg, where=str(state_path))
        trainer.load_state_dict(state, where=str(state_path))
        resumed_from = trainer.epoch
        folder.truncate_metrics(covered(trainer.epoch, trainer.step))
    with folder.tracking_status(epoch=trainer.epoch, step=trainer.step, epochs=train_cfg.epochs) as status:
        dataset = make_dataset(ViewConfig(**cfg["views"]), site, train_cfg.seed)
        if len(dataset) == 0:
            raise ValueError(f"{site.root}: no usable patients to pretrain on")

        history = run_epochs(trainer, dataset, train_cfg, metrics_path=folder.metrics, state_path=state_path,
                             progress=progress, label=lambda epoch, step: f"epoch {epoch + 1}/{train_cfg.epochs}")

        final_loss = history[-1].loss if history else folder.last_metric("train_loss", kind="epoch")
        final = save_model(
            run_dir / FINAL_MODEL,
            trainer.model,
            preprocess=model_preprocess(site),
            provenance=pretrain_provenance(cfg, site, trainer, final_loss, dataset),
        )
        status.update(epoch=trainer.epoch, step=trainer.step, final_model=str(final))
    return PretrainResult(
        run_dir=run_dir,
        final_model=final,
        epochs=trainer.epoch,
        steps=trainer.step,
        final_loss=final_loss,
        seconds=time.perf_counter() - started,
        resumed_from_epoch=resumed_from,
        history=history,
    )


# [train] keys that may change between a run and its resumption (how long, where, how logged)
RESUMABLE_CHANGES = frozenset({"epochs", "max_steps", "num_workers", "device", "log_every"})


def check_resumable(state: Mapping[str, object], train_cfg: TrainConfig, loss_cfg: LossConfig, where: str) -> None:
    """Refuse to continue a run with other loss or optimisation settings than it started with."""
    saved_train, saved_loss = _saved_section(state, "train_config"), _saved_section(state, "loss_config")
    changed = [f"train.{k}: {saved_train.get(k)!r} -> {v!r}" for k, v in train_cfg.to_dict().items()
               if k not in RESUMABLE_CHANGES and saved_train.get(k) != v]
    defaults = LossConfig().to_dict()  # keys added later: an older state was trained at their default
    changed += [f"loss.{k}: {saved_loss.get(k, defaults[k])!r} -> {v!r}" for k, v in loss_cfg.to_dict().items()
                if saved_loss.get(k, defaults[k]) != v]
    if changed:
        raise ValueError(f"{where} was trained with other settings ({'; '.join(changed)}); "
                         "start over (--no-resume) or use another run folder")


def _saved_section(state: Mapping[str, object], key: str) -> Mapping[str, object]:
    section = state.get(key)
    return section if isinstance(section, Mapping) else {}


def model_preprocess(site: PreparedSite) -> dict[str, Any]:
    """The store's preprocessing, verbatim (``PreprocessConfig.from_dict`` reads it back); the
    per-view input (one lead, z-scored per window) is the checkpoint's default ``input`` spec."""
    return to_plain(dict(site.store.preprocess), "store.preprocess")


def run_epochs(
    trainer: Trainer,
    dataset: torch.utils.data.Dataset,
    train_cfg: TrainConfig,
    *,
    metrics_path: Path,
    state_path: Path,
    progress: bool,
    label: Callable[[int, int], str],
) -> list[EpochStats]:
    """:func:`clef_core.task.fit` in a run folder (pretraining and distillation): from the trainer's
    epoch to ``train_cfg.epochs`` (stopping at ``train_cfg.max_steps`` when set), one metrics line
    per epoch (and per ``log_every`` steps) and the resumable state saved after every epoch."""
    with open_metrics_log(metrics_path) as metrics:
        def on_epoch(stats: EpochStats) -> None:
            metrics.append({"kind": "epoch", "epoch": stats.epoch, "step": stats.step, "train_loss": stats.loss,
                            "lr": stats.lr, "seconds": round(stats.seconds, 4), "examples": stats.examples,
                            "steps": stats.steps, "grad_norm": stats.grad_norm,
                            "skipped_empty_batches": stats.skipped_empty_batches, "time": _now()})
            trainer.save_state(state_path)

        return fit(trainer, lambda epoch: make_loader(dataset, train_cfg, epoch), epochs=train_cfg.epochs,
                   max_steps=train_cfg.max_steps, on_step=_on_step(metrics, train_cfg.log_every), on_epoch=on_epoch,
                   progress=label if progress else None)


def refuse_privacy(cfg: dict[str, Any]) -> None:
    mode = cfg.get("privacy", {}).get("mode", "off")
    if mode != "off":
        raise ValueError(
            f"privacy.mode = {mode!r} is not applied by central pretraining: differential privacy runs at each "
            f"site (clef simulate, or a deployed site); set privacy.mode = \"off\" to pretrain centrally")


def pretrain_provenance(
    cfg: dict[str, Any],
    site: PreparedSite,
    trainer: Trainer,
    final_loss: float,
    dataset: torch.utils.data.Dataset,
) -> dict[str, Any]:
    noise = getattr(dataset, "noise_bank", None)
    return {
        "kind": "central-pretrain",
        "data": {**site.summary(), "patients_used": len(dataset),
                 "records_without_metadata": getattr(dataset, "n_without_metadata", None)},
        "loss": trainer.loss_cfg.to_dict(),
        "train": trainer.train_cfg.to_dict(),
        "model": dict(cfg["model"]),
        "views": dict(cfg["views"]),
        "noise": noise.describe() if hasattr(noise, "describe") else None,
        "risk": dict(cfg.get("risk", {})),
        "privacy": None,
        "result": {"epochs": trainer.epoch, "steps": trainer.step, "final_loss": final_loss},
        "device": str(trainer.device),
        "torch_version": torch.__version__,
    }


def _on_step(metrics: MetricsLog, log_every: int) -> Callable[[StepInfo], None] | None:
    if not log_every:
        return None

    def callback(info: StepInfo) -> None:
        if info.step % log_every == 0:
            metrics.append({"kind": "step", "epoch": info.epoch + 1, "step": info.step, "train_loss": info.loss,
                            "lr": info.lr, "grad_norm": info.grad_norm})

    return callback


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
