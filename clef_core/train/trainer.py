"""The one training step/epoch, under every training path (:func:`clef_core.task.fit` runs its epochs).

A :class:`Trainer` owns a model, its AdamW optimizer, a learning-rate schedule
(``CosineAnnealingWarmRestarts``, Loshchilov & Hutter 2017), its criterion and the mixed
precision of its device (:func:`autocast_dtype`). One call of :meth:`Trainer.train_epoch` runs
over a loader; by default (CLEF pretraining) of ``PretrainDataset`` batches (``view1``,
``view2``: (N, 1, T); ``risk``, ``completeness``: (N,)): it embeds the 2N views (rows i and i+N
are patient i's two views) and minimises the CLEF loss (or NT-Xent, ``loss.kind = "ntxent"``).
Other paths pass their own ``criterion`` (outputs, batch) -> loss and ``unpack`` (the model's
input of a batch), or a whole ``step`` (DP-SGD).

Host reads: losses and gradient norms stay on the device, summed there (in float64, as the
Python floats they replace) and read at the end of an epoch, at ``train.log_every`` points and
when a callback asks for a value. On the CPU a read costs nothing, so a non-finite loss is
caught before the optimizer step touches a weight; on a GPU it is caught at the next log point
or epoch end, naming the first non-finite step (the run's saved state predates it).

Learning rate: without ``lr`` the schedule sets it before every batch: ``train.schedule =
"cosine"`` (default) a linear warm-up then one cosine to 0 over the run's steps
(:func:`warmup_cosine`; the run is ``train.max_steps`` long, else ``epochs x len(loader)``);
``"sgdr"`` (the paper) ``eta(t)``, ``t = scheduled_epochs + i / len(loader)`` (PyTorch's
documented fractional stepping; ``T_0``/``T_mult`` in epochs). With ``lr`` given -- the
federated server sets the rate per round -- that rate is used unchanged for the whole call and
the schedule is neither read nor advanced: ``scheduled_epochs`` counts only scheduler-driven
calls, so a later call without ``lr`` continues the schedule where it stopped.

FedProx (Li et al. 2020): with ``proximal_mu > 0`` the minimised objective is
``loss + (mu / 2) * ||w - w_global||^2`` over the trainable parameters; the reported loss is
the task loss alone, the proximal term is reported separately. With a differentially private
optimizer (Opacus) the proximal gradient is applied as a separate, data-independent step after
the private one (see :meth:`Trainer._decoupled_proximal_step`).
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from clef_core.atomic import atomic_torch_save
from clef_core.checkpoint import strip_prefix, unwrap
from clef_core.placebo import placebo_inputs
from clef_core.train.config import LossConfig, TrainConfig

STATE_FORMAT = "clef-train-state"
STATE_VERSION = 1
BATCH_KEYS = ("view1", "view2", "risk", "completeness")


class NonFiniteLossError(FloatingPointError):
    """The loss (or, without mixed precision, the gradient) became NaN/inf; no weights were updated."""


@dataclasses.dataclass
class EpochStats:
    """What one :meth:`Trainer.train_epoch` call did. ``loss`` is the mean task loss over its
    optimizer steps (NaN when it made none)."""

    loss: float
    steps: int
    examples: int
    seconds: float
    skipped_empty_batches: int
    lr: float = math.nan  # rate of the last step
    grad_norm: float = math.nan  # mean global gradient norm before clipping
    proximal: float = 0.0  # mean ||w - w_global||^2 (0 without FedProx)
    epoch: int = 0  # trainer.epoch after the call
    step: int = 0  # trainer.step after the call

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class StepInfo:
    """Passed to ``on_step`` after every optimizer step. ``loss`` and ``grad_norm`` are read from
    the device only when asked for (a GPU sync)."""

    epoch: int  # 0-based epoch being run
    step: int  # global step count after this step
    batch: int  # index of the batch in the loader
    raw_loss: torch.Tensor | float
    lr: float
    raw_grad_norm: torch.Tensor | float
    examples: int

    @property
    def loss(self) -> float:
        return float(self.raw_loss)

    @property
    def grad_norm(self) -> float:
        return float(self.raw_grad_norm)


@dataclasses.dataclass(frozen=True)
class StepOutcome:
    """What one optimizer step did: values may be device tensors (read when needed)."""

    loss: torch.Tensor | float  # the task loss
    grad_norm: torch.Tensor | float  # global gradient norm before clipping
    examples: int
    proximal: torch.Tensor | float = 0.0  # ||w - w_global||^2 (FedProx)


Batch = Mapping[str, torch.Tensor]
Criterion = Callable[[torch.Tensor, Batch], torch.Tensor]
"""(model outputs, the batch as ``unpack`` returned it) -> scalar loss."""
Unpack = Callable[[object, int], tuple[torch.Tensor | None, Batch, int]]
"""(loader batch, its index) -> (model input on the device, batch for the criterion, examples);
0 examples: the batch is skipped (counted in ``skipped_empty_batches``)."""
StepFn = Callable[[object, int], StepOutcome]
"""(loader batch, its index) -> a whole optimizer step of its own (e.g. DP-SGD)."""


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None``/"auto" -> cuda when available, else cpu."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def autocast_dtype(device: torch.device, capability: tuple[int, int] | None = None) -> torch.dtype | None:
    """The mixed precision of ``device``: bf16 on CUDA GPUs with native bf16 (compute capability
    >= 8.0, Ampere and later; fp32's exponent range, so no loss scaling), fp16 with a
    ``GradScaler`` on older CUDA GPUs, none (fp32) elsewhere. ``capability``: (major, minor),
    read from the device when not given."""
    if device.type != "cuda":
        return None
    major, minor = capability if capability is not None else torch.cuda.get_device_capability(device)
    return torch.bfloat16 if (major, minor) >= (8, 0) else torch.float16


def reads_are_free(device: torch.device) -> bool:
    """Reading a value of ``device`` on the host costs no synchronisation (the CPU)."""
    return device.type == "cpu"


def make_loss(cfg: LossConfig) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    """``(z, risk, completeness) -> scalar`` for the configured loss kind."""
    from clef_core.loss import clef_loss, nt_xent

    if cfg.kind == "ntxent":
        return lambda z, risk, completeness: nt_xent(z, tau=cfg.tau)
    return lambda z, risk, completeness: clef_loss(
        z,
        risk,
        completeness,
        tau=cfg.tau,
        alpha=cfg.alpha,
        use_mask=cfg.use_mask,
        weight_norm=cfg.weight_norm,
        align_weight=cfg.align_weight,
        risk_scaling=cfg.risk_scaling,
        unknown_weight=cfg.unknown_weight,
        weight_power=cfg.weight_power,
    )


def contrastive_criterion(cfg: LossConfig) -> Criterion:
    """The CLEF (or NT-Xent) loss of ``cfg`` as a :data:`Criterion` over ``Trainer.contrastive_batch``'s batches."""
    loss = make_loss(cfg)
    return lambda z, batch: loss(z, batch["risk"], batch["completeness"])


def projection_head(emb_dim: int, out_dim: int) -> nn.Module:
    """SimCLR's head g(h) = W2 ReLU(W1 h) (Chen et al. 2020, sec. 2.1): the loss sees g(h), the
    evaluation the encoder output h."""
    return nn.Sequential(nn.Linear(emb_dim, emb_dim), nn.ReLU(), nn.Linear(emb_dim, out_dim))


def placebo_permutation(n: int, seed: int, step: int) -> torch.Tensor:
    """The within-batch permutation of step ``step`` (``loss.shuffle_risk``): a function of (seed, step)
    only, so a resumed run shuffles as an uninterrupted one."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(int(seed) * 1_000_003 + int(step) + 0x5EED))


class Trainer:
    """Optimisation state of one encoder; see the module docstring for the lr/FedProx rules."""

    def __init__(
        self,
        encoder: nn.Module,
        loss_cfg: LossConfig,
        train_cfg: TrainConfig,
        device: str | torch.device | None = None,
        *,
        criterion: Criterion | None = None,
        unpack: Unpack | None = None,
        param_groups: list[dict[str, object]] | None = None,
    ) -> None:
        """``criterion``: the loss of a batch (default: :func:`contrastive_criterion` of ``loss_cfg``);
        ``unpack``: the model input of a batch (default: :meth:`contrastive_batch`); ``param_groups``:
        AdamW's groups when they differ (e.g. a faster head), default all trainable parameters."""
        self.loss_cfg = loss_cfg
        self.train_cfg = train_cfg
        self.device = resolve_device(device if device is not None else train_cfg.device)
        self.model = encoder.to(self.device)
        self.head = (projection_head(int(encoder.emb_dim), loss_cfg.projection_dim).to(self.device)
                     if loss_cfg.projection_dim else None)
        self.criterion: Criterion = criterion if criterion is not None else contrastive_criterion(loss_cfg)
        self.unpack: Unpack = unpack if unpack is not None else self.contrastive_batch
        self.precision = autocast_dtype(self.device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.precision == torch.float16)
        head_params = list(self.head.parameters()) if self.head is not None else []
        self.optimizer: torch.optim.Optimizer = torch.optim.AdamW(
            param_groups if param_groups is not None
            else [p for p in self.model.parameters() if p.requires_grad] + head_params,
            lr=train_cfg.lr,
            weight_decay=train_cfg.weight_decay,
        )
        self.scheduler = self._make_scheduler(self.optimizer)
        self.step = 0  # optimizer steps taken
        self.epoch = 0  # train_epoch calls completed
        self.scheduled_epochs = 0  # calls whose lr came from the scheduler
        self._unchecked: list[tuple[int, int, torch.Tensor]] = []  # (step, batch, finite?) not yet read

    def _make_scheduler(self, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
        return torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
            optimizer, T_0=self.train_cfg.warm_restart_t0, T_mult=self.train_cfg.warm_restart_tmult
        )

    def replace(self, model: nn.Module | None = None, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Swap in a wrapped model/optimizer (e.g. Opacus ``make_private``'s outputs); the schedule
        is rebuilt on the new optimizer at the same position."""
        if model is not None:
            self.model = model.to(self.device)
        if optimizer is not None:
            sched_state = self.scheduler.state_dict()
            self.optimizer = optimizer
            self.scheduler = self._make_scheduler(optimizer)
            self.scheduler.load_state_dict(sched_state)

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    # ------------------------------------------------------------------ training

    def train_epoch(
        self,
        loader: Iterable[object],
        *,
        lr: float | None = None,
        max_steps: int | None = None,
        proximal_mu: float = 0.0,
        global_params: Mapping[str, torch.Tensor] | None = None,
        on_step: Callable[[StepInfo], None] | None = None,
        schedule: bool = True,
        step: StepFn | None = None,
    ) -> EpochStats:
        """One pass over ``loader`` (at most ``max_steps`` optimizer steps; None or 0: no limit).

        Batches with no examples are skipped and counted. A non-finite loss raises
        :class:`NonFiniteLossError` naming the step (on the CPU before any weight is touched).
        ``schedule=False`` with no ``lr`` keeps the current rate; ``step`` replaces the whole
        optimizer step (it sees every batch, empty ones too).
        """
        if lr is not None and not lr > 0:
            raise ValueError(f"lr = {lr!r}: expected > 0")
        if proximal_mu < 0:
            raise ValueError(f"proximal_mu = {proximal_mu!r}: expected >= 0")
        anchors = self._proximal_anchors(global_params) if proximal_mu > 0 else None
        limit = max_steps or None
        n_batches = _length(loader)
        scheduled = lr is None and schedule
        if lr is not None:
            self._set_lr(lr)
        self.model.train()
        log_every = self.train_cfg.log_every

        start = time.perf_counter()
        steps = examples = skipped = 0
        sums = torch.zeros(3, dtype=torch.float64, device=self.device)  # loss, grad norm, proximal
        for i, batch in enumerate(loader):
            if step is None:
                x, prepared, n = self.unpack(batch, i)
                if n == 0:
                    skipped += 1
                    continue
            if scheduled:
                self._schedule(i, n_batches)
            outcome = step(batch, i) if step is not None else self._optimizer_step(x, prepared, n, i, proximal_mu, anchors)
            self.step += 1
            steps += 1
            examples += outcome.examples
            sums += torch.stack([torch.as_tensor(v, dtype=torch.float64, device=self.device)
                                 for v in (outcome.loss, outcome.grad_norm, outcome.proximal)])
            if log_every and self.step % log_every == 0:
                self.check_finite()
            if on_step is not None:
                on_step(StepInfo(self.epoch, self.step, i, outcome.loss, self.lr, outcome.grad_norm, outcome.examples))
            if limit is not None and steps >= limit:
                break
        self.check_finite()

        if scheduled:
            self.scheduled_epochs += 1
        self.epoch += 1
        loss_sum, norm_sum, prox_sum = sums.tolist()
        return EpochStats(
            loss=loss_sum / steps if steps else math.nan,
            steps=steps,
            examples=examples,
            seconds=time.perf_counter() - start,
            skipped_empty_batches=skipped,
            lr=self.lr,
            grad_norm=norm_sum / steps if steps else math.nan,
            proximal=prox_sum / steps if steps else 0.0,
            epoch=self.epoch,
            step=self.step,
        )

    def check_finite(self) -> None:
        """Raise :class:`NonFiniteLossError` naming the first step, since the last check, whose loss
        (or, without loss scaling, gradient norm) was not finite (one host read for all of them)."""
        if not self._unchecked:
            return
        pending, self._unchecked = self._unchecked, []
        finite = torch.stack([ok for _, _, ok in pending]).tolist()
        for (step, batch, _), ok in zip(pending, finite, strict=True):
            if not ok:
                raise NonFiniteLossError(f"non-finite loss or gradient at step {step} (batch {batch} of its epoch); "
                                         f"the weights since are not usable: the run's saved state predates them")

    def loss(self, batch: object, index: int = 0) -> tuple[torch.Tensor, int]:
        """(the criterion's loss, examples) of one batch under the current weights, without a
        gradient; (nan, 0) for a batch with no examples. Put the model in eval mode first for an
        evaluation (which also turns the placebo shuffle off)."""
        x, prepared, n = self.unpack(batch, index)
        if n == 0 or x is None:
            return torch.tensor(math.nan), 0
        with torch.no_grad():
            return self.criterion(self._forward(x).float(), prepared).detach(), n

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=self.device.type, dtype=self.precision or torch.float32,
                            enabled=self.precision is not None):
            z = self.model(x)
            return self.head(z) if self.head is not None else z

    def _schedule(self, batch: int, n_batches: int | None) -> None:
        """Set the rate of the next step: SGDR at fractional epoch ``scheduled_epochs + i / len(loader)``,
        or :func:`warmup_cosine` at the global step over the run's total steps."""
        if self.train_cfg.schedule == "sgdr":
            self.scheduler.step(self.scheduled_epochs + (batch / n_batches if n_batches else 0.0))
            return
        total = self.train_cfg.max_steps or (self.train_cfg.epochs * n_batches if n_batches else 0)
        if total <= 0:
            raise ValueError("train.schedule = \"cosine\" needs the run's length: set train.max_steps, or give "
                             "a loader with a length")
        self._set_lr(warmup_cosine(self.step, total, self.train_cfg.lr, self.train_cfg.warmup_fraction))

    def _optimizer_step(
        self,
        x: torch.Tensor,
        batch: Batch,
        examples: int,
        batch_index: int,
        mu: float,
        anchors: list[tuple[torch.Tensor, torch.Tensor]] | None,
    ) -> StepOutcome:
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.criterion(self._forward(x).float(), batch)
        where = f"step {self.step + 1} (epoch {self.epoch + 1}, batch {batch_index})"
        eager = reads_are_free(self.device)
        if eager:
            loss_value = float(loss.detach())
            if not math.isfinite(loss_value):
                raise NonFiniteLossError(f"non-finite loss ({loss_value}) at {where}; weights were not updated")
        objective = loss
        prox: torch.Tensor | float = 0.0
        if anchors is not None:
            prox = torch.stack([(p - g).pow(2).sum() for p, g in anchors]).sum()
            if not self.private:
                objective = loss + 0.5 * mu * prox
            prox = prox.detach()
        self.scaler.scale(objective).backward()
        grad_norm = self._clip_gradients()
        if eager and not self.scaler.is_enabled() and not math.isfinite(float(grad_norm)):
            self.optimizer.zero_grad(set_to_none=True)
            raise NonFiniteLossError(f"non-finite gradient norm ({float(grad_norm)}) at {where}; "
                                     "weights were not updated")
        if not eager:  # read at the next log point or epoch end (check_finite)
            finite = torch.isfinite(loss.detach())
            if not self.scaler.is_enabled():  # a GradScaler skips steps with inf/NaN gradients itself
                finite = finite & torch.isfinite(grad_norm)
            self._unchecked.append((self.step + 1, batch_index, finite))
        self.scaler.step(self.optimizer)  # skips the step when AMP found inf/NaN gradients
        self.scaler.update()
        if anchors is not None and self.private:
            self._decoupled_proximal_step(mu, anchors)
        return StepOutcome(loss.detach(), grad_norm, examples, prox)

    @property
    def private(self) -> bool:
        """True when the optimizer is a differentially private one (Opacus ``DPOptimizer``)."""
        return hasattr(self.optimizer, "noise_multiplier")

    @torch.no_grad()
    def _decoupled_proximal_step(self, mu: float, anchors: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """FedProx under DP: the private optimizer rebuilds ``.grad`` from per-sample gradients, so
        the proximal gradient ``mu (w - w_global)`` cannot ride along in the loss; it is applied as
        its own gradient step ``w -= min(lr * mu, 1) * (w - w_global)`` after the private step. It depends on
        no data, so it costs no privacy (post-processing)."""
        pull = min(self.lr * mu, 1.0)  # beyond 1 the step would overshoot w_global
        for p, g in anchors:
            p.sub_(pull * (p - g))

    def _clip_gradients(self) -> torch.Tensor:
        """Global L2 clipping to ``grad_clip`` (0: measure only); returns the norm before clipping.
        A differentially private optimizer (Opacus ``DPOptimizer``) clips per sample and rebuilds
        ``.grad`` from the clipped per-sample gradients in its step: only measure then."""
        params = [p for p in self.model.parameters() if p.grad is not None]
        if not params:
            return torch.zeros((), device=self.device)
        self.scaler.unscale_(self.optimizer)
        max_norm = self.train_cfg.grad_clip if self.train_cfg.grad_clip > 0 and not self.private else math.inf
        return torch.nn.utils.clip_grad_norm_(params, max_norm).detach()

    def _proximal_anchors(self, global_params: Mapping[str, torch.Tensor] | None) -> list[tuple[torch.Tensor, torch.Tensor]]:
        if global_params is None:
            raise ValueError("proximal_mu > 0 needs global_params (the round's global weights by parameter name)")
        glob = strip_prefix(global_params)
        pairs = []
        for name, p in strip_prefix(dict(self.model.named_parameters())).items():
            if not p.requires_grad:
                continue
            if name not in glob:
                raise ValueError(f"global_params has no entry for parameter '{name}'")
            g = glob[name]
            if tuple(g.shape) != tuple(p.shape):
                raise ValueError(f"global_params['{name}'] has shape {tuple(g.shape)}, the model {tuple(p.shape)}")
            pairs.append((p, g.detach().to(self.device, dtype=p.dtype)))
        return pairs

    def _set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def contrastive_batch(self, batch: object, index: int) -> tuple[torch.Tensor | None, dict[str, torch.Tensor], int]:
        """The default :data:`Unpack`: a ``PretrainDataset`` batch checked, its 2N views as one input
        on the device, ``risk`` / ``completeness`` as float32 there (permuted within the batch by
        ``loss.shuffle_risk`` while the model trains: the placebo of step ``step``)."""
        if not isinstance(batch, Mapping):
            raise TypeError(f"batch {index}: expected a dict with keys {BATCH_KEYS}, got {type(batch).__name__}")
        missing = [k for k in BATCH_KEYS if k not in batch]
        if missing:
            raise KeyError(f"batch {index}: missing key(s) {missing} (expected {BATCH_KEYS})")
        view1, view2, risk, completeness = (batch[k] for k in BATCH_KEYS)
        risk = torch.as_tensor(risk)
        completeness = torch.as_tensor(completeness)
        if view1.shape != view2.shape or view1.ndim != 3:
            raise ValueError(f"batch {index}: views must both be (N, 1, T); got {tuple(view1.shape)} and {tuple(view2.shape)}")
        if risk.shape[0] != view1.shape[0] or completeness.shape[0] != view1.shape[0]:
            raise ValueError(f"batch {index}: {view1.shape[0]} patients but risk {tuple(risk.shape)}, "
                             f"completeness {tuple(completeness.shape)}")
        n = int(view1.shape[0])
        if n == 0:
            return None, dict(batch), 0
        dev = self.device
        x = torch.cat([view1, view2]).to(dev, non_blocking=True)
        risk = risk.to(dev, dtype=torch.float32)
        completeness = completeness.to(dev, dtype=torch.float32)
        if self.loss_cfg.shuffle_risk and self.model.training:
            perm = placebo_permutation(risk.shape[0], self.train_cfg.seed, self.step)
            risk, completeness = placebo_inputs(risk, completeness, perm, self.loss_cfg.shuffle_scope)
        return x, {**batch, "risk": risk, "completeness": completeness}, n

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue bit-for-bit: weights, optimizer, schedule, scaler,
        counters and the python/numpy/torch RNG states. Plain values and tensors only."""
        return {
            "format": STATE_FORMAT,
            "format_version": STATE_VERSION,
            "model": {k: v.detach().cpu().clone() for k, v in strip_prefix(unwrap(self.model).state_dict()).items()},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "scheduled_epochs": self.scheduled_epochs,
            "rng": capture_rng(),
            "train_config": self.train_cfg.to_dict(),
            "loss_config": self.loss_cfg.to_dict(),
            **({"head": {k: v.detach().cpu().clone() for k, v in self.head.state_dict().items()}}
               if self.head is not None else {}),
        }

    def load_state_dict(self, state: Mapping[str, Any], where: str = "train state") -> None:
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"{where}: not a clef training state (format {state.get('format')!r})")
        if state.get("format_version") != STATE_VERSION:
            raise ValueError(f"{where}: training-state version {state.get('format_version')} is not supported "
                             f"(expected {STATE_VERSION})")
        try:
            unwrap(self.model).load_state_dict(strip_prefix(state["model"]))
        except RuntimeError as exc:
            raise ValueError(f"{where}: saved weights don't match this encoder (was the model config changed?): "
                             f"{str(exc).splitlines()[0]}") from exc
        if self.head is not None:
            if "head" not in state:
                raise ValueError(f"{where}: has no projection head but loss.projection_dim = {self.loss_cfg.projection_dim}")
            self.head.load_state_dict(state["head"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        self.epoch = int(state["epoch"])
        self.scheduled_epochs = int(state["scheduled_epochs"])
        restore_rng(state["rng"])

    def save_state(self, path: str | Path) -> Path:
        """Atomic (temporary file + ``os.replace``)."""
        return atomic_torch_save(self.state_dict(), path)

    def load_state(self, path: str | Path) -> None:
        state = torch.load(Path(path), map_location="cpu", weights_only=True)
        self.load_state_dict(state, where=str(path))


def warmup_cosine(step: int, total: int, base_lr: float, warmup_fraction: float) -> float:
    """Rate of optimizer step ``step + 1`` of ``total``: linear warm-up over ``W = round(warmup_fraction
    * total)`` steps (Goyal et al. 2017), then a half cosine to 0 (Loshchilov & Hutter 2017 without
    restarts): ``base (t + 1) / W`` for ``t < W``, else ``base (1 + cos(pi (t - W) / (total - W))) / 2``;
    0 past ``total`` (a run extended beyond its schedule)."""
    warmup = int(round(warmup_fraction * total))
    if step < warmup:
        return base_lr * (step + 1) / warmup
    if step >= total:
        return 0.0
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(total - warmup, 1)))


def capture_rng() -> dict[str, Any]:
    """python, numpy (legacy global) and torch RNG states as plain values/tensors."""
    np_name, np_key, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {"name": np_name, "key": torch.from_numpy(np_key.astype(np.int64)), "pos": int(np_pos),
                  "has_gauss": int(np_has_gauss), "gauss": float(np_gauss)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng(state: Mapping[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    npst = state["numpy"]
    np.random.set_state((npst["name"], npst["key"].numpy().astype(np.uint32), npst["pos"], npst["has_gauss"], npst["gauss"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _length(loader: Iterable[Any]) -> int | None:
    try:
        return len(loader)  # type: ignore[arg-type]
    except TypeError:
        return None
