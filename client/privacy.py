"""The site's side of differential privacy (``privacy.mode = "patient"``): a private train round.

:func:`private_train` replaces the ordinary local training when the experiment asks for
patient-level DP. It trains with :func:`clef_core.privacy.site.private_round` (DP-SGD against the
public negative bank, the site's ledger, the budget) and replies with the usual one ArrayRecord
and one MetricRecord, whose keys are the ordinary train metrics plus :data:`PRIVACY_METRICS`.

What the reply carries under DP, and why each number may leave the site:

* the weights -- the DP release;
* ``privacy.epsilon`` / ``privacy.delta`` -- the site's cumulative spending for this experiment,
  computed from its ledger (public parameters only);
* ``privacy.budget_exhausted`` -- 1 when the site refused to train this round because the round
  would exceed its budget (its reply then carries the weights it received, unchanged);
* ``train_loss`` -- the loss of the released weights on the public bank, NOT on patients (the
  private loss is only written to the site's own log);
* ``num-examples`` -- the site's patient count, which DP-SGD treats as public (q = batch / n);
* ``steps``, ``examples`` -- the planned steps and the expected number of patient-steps (q n steps),
  both public; the realised Poisson batch sizes stay in the site log;
* ``skipped.*`` -- 0: counts of unusable records are facts about individual records, so under DP
  they go to the site's own log only.

A site can only tighten the experiment's privacy through its node_config (deployment):
``privacy-budget`` (a smaller positive budget wins), ``privacy-ledger-dir`` and
``privacy-budget-scope = "site"`` (count every release on this site, whatever the experiment).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict

from clef_core.checkpoint import strip_prefix, unwrap
from clef_core.privacy.bank import NegativeBank, synthetic_bank
from clef_core.privacy.config import PrivacyConfig
from clef_core.privacy.site import experiment_key, ledger_for, private_round

PRIVACY_METRICS = ("privacy.epsilon", "privacy.delta", "privacy.budget_exhausted")
_BANKS: dict[tuple[Any, ...], NegativeBank] = {}


def patient_mode(cfg: Mapping[str, Any]) -> bool:
    return PrivacyConfig.from_config(dict(cfg)).mode == "patient"


def site_privacy(cfg: Mapping[str, Any], node_config: Mapping[str, Any]) -> PrivacyConfig:
    """The experiment's ``[privacy]``, tightened by the site's node_config."""
    priv = PrivacyConfig.from_config(dict(cfg))
    changes: dict[str, Any] = {}
    if "privacy-budget" in node_config:
        own = float(node_config["privacy-budget"])
        if own > 0 and (priv.budget_epsilon <= 0 or own < priv.budget_epsilon):
            changes["budget_epsilon"] = own
    if node_config.get("privacy-ledger-dir"):
        changes["ledger_dir"] = str(node_config["privacy-ledger-dir"])
    if str(node_config.get("privacy-budget-scope", "")) == "site":
        changes["budget_scope"] = "site"
    return dataclasses.replace(priv, **changes) if changes else priv


def public_bank(cfg: Mapping[str, Any], site: Any, priv: PrivacyConfig) -> NegativeBank:
    """The public negative bank at the site's store rate (cached per process)."""
    from clef_core.data.augment import ViewConfig
    from clef_core.data.noise import NoiseBank
    from clef_core.data.preprocess import PreprocessConfig

    prep = PreprocessConfig.from_dict(dict(site.store.preprocess))
    views = ViewConfig(**cfg["views"])
    key = (priv.bank_size, priv.bank_seed, repr(prep), repr(views))
    if key not in _BANKS:
        noise = NoiseBank(sample_rate=prep.sample_rate, noise_dir=views.noise_dir)
        _BANKS[key] = synthetic_bank(priv.bank_size, priv.bank_seed, prep, views, noise)
    return _BANKS[key]


def private_train(msg: Message, cfg: Mapping[str, Any], spec: Any, log: Any, *, node_config: Mapping[str, Any],
                  run_dir: str) -> Message:
    """One DP train round of this site (see the module docstring)."""
    from clef_core.train.config import LossConfig, TrainConfig
    from clef_core.train.loop import build_model
    from clef_core.train.trainer import Trainer, seed_everything
    from client.client_app import TRAIN_METRICS
    from client.site import prepared_site, pretrain_dataset

    conf = msg.content["config"]
    server_round = int(conf["server-round"])
    priv = site_privacy(cfg, node_config)
    train_cfg = TrainConfig(**cfg["train"])
    seed = int(conf.get("seed", train_cfg.seed))
    site = prepared_site(spec, cfg)
    dataset = pretrain_dataset(spec, cfg, site, seed)
    if len(dataset) == 0:
        raise ValueError(f"site {spec.site_id}: no usable patients")
    dataset.set_epoch(server_round)  # the views of this round (public seed: the noise is what is secret)
    global_state = msg.content["arrays"].to_torch_state_dict()
    seed_everything(seed * 1_000_003 + server_round)
    encoder = build_model(dict(cfg))
    encoder.load_state_dict(global_state)
    trainer = Trainer(encoder, LossConfig(**cfg["loss"]), train_cfg, device=spec.device or None)
    mu = float(conf.get("proximal-mu", 0.0))
    experiment = experiment_key(priv, run_dir)
    result = private_round(
        trainer, dataset, public_bank(cfg, site, priv), priv, ledger_for(priv, spec.work_dir),
        experiment=experiment, server_round=server_round, batch_size=train_cfg.batch_size,
        local_epochs=int(conf["local-epochs"]), local_steps=int(conf["local-steps"]), lr=float(conf["lr"]),
        proximal_mu=mu, global_params=global_state if mu > 0 else None, num_workers=train_cfg.num_workers)
    plan = result.plan
    if result.trained:
        stats = result.stats
        log.info("round %d (DP, experiment %s): %d steps at q=%.4f, sigma=%g, C=%g; epsilon %.4f (delta %g); "
                 "private loss %.4f, %d sampled patient-steps, %d empty batches, %.0f%% clipped, %.1f s",
                 server_round, experiment, plan.steps, plan.sample_rate, priv.noise_multiplier, priv.clip_norm,
                 result.epsilon, result.delta, stats.private_loss, stats.patients, stats.empty_batches,
                 100 * stats.clipped_fraction if math.isfinite(stats.clipped_fraction) else 0.0, stats.seconds)
    else:
        log.warning("round %d: privacy budget reached -- NOT training: epsilon would be %.4f > budget %.4g "
                    "(spent %.4f at delta %g, experiment %s); replying with the received weights", server_round,
                    plan.checked, plan.budget, result.epsilon, result.delta, experiment)
    steps = plan.steps if result.trained else 0
    metrics = dict.fromkeys(TRAIN_METRICS, 0.0)
    metrics.update({
        "num-examples": float(len(dataset)),
        "train_loss": result.public_loss,
        "examples": plan.sample_rate * len(dataset) * steps,
        "steps": float(steps),
        "seconds": result.stats.seconds if result.stats else 0.0,
        "site-index": float(spec.index),
        "privacy.epsilon": float(result.epsilon),
        "privacy.delta": float(result.delta),
        "privacy.budget_exhausted": 0.0 if result.trained else 1.0,
    })
    weights = strip_prefix(unwrap(trainer.model).state_dict())
    arrays = ArrayRecord({k: v.detach().cpu() for k, v in weights.items()})
    return Message(RecordDict({"arrays": arrays, "metrics": MetricRecord(metrics)}), reply_to=msg)
