"""A site's part of a federated round, as plain functions: weights in, weights and public metrics out.

:func:`site_train` is the whole train step a site runs for a round:

1. the site's privacy for this run: the run's ``[privacy]`` request held against the site's own
   policy (:func:`clef_core.privacy.policy.effective_privacy`), and the run's folders against the
   site's (:func:`clef_core.federation.sites.site_experiment`) -- a weaker request or a foreign
   folder is refused (:class:`~clef_core.privacy.policy.PrivacyRefusal`) before any data is read;
2. patient-level DP-SGD (:func:`private_train`) when the effective mode is ``patient``, else
   ordinary local training (:func:`local_train`);
3. the reply's metrics (:mod:`clef_core.federation.contract`).

Optimizer state between rounds: reset. Each round builds a fresh AdamW on the received global
weights and discards it afterwards. Reasons: the global weights a site receives moved since its
last round (Adam moments of old weights are stale, more so when sites are sampled and skip
rounds), a reset site makes a round a pure function of (global weights, round, site data) so a
resumed server reproduces it, and a stateless site survives restarts (docs/federated.md).

What the metrics carry under DP, and why each number may leave the site:

* ``privacy.epsilon`` / ``privacy.delta`` -- the site's cumulative spending for this experiment,
  from its ledger (public parameters only), under replace-one adjacency;
* ``privacy.budget_exhausted`` -- 1 when the site refused to train because the round would exceed
  its budget (the weights it received go back unchanged);
* ``privacy.unit_is_record`` -- 1 when some of the site's "patients" are records (a WFDB folder
  that names none or only some of its patients), so one person with several records is several
  privacy units;
* ``train_loss`` -- the loss of the released weights on the public bank, NOT on patients;
* ``num-examples`` -- the site's patient count n (q = batch / n). It is released, so the guarantee
  is replace-one (same n, one patient different: docs/privacy.md), and the run cannot steer it:
  which records are kept is the site's own ``[preprocess]``;
* ``steps``, ``examples`` -- the planned steps and expected patient-steps (q n steps);
* ``seconds`` -- 0 (how long the private steps took depends on the realised batch sizes);
* ``skipped.*`` -- 0: counts of unusable records are facts about individual records.

A round refused for the budget carries no number derived from the site's data: ``num-examples``
1, ``steps`` and ``examples`` 0, the experiment's own epsilon (which the run can compute from
earlier replies), the public-bank loss of the weights it received.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from logging import Logger
from typing import Any

import torch

from clef_core.checkpoint import strip_prefix, unwrap
from clef_core.encoders.config import make_config
from clef_core.federation.contract import PRIVACY_METRICS, SITE_INDEX_KEY, SKIP_KEYS, TRAIN_METRICS, WEIGHT_KEY
from clef_core.federation.sites import LOG_FILE, SiteSpec, prepared_site, pretrain_dataset, site_experiment
from clef_core.privacy.config import PrivacyConfig
from clef_core.privacy.policy import PrivacyRefusal, effective_privacy
from clef_core.task import build_model, fit, make_loader
from clef_core.train.config import LossConfig, TrainConfig
from clef_core.train.trainer import Trainer, seed_everything

StateDict = dict[str, torch.Tensor]
DEFAULT_EVAL_BATCHES = 4
NO_PATIENTS = "refused by the site: it has no usable patients under its own settings"
DP_ROUND_LOGGED = "(DP, experiment "  # in the site log line of every private round (private_train)
_BANKS: dict[tuple[Any, ...], Any] = {}


def site_train(global_state: StateDict, conf: Mapping[str, Any], cfg: Mapping[str, Any], spec: SiteSpec,
               log: Logger, *, run_dir: str) -> tuple[StateDict, dict[str, float]]:
    """The site's train step of one round (module docstring, steps 1-3)."""
    priv = effective_privacy(spec.policy, PrivacyConfig.from_config(dict(cfg)))
    cfg = site_experiment(cfg, spec)
    if priv.mode == "patient":
        return private_train(global_state, conf, cfg, spec, log, priv=priv, run_dir=run_dir)
    return local_train(global_state, conf, cfg, spec, log)


