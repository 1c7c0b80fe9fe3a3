"""Distillation of a CLEF encoder (the teacher) into a small student on unlabelled ECG.

The student (default scale ``tiny``, clef_core.encoders) reads the same single-lead window as
the teacher at a lower rate (``[distill] sample_rate``, e.g. 250 Hz for a 500 Hz teacher) and
learns to predict the teacher's embedding of that window. Per training view ``x`` (one lead,
augmented and z-scored at the teacher's rate, as in pretraining: :class:`PretrainDataset`):

    target  t = (teacher(x) - mu) / s                 mu, s: fixed before training
    student p = W student(zscore(decimate(x))) + b    W: a linear projection to the teacher's
                                                      width, used only here (not exported)
    loss      = mean over views and dimensions of (p - t)^2

``mu`` is the teacher's mean embedding and ``s`` the root-mean-square of its centred entries,
both over ``stat_views`` views drawn before training. Why this loss: a linear probe on the
teacher computes ``w . teacher(x) + c``; if ``p ~= t`` it equals ``s w . W student(x) + c'``,
a linear probe on the student, so matching the centred, globally scaled embedding is what
preserves linear-probe quality, and the student's width may differ from the teacher's. The
centring keeps the loss off the direction every ECG shares (raw cosine between unrelated
windows is ~0.87, edge/export/gate.py) and the one scalar ``s`` weighs every teacher
dimension by its own spread (a per-dimension standardisation would inflate noise dimensions).

``decimate`` is ``scipy.signal.resample_poly(x, 1, q)`` as a fixed strided convolution
(Kaiser-windowed sinc, beta 5, half length 10 q, unit DC gain; exact, tested). The device
instead resamples the raw record and band-passes at the student rate (edge/runtime): both are
the same linear band-limited map up to the Butterworth filter's bilinear warping, and the
student's export gate and evaluation use the device order.

Training reuses the pretraining machinery: :class:`DistillTrainer` is a
:class:`~clef_core.train.Trainer` whose model is :class:`DistillModel` (teacher frozen inside)
and whose loss is the one above, so AdamW, the cosine schedule, clipping, the atomic state file
and exact resumption are the same code. Run folder (:mod:`clef_core.run_folder`):
``distill_state.pt``, ``metrics.jsonl``, ``status.json``, ``student.pt`` (the clef model format,
with the student's own preprocess: its sample rate).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from clef_core.checkpoint import load_model, save_model, to_plain
from clef_core.data.augment import ViewConfig
from clef_core.run_folder import RunFolder, covered
from clef_core.task import make_dataset
from clef_core.train.config import LossConfig, TrainConfig
from clef_core.train.loop import run_epochs
from clef_core.train.trainer import EpochStats, Trainer, seed_everything

if TYPE_CHECKING:
    from clef_core.pipeline import PreparedSite

STATE_FILE = "distill_state.pt"
STUDENT_FILE = "student.pt"
# [distill] keys that may change between a run and its resumption
RESUMABLE_CHANGES = frozenset({"device", "log_every", "export", "calibration"})


@dataclasses.dataclass(frozen=True)
class DistillConfig:
    """The ``[distill]`` config section (configs/default.toml documents each key)."""

    scale: str = "tiny"
    sample_rate: int = 250
    steps: int = 600
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 5e-4
    grad_clip: float = 1.0
    seed: int = 0
    stat_views: int = 256
    device: str = "auto"
    log_every: int = 0
    export: bool = True
    calibration: str = ""

    def __post_init__(self) -> None:
        for key, ok in (("sample_rate", self.sample_rate > 0), ("steps", self.steps >= 1),
                        ("batch_size", self.batch_size >= 1), ("lr", self.lr > 0),
                        ("weight_decay", self.weight_decay >= 0), ("grad_clip", self.grad_clip >= 0),
                        ("stat_views", self.stat_views >= 2), ("log_every", self.log_every >= 0)):
            if not ok:
                raise ValueError(f"distill.{key} = {getattr(self, key)!r} is out of range")

    def train_config(self, epochs: int) -> TrainConfig:
        """The optimisation of ``epochs`` passes: one cosine decay from ``lr`` over all of them."""
        return TrainConfig(batch_size=self.batch_size, lr=self.lr, weight_decay=self.weight_decay, epochs=epochs,
                           max_steps=self.steps, schedule="sgdr", warm_restart_t0=max(1, epochs), warm_restart_tmult=1,
                           grad_clip=self.grad_clip, seed=self.seed, device=self.device, log_every=self.log_every)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def decimation_factor(teacher_rate: float, student_rate: float) -> int:
    """``q = teacher_rate / student_rate``; only integer factors are supported (e.g. 500 -> 250, 125, 100)."""
    q = teacher_rate / student_rate
    if student_rate <= 0 or q < 1 or abs(q - round(q)) > 1e-9:
        raise ValueError(f"distill.sample_rate = {student_rate:g} Hz: the teacher's {teacher_rate:g} Hz must be an "
                         f"integer multiple of it (e.g. {teacher_rate / 2:g} or {teacher_rate / 4:g} Hz)")
    return int(round(q))


def student_preprocess(teacher_preprocess: dict[str, Any], sample_rate: int) -> dict[str, Any]:
    """The teacher's preprocessing with the student's rate (validated: the band must fit below Nyquist)."""
    from clef_core.data.preprocess import PreprocessConfig

    cfg = PreprocessConfig.from_dict(dict(teacher_preprocess))
    return dataclasses.replace(cfg, sample_rate=int(sample_rate)).to_dict()


class Decimate(nn.Module):
    """(N, 1, T) -> (N, 1, ceil(T / q)): ``scipy.signal.resample_poly(x, 1, q, axis=-1)`` exactly."""

    def __init__(self, q: int) -> None:
        super().__init__()
        from scipy.signal import firwin

        self.q = int(q)
        half = 10 * self.q
        h = firwin(2 * half + 1, 1.0 / self.q, window=("kaiser", 5.0)) if self.q > 1 else np.ones(1)
        self.pad = half if self.q > 1 else 0
        self.register_buffer("fir", torch.tensor(h, dtype=torch.float32).view(1, 1, -1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.q == 1:
            return x
        return nn.functional.conv1d(x, self.fir, stride=self.q, padding=self.pad)


def zscore_torch(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """``clef_core.data.preprocess.zscore`` on the last axis of a tensor (population std)."""
    mean = x.mean(dim=-1, keepdim=True)
    return (x - mean) / (x.std(dim=-1, keepdim=True, unbiased=False) + eps)


class DistillModel(nn.Module):
    """Teacher (frozen, always in eval mode) + student + projection. ``forward`` takes the views at
    the teacher's rate and returns ``cat([projected student, target], dim=1)``, (N, 2 D_teacher)."""

    def __init__(self, teacher: nn.Module, student: nn.Module, q: int) -> None:
        super().__init__()
        self.teacher = teacher.eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.student = student
        self.project = nn.Linear(int(student.emb_dim), int(teacher.emb_dim))
        self.decimate = Decimate(q)
        self.register_buffer("target_mean", torch.zeros(int(teacher.emb_dim)))
        self.register_buffer("target_scale", torch.ones(()))

    def train(self, mode: bool = True) -> DistillModel:
        super().train(mode)
        self.teacher.eval()
        return self

    def student_input(self, x: torch.Tensor) -> torch.Tensor:
        return zscore_torch(self.decimate(x))

    @torch.no_grad()
    def target(self, x: torch.Tensor) -> torch.Tensor:
        return (self.teacher(x) - self.target_mean) / self.target_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.project(self.student(self.student_input(x))), self.target(x)], dim=1)

    @torch.no_grad()
    def fit_target(self, views: torch.Tensor, batch: int = 64) -> None:
        """Set ``mu`` and ``s`` from the teacher's embeddings of ``views`` (N, 1, T)."""
        z = torch.cat([self.teacher(views[i : i + batch]) for i in range(0, len(views), batch)]).double()
        mean = z.mean(0)
        self.target_mean.copy_(mean.float())
        self.target_scale.fill_(float((z - mean).pow(2).mean().sqrt().clamp_min(1e-8)))


