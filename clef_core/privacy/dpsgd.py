r"""DP-SGD with the patient as the privacy unit, sound for the CLEF loss.

One step (Abadi et al. 2016, with the per-example loss replaced by the decoupled per-patient
loss of :mod:`clef_core.privacy.loss`):

1. Poisson sampling: every patient of the site joins the batch independently with probability
   q (the batch may be empty);
2. per patient i, the gradient g_i = grad_theta L_i(theta) of their loss against the public bank,
   through BOTH of their views at once (``torch.func``: ``functional_call`` + ``vmap`` + ``grad``);
3. clip: g~_i = g_i min(1, C / ||g_i||_2) (the norm over all parameters together);
4. noise: G = (sum_i g~_i + N(0, sigma^2 C^2 I)) / (q n)  -- q n, the expected batch size, is
   public; an empty batch still releases noise (skipping it would reveal that it was empty);
5. the optimizer (AdamW) steps on G; FedProx's proximal pull towards the round's global
   weights is then applied as its own data-independent step (:meth:`Trainer._decoupled_proximal_step`).

Sensitivity: L_i depends on patient i's data (their window, both views, risk, completeness)
and on public things only (theta -- itself the output of earlier private steps -- the bank and
its metadata, the config). So adding or removing patient i adds or removes exactly one term
g~_i of norm <= C and changes no other term: the L2 sensitivity of the sum is C, and each step
is the sampled Gaussian mechanism with noise multiplier sigma. A site releases its patient count,
so its guarantee is for replacing one patient (two such steps), which
:mod:`clef_core.privacy.accounting` bounds from this add/remove analysis.

Noise and sampling draw from OS entropy (``secrets``) unless a ``seed`` is given (tests only):
noise that anyone can regenerate from a published seed protects nothing.

GroupNorm or no normalisation only: BatchNorm's running statistics would absorb private data
without noise (and :func:`torch.func.functional_call` cannot update them under ``vmap``).
"""

from __future__ import annotations

import dataclasses
import math
import secrets
import time
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, grad, vmap
from torch.utils.data import DataLoader, Dataset
from torch.utils.data._utils.collate import default_collate

from clef_core.privacy.bank import NegativeBank
from clef_core.privacy.loss import bank_weights, patient_loss
from clef_core.train.config import LossConfig


class PrivacyModelError(ValueError):
    """The model cannot be trained with patient-level DP as built."""


def check_dp_model(model: nn.Module) -> None:
    """Refuse modules that mix examples or hold data-dependent state (BatchNorm)."""
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            raise PrivacyModelError(
                f"module '{name}' is {type(module).__name__}: its running statistics are updated from the private "
                f"batch without clipping or noise, so DP-SGD cannot bound a patient's influence; build the encoder "
                f"with norm=\"group\" (GroupNorm, per example) or norm=\"none\"")
    if any(b.is_floating_point() for b in model.buffers()):
        names = [n for n, b in model.named_buffers() if b.is_floating_point()]
        raise PrivacyModelError(f"buffers {names[:3]} would be updated outside DP-SGD; not supported")


def secret_generator(seed: int | None = None) -> torch.Generator:
    """A CPU generator seeded from OS entropy (or ``seed``, for tests)."""
    return torch.Generator().manual_seed(secrets.randbits(63) if seed is None else int(seed))


class PoissonBatches:
    """``steps`` batches of patient indices, each patient in each batch with probability ``q``
    independently (batches may be empty). A ``batch_sampler`` for ``DataLoader``."""

    def __init__(self, n: int, q: float, steps: int, generator: torch.Generator) -> None:
        if n < 1 or not 0 < q <= 1 or steps < 0:
            raise ValueError(f"PoissonBatches: need n >= 1, 0 < q <= 1, steps >= 0 (got {n}, {q}, {steps})")
        self.n, self.q, self.steps, self.generator = n, q, steps, generator

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[list[int]]:
        for _ in range(self.steps):
            chosen = torch.rand(self.n, generator=self.generator) < self.q
            yield torch.nonzero(chosen).flatten().tolist()