def refuse_evaluation_under_dp(cfg: Mapping[str, Any], spec: SiteSpec) -> None:
    """Federated evaluation sends a loss computed on the site's patients without noise: refused
    when the site's policy or the run asks for any DP."""
    request = PrivacyConfig.from_config(dict(cfg))
    if spec.policy.mode != "off" or request.mode != "off":
        raise PrivacyRefusal("refused by the site: no federated evaluation under differential privacy",
                             f"site policy {spec.policy.mode!r}, run requests {request.mode!r}: an evaluation "
                             f"loss on the site's patients is not a noised release")


def _round_setup(global_state: StateDict, conf: Mapping[str, Any], cfg: Mapping[str, Any],
                 spec: SiteSpec) -> tuple[Any, Any, Trainer]:
    """(prepared site, dataset, trainer on the global weights) of a train round."""
    server_round = int(conf["server-round"])
    train_cfg = TrainConfig(**cfg["train"])
    seed = int(conf.get("seed", train_cfg.seed))
    site = prepared_site(spec, cfg)
    try:
        dataset = pretrain_dataset(spec, cfg, site, seed)
    except ValueError as exc:  # e.g. no window with a lead: a fact of the site's own data and settings
        raise PrivacyRefusal(NO_PATIENTS, f"site {spec.site_id}: {exc}") from None
    if len(dataset) == 0:
        raise PrivacyRefusal(NO_PATIENTS, f"site {spec.site_id}: no usable patients")
    seed_everything(seed * 1_000_003 + server_round)
    encoder = build_model(make_config(**cfg["model"]))
    encoder.load_state_dict(global_state)
    return site, dataset, Trainer(encoder, LossConfig(**cfg["loss"]), train_cfg, device=spec.device or None)


def _weights(trainer: Trainer) -> StateDict:
    return {k: v.detach().cpu() for k, v in strip_prefix(unwrap(trainer.model).state_dict()).items()}


def skip_counts(site: Any, dataset: Any, empty_batches: int) -> dict[str, float]:
    """Records the site's store left out, by reason, plus windows/batches the loop skipped."""
    counts = dict.fromkeys(SKIP_KEYS, 0.0)
    skipped = getattr(getattr(site, "build_report", None), "skipped", None) or {}
    for reason, n in dict(skipped).items():
        key = f"skipped.{reason}" if f"skipped.{reason}" in counts else "skipped.other"
        counts[key] += float(n)
    counts["skipped.empty_batches"] = float(empty_batches)
    counts["skipped.windows_without_leads"] = float(getattr(dataset, "n_windows_without_leads", 0))
    return counts


def local_train(global_state: StateDict, conf: Mapping[str, Any], cfg: Mapping[str, Any], spec: SiteSpec,
                log: Logger) -> tuple[StateDict, dict[str, float]]:
    """Ordinary local training: ``local-epochs`` passes (capped at ``local-steps``) at the round's lr."""
    server_round, epochs, step_cap = int(conf["server-round"]), int(conf["local-epochs"]), int(conf["local-steps"])
    lr, mu = float(conf["lr"]), float(conf.get("proximal-mu", 0.0))
    site, dataset, trainer = _round_setup(global_state, conf, cfg, spec)
    train_cfg = trainer.train_cfg
    started = time.perf_counter()
    per_epoch = math.ceil(len(dataset) / train_cfg.batch_size)  # len() of each epoch's loader
    total = epochs * per_epoch if not step_cap else min(step_cap, epochs * per_epoch)
    history = fit(trainer, lambda local_epoch: make_loader(dataset, train_cfg, epoch=(server_round - 1) * epochs + local_epoch),
                  epochs=epochs, max_steps=step_cap, lr=lr, proximal_mu=mu, global_params=global_state if mu > 0 else None,
                  on_step=step_progress(f"site {spec.site_id} round {server_round}", total))
    steps = examples = empty = 0
    loss_sum = 0.0
    for stats in history:
        steps += stats.steps
        examples += stats.examples
        empty += stats.skipped_empty_batches
        loss_sum += stats.loss * stats.steps if stats.steps else 0.0
    seconds = time.perf_counter() - started
    metrics = {
        WEIGHT_KEY: float(len(dataset)),
        "train_loss": loss_sum / steps if steps else math.nan,
        "examples": float(examples),
        "steps": float(steps),
        "seconds": seconds,
        SITE_INDEX_KEY: float(spec.index),
        **skip_counts(site, dataset, empty),
    }
    if not math.isfinite(metrics["train_loss"]):
        raise ValueError(f"site {spec.site_id}: no training step was made")
    log.info("round %d: %d steps over %d patients at lr %.3g in %.1f s", server_round, steps, len(dataset), lr, seconds)
    return _weights(trainer), metrics