def distill_loss(z: torch.Tensor) -> torch.Tensor:
    """Mean squared error between the two halves of ``DistillModel``'s output."""
    pred, target = z.chunk(2, dim=1)
    return (pred - target).pow(2).mean()


def distill_criterion(z: torch.Tensor, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """:func:`distill_loss` as the trainer's criterion (the target is inside ``z``; the batch adds nothing)."""
    return distill_loss(z)


def centred_agreement(z: torch.Tensor) -> tuple[float, float]:
    """(mean cosine, R^2) of the projected student against the centred target over a set of views:
    R^2 = 1 - ||p - t||^2 / ||t||^2, the fraction of the teacher's centred embedding explained."""
    pred, target = z.double().chunk(2, dim=1)
    cos = nn.functional.cosine_similarity(pred, target, dim=1)
    r2 = 1.0 - float((pred - target).pow(2).sum() / target.pow(2).sum())
    return float(cos.mean()), r2


class DistillTrainer(Trainer):
    """A :class:`Trainer` over a :class:`DistillModel` with :func:`distill_loss`; its state also
    records the distillation settings so that a resumption with other settings is refused."""

    def __init__(self, model: DistillModel, train_cfg: TrainConfig, settings: dict[str, Any],
                 device: str | torch.device | None = None) -> None:
        super().__init__(model, LossConfig(), train_cfg, device, criterion=distill_criterion)
        self.settings = settings

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "distill": self.settings}


