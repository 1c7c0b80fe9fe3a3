"""One site's private training round: plan, check the budget, train, record, report.

:func:`private_round` is what a federated client (or any driver) calls with patient-level DP on:

1. plan: q = min(1, batch_size / patients), steps = local_epochs * round(1 / q), capped by
   ``local_steps``;
2. budget: epsilon after the planned steps, composed with every ledger entry of the experiment,
   must stay within ``budget_epsilon`` (the smaller of the site's and the run's); with
   ``budget_scope = "site"`` the whole site's epsilon must also stay within the *site's* own
   budget (a run's lower budget applies to its own experiment only, so probing with budgets
   tells a run nothing about other experiments' spending). Otherwise the round is refused before
   any private data is touched and nothing is released;
3. the ledger entry, durably, before any private step runs (a round that fails half-way has
   still spent its budget: over-counting is safe, under-counting is not). Steps 2 and 3 run under
   the ledger's lock (:meth:`~clef_core.privacy.ledger.PrivacyLedger.reserve`): concurrent rounds
   cannot both pass the check against the same spending;
4. DP-SGD (:class:`~clef_core.privacy.dpsgd.PatientDPSGD`);
5. a :class:`RoundPrivacy` with the numbers a site may report (cumulative epsilon, delta, the
   public bank loss).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from clef_core.privacy.accounting import SITE_ADJACENCY, epsilon_of_curve, rdp_add_remove, steps_per_epoch
from clef_core.privacy.accounting import sample_rate as rate_for
from clef_core.privacy.settings import PrivacyConfig
from clef_core.privacy.dpsgd import DPStats, PatientDPSGD
from clef_core.privacy.ledger import MARK_FILE, Entry, PrivacyLedger

LEDGER_DIR = "privacy"


@dataclasses.dataclass(frozen=True)
class RoundPlan:
    sample_rate: float
    steps: int
    epsilon_before: float  # the experiment's cumulative epsilon before this round
    epsilon_after: float  # ... and after it, if it runs
    checked: float  # the whole site's epsilon after it (budget_scope "site"), else epsilon_after
    budget: float  # for epsilon_after (the smaller of the site's and the run's); 0: none
    site_budget: float = 0.0  # the site's own, for checked; 0: none

    @property
    def allowed(self) -> bool:
        return (self.budget <= 0 or self.epsilon_after <= self.budget) and \
            (self.site_budget <= 0 or self.checked <= self.site_budget)


@dataclasses.dataclass
class RoundPrivacy:
    """What one private round did; everything except ``stats`` may leave the site."""

    plan: RoundPlan
    epsilon: float  # cumulative, after this round (= before it when refused)
    delta: float
    trained: bool
    public_loss: float  # loss on the public bank under the released weights
    stats: DPStats | None = None  # site log only (holds private aggregates)


def experiment_key(priv: PrivacyConfig, run_dir: str | Path | None = None) -> str:
    """The ledger key: ``privacy.experiment_id``, else one derived from the server's run folder
    (stable across restarts and resumes of the same run)."""
    if priv.experiment_id:
        return priv.experiment_id
    if not run_dir:
        raise ValueError("privacy: set privacy.experiment_id (or give the run folder) to key the site's ledger")
    return "run-" + hashlib.sha256(str(run_dir).encode("utf-8")).hexdigest()[:12]


def ledger_for(priv: PrivacyConfig, site_work_dir: str | Path) -> PrivacyLedger:
    folder = Path(priv.ledger_dir).expanduser() if priv.ledger_dir else Path(site_work_dir) / LEDGER_DIR
    return PrivacyLedger(folder, mark=Path(site_work_dir) / MARK_FILE)


def plan_round(priv: PrivacyConfig, ledger: PrivacyLedger, experiment: str, patients: int, batch_size: int,
               local_epochs: int, local_steps: int = 0, site_budget: float | None = None) -> RoundPlan:
    """The round's (q, steps) and its budget check (module docstring, steps 1-2); ``site_budget``
    (default ``priv.budget_epsilon``) bounds the whole site's epsilon under ``budget_scope = "site"``."""
    q = rate_for(patients, batch_size)
    steps = local_epochs * steps_per_epoch(q)
    if local_steps:
        steps = min(steps, local_steps)
    own, site = ledger.curves(experiment)
    planned = rdp_add_remove([(priv.noise_multiplier, q, steps)])
    before = epsilon_of_curve(own, priv.delta, SITE_ADJACENCY)
    after = epsilon_of_curve(own + planned, priv.delta, SITE_ADJACENCY)
    site_budget = priv.budget_epsilon if site_budget is None else site_budget
    if priv.budget_scope == "experiment":
        return RoundPlan(q, steps, before, after, after, priv.budget_epsilon, site_budget)
    checked = epsilon_of_curve(site + planned, priv.delta, SITE_ADJACENCY)
    return RoundPlan(q, steps, before, after, checked, priv.budget_epsilon, site_budget)


def spend_round(priv: PrivacyConfig, ledger: PrivacyLedger, *, experiment: str, server_round: int, patients: int,
                batch_size: int, local_epochs: int, local_steps: int = 0,
                site_budget: float | None = None) -> RoundPlan:
    """Plan the round and, when the budget allows it, record it in the ledger -- both under the
    ledger's lock (module docstring, steps 1-3)."""
    with ledger.reserve():
        plan = plan_round(priv, ledger, experiment, patients, batch_size, local_epochs, local_steps, site_budget)
        if plan.allowed:
            ledger.append(Entry(experiment=experiment, round=int(server_round), mode="patient",
                                noise_multiplier=priv.noise_multiplier, sample_rate=plan.sample_rate,
                                steps=plan.steps, delta=priv.delta, clip_norm=priv.clip_norm,
                                epsilon=plan.epsilon_after))
    return plan


def private_round(
    trainer: Any,
    dataset: torch.utils.data.Dataset,
    bank: Any,
    priv: PrivacyConfig,
    ledger: PrivacyLedger,
    *,
    experiment: str,
    server_round: int,
    batch_size: int,
    local_epochs: int,
    local_steps: int = 0,
    lr: float | None = None,
    proximal_mu: float = 0.0,
    global_params: Mapping[str, torch.Tensor] | None = None,
    num_workers: int = 0,
    seed: int | None = None,
    site_budget: float | None = None,
) -> RoundPrivacy:
    """Steps 1-5 of the module docstring. A refused round leaves the weights untouched."""
    # spend first: whatever happens inside the private steps (a crash, a failure that shows in the
    # reply), the release is already on the site's books
    plan = spend_round(priv, ledger, experiment=experiment, server_round=server_round, patients=len(dataset),
                       batch_size=batch_size, local_epochs=local_epochs, local_steps=local_steps,
                       site_budget=site_budget)
    dp = PatientDPSGD(trainer, bank, noise_multiplier=priv.noise_multiplier, clip_norm=priv.clip_norm,
                      bank_refresh=priv.bank_refresh, vmap_chunk=priv.vmap_chunk, seed=seed)
    if not plan.allowed:
        return RoundPrivacy(plan, plan.epsilon_before, priv.delta, False, dp.bank_loss())
    stats = dp.run(dataset, steps=plan.steps, sample_rate=plan.sample_rate, lr=lr, proximal_mu=proximal_mu,
                   global_params=global_params, num_workers=num_workers)
    spent = plan.epsilon_after
    public = dp.bank_loss()
    if not math.isfinite(public):
        raise FloatingPointError("the released weights give a non-finite loss on the public bank")
    return RoundPrivacy(plan, spent, priv.delta, True, public, stats)