def step_progress(label: str, total: int, parts: int = 4) -> Callable[[Any], None]:
    """An ``on_step`` that prints ``clef: <label>: step k/total`` at every quarter of the round to
    the site's console (in simulation ``clef simulate`` echoes it; no data, only counts). Not used
    under DP: the private loss stays in the site's log."""
    every = max(1, total // parts)
    done = [0]

    def on_step(info: Any) -> None:
        done[0] += 1
        if done[0] % every == 0 or done[0] == total:
            print(f"clef: {label}: step {done[0]}/{total}, loss {info.loss:.4f}", flush=True)

    return on_step


def public_bank(cfg: Mapping[str, Any], site: Any, priv: PrivacyConfig) -> Any:
    """The public negative bank at the site's store rate (cached per process)."""
    from clef_core.data.augment import ViewConfig
    from clef_core.data.noise import NoiseBank
    from clef_core.data.preprocess import PreprocessConfig
    from clef_core.privacy.bank import synthetic_bank
    from clef_core.risk.settings import RiskSettings

    prep = PreprocessConfig.from_dict(dict(site.store.preprocess))
    views = ViewConfig(**cfg["views"])
    risk = RiskSettings.from_config(cfg)
    key = (priv.bank_size, priv.bank_seed, repr(prep), repr(views), repr(risk))
    if key not in _BANKS:
        noise = NoiseBank(sample_rate=prep.sample_rate, noise_dir=views.noise_dir)
        _BANKS[key] = synthetic_bank(priv.bank_size, priv.bank_seed, prep, views, noise, risk)
    return _BANKS[key]


def private_train(global_state: StateDict, conf: Mapping[str, Any], cfg: Mapping[str, Any], spec: SiteSpec,
                  log: Logger, *, priv: PrivacyConfig, run_dir: str) -> tuple[StateDict, dict[str, float]]:
    """One patient-level DP round (:func:`clef_core.privacy.site.private_round`); the metrics are
    the ones the module docstring lists."""
    from clef_core.privacy.site import experiment_key, ledger_for, private_round

    server_round = int(conf["server-round"])
    site, dataset, trainer = _round_setup(global_state, conf, cfg, spec)
    # the site's own delta (a request can only lower it): the refusal cannot depend on the run
    site_delta = spec.policy.delta if spec.policy.mode == "patient" else priv.delta
    if site_delta * len(dataset) >= 1:
        raise PrivacyRefusal("refused by the site: its privacy.delta is not below 1 / patients",
                             f"delta {site_delta} with {len(dataset)} patients")
    unit = site.privacy_unit
    if unit == "record":
        log.warning("privacy unit: RECORD -- %s does not name the patients of all its records (patients.csv or "
                    "'# Patient:' header comments), so each unnamed record counts as its own patient", spec.data_dir)
    dataset.set_epoch(server_round)  # the round's views (public seed: the noise is what is secret)
    mu = float(conf.get("proximal-mu", 0.0))
    experiment = experiment_key(priv, run_dir)
    result = private_round(
        trainer, dataset, public_bank(cfg, site, priv), priv, remembered_ledger(ledger_for(priv, spec.work_dir), spec),
        experiment=experiment, server_round=server_round, batch_size=trainer.train_cfg.batch_size,
        local_epochs=int(conf["local-epochs"]), local_steps=int(conf["local-steps"]), lr=float(conf["lr"]),
        proximal_mu=mu, global_params=global_state if mu > 0 else None, num_workers=trainer.train_cfg.num_workers,
        site_budget=spec.policy.budget_epsilon)
    plan = result.plan
    if result.trained:
        stats = result.stats
        log.info("round %d (DP, experiment %s): %d steps at q=%.4f, sigma=%g, C=%g; epsilon %.4f (delta %g); "
                 "private loss %.4f, %d sampled patient-steps, %d empty batches, %.0f%% clipped, %d non-finite "
                 "(counted as zero), %.1f s", server_round, experiment, plan.steps, plan.sample_rate,
                 priv.noise_multiplier, priv.clip_norm, result.epsilon, result.delta, stats.private_loss,
                 stats.patients, stats.empty_batches,
                 100 * stats.clipped_fraction if math.isfinite(stats.clipped_fraction) else 0.0, stats.nonfinite,
                 stats.seconds)
    else:
        log.warning("round %d: privacy budget reached -- NOT training: epsilon would be %.4f > budget %.4g "
                    "(spent %.4f at delta %g, experiment %s); replying with the received weights", server_round,
                    plan.checked, plan.budget, result.epsilon, result.delta, experiment)
    steps = plan.steps if result.trained else 0
    metrics = dict.fromkeys(TRAIN_METRICS, 0.0)
    metrics.update({
        WEIGHT_KEY: float(len(dataset)) if result.trained else 1.0,
        "train_loss": result.public_loss,
        "examples": plan.sample_rate * len(dataset) * steps,
        "steps": float(steps),
        "seconds": 0.0,
        SITE_INDEX_KEY: float(spec.index),
    })
    metrics.update(zip(PRIVACY_METRICS, (float(result.epsilon), float(result.delta),
                                         0.0 if result.trained else 1.0, 1.0 if unit == "record" else 0.0)))
    return _weights(trainer), metrics


def remembered_ledger(ledger: Any, spec: SiteSpec) -> Any:
    """``ledger``, unless it is empty, its high-water mark is gone too, and the site's own log
    shows earlier private rounds: then its spending cannot be established (LedgerError)."""
    from clef_core.privacy.ledger import LedgerError

    if (ledger.mark is not None and ledger.mark.is_file()) or ledger.entries():
        return ledger  # the mark guards a non-empty history (PrivacyLedger.check_mark)
    site_log_file = spec.work_dir / LOG_FILE
    if site_log_file.is_file() and DP_ROUND_LOGGED in site_log_file.read_text(encoding="utf-8", errors="replace"):
        raise LedgerError(f"{ledger.path} is empty and its high-water mark is gone, but {site_log_file} records "
                          f"earlier private rounds: the site will not train until its ledger is restored")
    return ledger


def local_evaluate(global_state: StateDict, conf: Mapping[str, Any], cfg: Mapping[str, Any], spec: SiteSpec,
                   log: Logger) -> dict[str, float]:
    """The CLEF loss of the global weights on a few local batches (refused under any DP), computed
    by the trainer (its criterion and forward) in eval mode."""
    refuse_evaluation_under_dp(cfg, spec)
    cfg = site_experiment(cfg, spec)
    server_round = int(conf.get("server-round", 0))
    train_cfg = TrainConfig(**cfg["train"])
    site = prepared_site(spec, cfg)
    dataset = pretrain_dataset(spec, cfg, site, train_cfg.seed)
    encoder = build_model(make_config(**cfg["model"]))
    encoder.load_state_dict(global_state)
    trainer = Trainer(encoder, LossConfig(**cfg["loss"]), train_cfg, device=spec.device or None)
    trainer.model.eval()
    # a fixed epoch id keeps the evaluation views the same in every round
    loader = make_loader(dataset, train_cfg, epoch=10**6)
    total = count = 0.0
    for i, batch in enumerate(loader):
        if i >= int(conf.get("eval-batches", DEFAULT_EVAL_BATCHES)):
            break
        loss, n = trainer.loss(batch, i)
        total += float(loss) * n
        count += n
    if not count:
        raise ValueError(f"site {spec.site_id}: nothing to evaluate")
    log.info("evaluate round %d: loss %.4f over %d patients", server_round, total / count, count)
    return {WEIGHT_KEY: count, "eval_loss": total / count, SITE_INDEX_KEY: float(spec.index)}