def collate_patients(items: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Default collate, or None for an empty Poisson batch."""
    return default_collate(items) if items else None


def poisson_loader(dataset: Dataset, q: float, steps: int, generator: torch.Generator,
                   num_workers: int = 0) -> DataLoader:
    return DataLoader(dataset, batch_sampler=PoissonBatches(len(dataset), q, steps, generator),  # type: ignore[arg-type]
                      collate_fn=collate_patients, num_workers=num_workers)


# ----------------------------------------------------------------------------- the step


def per_patient_gradients(
    model: nn.Module,
    x: torch.Tensor,
    weights: torch.Tensor,
    defined: torch.Tensor,
    bank_z: torch.Tensor,
    loss_cfg: LossConfig,
    chunk: int = 0,
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """({name: (N, *shape)} per-patient gradients, (N,) losses) for ``x`` (N, 2, 1, T)."""
    params = {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}
    buffers = {k: v.detach() for k, v in model.named_buffers()}
    ntxent = loss_cfg.kind == "ntxent"

    def loss_one(p: dict[str, torch.Tensor], pair: torch.Tensor, w: torch.Tensor,
                 d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = functional_call(model, (p, buffers), (pair,)).float()
        loss = patient_loss(z, bank_z, w, d, tau=loss_cfg.tau,
                            weight_norm="none" if ntxent else loss_cfg.weight_norm,
                            align_weight=0.0 if ntxent else loss_cfg.align_weight)
        return loss, loss.detach()

    per_grad = vmap(grad(loss_one, has_aux=True), in_dims=(None, 0, 0, 0), chunk_size=chunk or None)
    grads, losses = per_grad(params, x, weights, defined)
    return grads, losses


def zero_nonfinite(grads: Mapping[str, torch.Tensor],
                   losses: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Per-patient gradients with every patient whose loss or gradient is not finite set to zero,
    and the (N,) mask of the finite ones. A zero term is within the clipping bound, so the step
    stays the same Gaussian mechanism; aborting instead would release a data-dependent signal
    (which patient's data overflows) outside the accounting."""
    finite = torch.isfinite(losses)
    for g in grads.values():
        finite = finite & torch.isfinite(g.flatten(1)).all(1)
    if bool(finite.all()):
        return dict(grads), finite
    keep = {k: torch.where(finite.view(-1, *([1] * (g.dim() - 1))), g, torch.zeros_like(g)) for k, g in grads.items()}
    return keep, finite


def clip_and_sum(grads: Mapping[str, torch.Tensor], clip_norm: float) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """(sum_i g_i min(1, C / ||g_i||), (N,) norms before clipping); the norm spans all parameters."""
    norms = torch.sqrt(sum(g.flatten(1).pow(2).sum(1) for g in grads.values()))
    factor = (clip_norm / (norms + 1e-12)).clamp(max=1.0)
    return {k: torch.einsum("i,i...->...", factor, g) for k, g in grads.items()}, norms


@dataclasses.dataclass
class DPStats:
    """What :meth:`PatientDPSGD.run` did. ``private_loss`` is the mean per-patient loss: derived
    from private data without noise, it stays in the site's own log."""

    steps: int
    patients: int  # sampled patient-steps
    empty_batches: int
    sample_rate: float
    noise_multiplier: float
    seconds: float
    private_loss: float
    clipped_fraction: float  # share of per-patient gradients that were clipped (site log only)
    nonfinite: int = 0  # patient-steps whose loss or gradient was not finite and counted as zero (site log only)


def check_dp_loss(loss_cfg: LossConfig) -> None:
    """The per-patient bank loss implements the paper's options only: refuse the repairs and the
    placebo rather than train something else than configured."""
    extra = {k: v for k, v in (("weight_norm", loss_cfg.weight_norm if loss_cfg.weight_norm == "mean_one" else None),
                                ("risk_scaling", None if loss_cfg.risk_scaling == "minmax" else loss_cfg.risk_scaling),
                                ("projection_dim", loss_cfg.projection_dim or None),
                                ("shuffle_risk", loss_cfg.shuffle_risk or None),
                                ("unknown_weight", None if loss_cfg.unknown_weight == "one" else loss_cfg.unknown_weight),
                                ("weight_power", None if loss_cfg.weight_power == 1.0 else loss_cfg.weight_power))
             if v is not None}
    if extra:
        raise ValueError(f"privacy.mode = patient does not support loss options {extra} (central pretraining only)")


class PatientDPSGD:
    """Runs DP-SGD steps on a :class:`~clef_core.train.trainer.Trainer`'s bare model and optimizer."""

    def __init__(self, trainer: Any, bank: NegativeBank, *, noise_multiplier: float, clip_norm: float,
                 bank_refresh: int = 1, vmap_chunk: int = 0, seed: int | None = None) -> None:
        check_dp_model(trainer.model)
        check_dp_loss(trainer.loss_cfg)
        if noise_multiplier <= 0 or clip_norm <= 0:
            raise ValueError(f"PatientDPSGD: noise_multiplier and clip_norm must be > 0 "
                             f"(got {noise_multiplier}, {clip_norm})")
        self.trainer = trainer
        self.bank = bank
        self.sigma = float(noise_multiplier)
        self.clip = float(clip_norm)
        self.bank_refresh = int(bank_refresh)
        self.chunk = int(vmap_chunk)
        self.generator = secret_generator(seed)
        self._bank_z: torch.Tensor | None = None
        self._bank_age = 0
        self.nonfinite = 0
        device = trainer.device
        self._bank_risk = bank.risk.to(device, torch.float32)
        self._bank_rho = bank.completeness.to(device, torch.float32)

    def bank_embeddings(self, refresh: bool = False) -> torch.Tensor:
        """The bank's view-1 embeddings under the current weights (re-embedded every ``bank_refresh`` steps)."""
        if refresh or self._bank_z is None or self._bank_age >= self.bank_refresh:
            model, device = self.trainer.model, self.trainer.device
            self._bank_z = self.bank.embed(lambda x: model(x.to(device)).float())
            self._bank_age = 0
        return self._bank_z

    def step(self, batch: Mapping[str, Any] | None, expected_batch: float) -> tuple[int, float, float]:
        """One private step; returns (patients, summed loss, clipped count)."""
        tr = self.trainer
        model, device = tr.model, tr.device
        params = [p for p in model.parameters() if p.requires_grad]
        bank_z = self.bank_embeddings()
        self._bank_age += 1
        n, loss_sum, clipped = 0, 0.0, 0.0
        if batch is not None and batch["view1"].shape[0] > 0:
            x = torch.stack([batch["view1"], batch["view2"]], dim=1).to(device)
            n = x.shape[0]
            risk = torch.as_tensor(batch["risk"], dtype=torch.float32, device=device)
            rho = torch.as_tensor(batch["completeness"], dtype=torch.float32, device=device)
            w, defined = self._weights(risk, rho)
            grads, losses = per_patient_gradients(model, x, w, defined, bank_z, tr.loss_cfg, self.chunk)
            grads, finite = zero_nonfinite(grads, losses)
            summed, norms = clip_and_sum(grads, self.clip)
            loss_sum, clipped = float(losses[finite].sum()), float((norms > self.clip).sum())
            self.nonfinite += int((~finite).sum())
            names = [k for k, p in model.named_parameters() if p.requires_grad]
            total = [summed[k] for k in names]
        else:
            total = [torch.zeros_like(p) for p in params]
        tr.optimizer.zero_grad(set_to_none=True)
        for p, g in zip(params, total, strict=True):
            noise = torch.randn(p.shape, generator=self.generator, dtype=p.dtype).to(device)
            p.grad = (g + self.sigma * self.clip * noise) / expected_batch
        tr.optimizer.step()
        return n, loss_sum, clipped

    def _weights(self, risk: torch.Tensor, rho: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.trainer.loss_cfg
        if cfg.kind == "ntxent":
            shape = (risk.shape[0], len(self.bank))
            return torch.ones(shape, device=risk.device), torch.zeros(shape, dtype=torch.bool, device=risk.device)
        return bank_weights(risk, rho if cfg.use_mask else None, self._bank_risk,
                            self._bank_rho if cfg.use_mask else None, alpha=cfg.alpha)

    def run(self, dataset: Dataset, *, steps: int, sample_rate: float, lr: float | None = None,
            proximal_mu: float = 0.0, global_params: Mapping[str, torch.Tensor] | None = None,
            num_workers: int = 0) -> DPStats:
        """``steps`` Poisson-sampled private steps over ``dataset`` (``PretrainDataset`` items)."""
        from clef_core.task import fit
        from clef_core.train.trainer import StepOutcome

        tr = self.trainer
        expected = sample_rate * len(dataset)
        anchors = tr._proximal_anchors(global_params) if proximal_mu > 0 else None
        started = time.perf_counter()
        totals = {"patients": 0, "empty": 0, "loss": 0.0, "clipped": 0.0}
        self._bank_z = None  # the weights changed since the last call
        self.nonfinite = 0

        def private_step(batch: Mapping[str, Any] | None, index: int) -> StepOutcome:
            n, loss, clip = self.step(batch, expected)
            if anchors is not None:
                tr._decoupled_proximal_step(proximal_mu, anchors)  # data-independent: after clip and noise
            totals["patients"] += n
            totals["empty"] += n == 0
            totals["loss"] += loss
            totals["clipped"] += clip
            return StepOutcome(loss=loss / n if n else 0.0, grad_norm=math.nan, examples=n)

        fit(tr, lambda epoch: poisson_loader(dataset, sample_rate, steps, self.generator, num_workers),
            epochs=tr.epoch + 1, lr=lr, schedule=False, step=private_step)
        patients = int(totals["patients"])
        return DPStats(steps=steps, patients=patients, empty_batches=int(totals["empty"]), sample_rate=sample_rate,
                       noise_multiplier=self.sigma, seconds=time.perf_counter() - started,
                       private_loss=totals["loss"] / patients if patients else math.nan,
                       clipped_fraction=totals["clipped"] / patients if patients else math.nan, nonfinite=self.nonfinite)

    @torch.no_grad()
    def bank_loss(self) -> float:
        """The in-batch CLEF (or NT-Xent) loss of the bank's two views under the current weights:
        a loss computed from public data only, safe to report."""
        from clef_core.train.trainer import make_loss

        model, device = self.trainer.model, self.trainer.device
        z = torch.cat([self.bank.embed(lambda x: model(x.to(device)).float(), view=v) for v in (1, 2)])
        return float(make_loss(self.trainer.loss_cfg)(z, self._bank_risk, self._bank_rho))