@dataclasses.dataclass
class DistillResult:
    run_dir: Path
    student: Path
    epochs: int
    steps: int
    final_loss: float  # mean loss of the last epoch this call ran (NaN when it ran none)
    agreement: dict[str, float]  # centred cosine and R^2 on views not used for training
    seconds: float
    resumed_from_step: int | None
    history: list[EpochStats]


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def _views(dataset: Any, n: int, epoch: int) -> torch.Tensor:
    """Both views of the first ``ceil(n / 2)`` patients at dataset epoch ``epoch``, (M, 1, T)."""
    dataset.set_epoch(epoch)
    items = [dataset[i] for i in range(min(len(dataset), -(-n // 2)))]
    return torch.cat([torch.stack([it["view1"] for it in items]), torch.stack([it["view2"] for it in items])])


def distill(
    cfg: dict[str, Any],
    *,
    teacher_path: str | Path,
    run_dir: str | Path,
    site: PreparedSite,
    resume: bool = True,
    progress: bool = True,
) -> DistillResult:
    """Distil the encoder of ``teacher_path`` into a ``[distill]`` student on ``site`` (its store
    must be at the teacher's rate), continuing from ``run_dir/distill_state.pt`` when ``resume``."""
    from clef_core.encoders import build_encoder

    started = time.perf_counter()
    dcfg = DistillConfig(**cfg["distill"])
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    teacher_path = Path(teacher_path)
    teacher = load_model(teacher_path)
    t_rate = float(teacher.preprocess.get("sample_rate", 0))
    s_rate = float(site.store.preprocess["sample_rate"])
    if abs(t_rate - s_rate) > 1e-9:
        raise ValueError(f"{site.root}: the store is at {s_rate:g} Hz but the teacher {teacher_path} was trained "
                         f"at {t_rate:g} Hz; prepare the site with the teacher's [preprocess]")
    q = decimation_factor(t_rate, dcfg.sample_rate)
    preprocess = student_preprocess(teacher.preprocess, dcfg.sample_rate)

    seed_everything(dcfg.seed)
    student = build_encoder(dcfg.scale)
    model = DistillModel(teacher.encoder, student, q)
    dataset = make_dataset(ViewConfig(**cfg["views"]), site, dcfg.seed)
    if len(dataset) == 0:
        raise ValueError(f"{site.root}: no usable patients to distil on")
    per_epoch = math.ceil(len(dataset) / dcfg.batch_size)
    train_cfg = dcfg.train_config(math.ceil(dcfg.steps / per_epoch))
    settings = {"distill": {k: v for k, v in dcfg.to_dict().items() if k not in RESUMABLE_CHANGES},
                "teacher_sha256": file_digest(teacher_path), "views": dict(cfg["views"]),
                "patients": len(dataset)}
    trainer = DistillTrainer(model, train_cfg, to_plain(settings), device=dcfg.device)
    folder, state_path = RunFolder(run_dir), run_dir / STATE_FILE
    resumed_from = None
    state = folder.resume_state(STATE_FILE, resume=resume)
    if state is not None:
        if state.get("distill") != trainer.settings:
            raise ValueError(f"{state_path} was distilled with other settings, teacher or data "
                             f"({state.get('distill')} vs {trainer.settings}); start over (--no-resume) or use another folder")
        trainer.load_state_dict(state, where=str(state_path))
        resumed_from = trainer.step
        folder.truncate_metrics(covered(trainer.epoch, trainer.step))
    else:
        model.fit_target(_views(dataset, dcfg.stat_views, epoch=0))

    with folder.tracking_status(step=trainer.step, steps=dcfg.steps) as status:
        history = run_epochs(trainer, dataset, train_cfg, metrics_path=folder.metrics, state_path=state_path,
                             progress=progress, label=lambda epoch, step: f"distil {step}/{dcfg.steps} steps")

        # agreement on augmentations never trained on (a dataset epoch past the run's)
        model.eval()
        with torch.no_grad():
            views = _views(dataset, min(dcfg.stat_views, 128), epoch=10**6).to(trainer.device)
            z = torch.cat([model(views[i : i + 64]) for i in range(0, len(views), 64)])
        cos, r2 = centred_agreement(z.cpu())
        final_loss = history[-1].loss if history else float("nan")
        provenance = {
            "kind": "distill",
            "teacher": {"checkpoint": str(teacher_path), "sha256": settings["teacher_sha256"],
                        "encoder": teacher.encoder_config, "sample_rate": t_rate,
                        "provenance": {k: teacher.provenance.get(k) for k in ("kind", "loss", "result")}},
            "distill": dcfg.to_dict(),
            "loss": "mse(W student + b, (teacher - mu) / s) (clef_core/distill.py)",
            "target": {"scale": float(model.target_scale), "stat_views": dcfg.stat_views},
            "data": {**site.summary(), "patients_used": len(dataset)},
            "views": dict(cfg["views"]),
            "result": {"epochs": trainer.epoch, "steps": trainer.step, "final_loss": final_loss,
                       "heldout_centred_cosine": cos, "heldout_r2": r2},
            "device": str(trainer.device),
            "torch_version": torch.__version__,
        }
        student_path = save_model(run_dir / STUDENT_FILE, model.student, preprocess=preprocess, provenance=provenance)
        status.update(step=trainer.step, student=str(student_path))
    return DistillResult(run_dir=run_dir, student=student_path, epochs=trainer.epoch, steps=trainer.step,
                         final_loss=final_loss, agreement={"centred_cosine": cos, "r2": r2},
                         seconds=time.perf_counter() - started, resumed_from_step=resumed_from, history=history)
