"""The hospital's Flower ClientApp (``clientapp`` component in pyproject.toml).

``train``: load the round's global weights, run the clef_core training loop on this site's own
data (:mod:`client.site`) for the configured local epochs/steps at the lr the server sends, and
reply with exactly one ArrayRecord (the new weights) and one MetricRecord of fixed numeric keys
(:data:`TRAIN_METRICS`); under ``privacy.mode = "patient"`` the round is DP-SGD instead
(:mod:`client.privacy`). ``evaluate``: the CLEF loss of the global weights on a few local batches.

What crosses to the server is only weights and those aggregate numbers. Record names, patient
ids, paths and error text stay in the site's log (``<work-dir>/site.log``): a failure is raised
to Flower as :class:`SiteFailure` naming only the exception type, because Flower forwards the
exception text to the server as the error reply's reason.

Optimizer state between rounds: reset. Each round builds a fresh AdamW on the received global
weights and discards it afterwards; nothing about training is kept on the site between rounds
except the prepared data. Reasons: the global weights a site receives moved since its last
round (Adam moments of old weights are stale, more so when sites are sampled and skip rounds),
a reset client makes a round a pure function of (global weights, round, site data) so a resumed
server reproduces it, and a stateless site survives restarts (see docs/federated.md).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping
from typing import Any

import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from clef_core.checkpoint import strip_prefix, unwrap
from clef_core.data.errors import REASONS
from clef_core.train.config import LossConfig, TrainConfig
from clef_core.train.loop import build_model, make_loader
from clef_core.train.trainer import Trainer, make_loss, resolve_device, seed_everything
from client.site import SiteSpec, prepared_site, pretrain_dataset, resolve_site, site_log
from server.settings import experiment_config, run_dir

SKIP_KEYS = tuple(f"skipped.{r}" for r in REASONS) + ("skipped.other", "skipped.empty_batches",
                                                       "skipped.windows_without_leads")
TRAIN_METRICS = ("num-examples", "train_loss", "examples", "steps", "seconds", "site-index") + SKIP_KEYS
EVALUATE_METRICS = ("num-examples", "eval_loss", "site-index")
DEFAULT_EVAL_BATCHES = 4

app = ClientApp()


class SiteFailure(RuntimeError):
    """A site could not do its part this round; the details are in the site's own log only."""


def _simulated(context: Context) -> bool:
    return "partition-id" in context.node_config


def _limit_threads(context: Context) -> None:
    # a simulated client gets one CPU from Ray: one torch thread, or the sites fight for cores
    if _simulated(context):
        torch.set_num_threads(1)
        os.environ.setdefault("OMP_NUM_THREADS", "1")


def guarded(stage: str, msg: Message, context: Context, work: Any) -> Message:
    """Run ``work(cfg, spec, log)``; on any failure log everything locally and raise a bare
    :class:`SiteFailure`."""
    _limit_threads(context)
    spec = None
    try:
        cfg = experiment_config(context.run_config)
        spec = resolve_site(context.node_config, context.run_config)
        log = site_log(spec)
        log.info("%s round %s: start", stage, msg.content["config"].get("server-round", "?"))
        reply = work(cfg, spec, log)
        log.info("%s: done %s", stage, dict(next(iter(reply.content.metric_records.values()))))
        return reply
    except Exception as exc:
        _log_failure(spec, stage, exc)
        raise SiteFailure(f"site {stage} failed ({type(exc).__name__}); details are in the site's own log") from None


def _log_failure(spec: SiteSpec | None, stage: str, exc: Exception) -> None:
    try:
        if spec is None:
            raise OSError("no site resolved")
        site_log(spec).exception("%s failed", stage, exc_info=exc)
    except Exception:  # no writable site log: the SuperNode's own console is still the site's
        import logging

        logging.getLogger("clef.site").error("%s failed", stage, exc_info=exc)


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


def local_train(msg: Message, cfg: Mapping[str, Any], spec: SiteSpec, log: Any) -> Message:
    conf = msg.content["config"]
    server_round = int(conf["server-round"])
    lr, epochs, step_cap = float(conf["lr"]), int(conf["local-epochs"]), int(conf["local-steps"])
    mu = float(conf.get("proximal-mu", 0.0))
    seed = int(conf.get("seed", cfg["train"]["seed"]))
    train_cfg = TrainConfig(**cfg["train"])
    site = prepared_site(spec, cfg)
    dataset = pretrain_dataset(spec, cfg, site, seed)
    if len(dataset) == 0:
        raise ValueError(f"site {spec.site_id}: no usable patients")
    global_state = msg.content["arrays"].to_torch_state_dict()
    seed_everything(seed * 1_000_003 + server_round)
    encoder = build_model(dict(cfg))
    encoder.load_state_dict(global_state)
    trainer = Trainer(encoder, LossConfig(**cfg["loss"]), train_cfg, device=spec.device or None)
    started = time.perf_counter()
    steps = examples = empty = 0
    loss_sum = 0.0
    on_step = None
    for local_epoch in range(epochs):
        remaining = step_cap - steps if step_cap else None
        if remaining is not None and remaining <= 0:
            break
        loader = make_loader(dataset, train_cfg, epoch=(server_round - 1) * epochs + local_epoch)
        if on_step is None:
            total = epochs * len(loader) if not step_cap else min(step_cap, epochs * len(loader))
            on_step = step_progress(f"site {spec.site_id} round {server_round}", total)
        stats = trainer.train_epoch(loader, lr=lr, max_steps=remaining, proximal_mu=mu,
                                    global_params=global_state if mu > 0 else None, on_step=on_step)
        steps += stats.steps
        examples += stats.examples
        empty += stats.skipped_empty_batches
        loss_sum += stats.loss * stats.steps if stats.steps else 0.0
    seconds = time.perf_counter() - started
    metrics = {
        "num-examples": float(len(dataset)),
        "train_loss": loss_sum / steps if steps else math.nan,
        "examples": float(examples),
        "steps": float(steps),
        "seconds": seconds,
        "site-index": float(spec.index),
        **skip_counts(site, dataset, empty),
    }
    if not math.isfinite(metrics["train_loss"]):
        raise ValueError(f"site {spec.site_id}: no training step was made")
    log.info("round %d: %d steps over %d patients at lr %.3g in %.1f s", server_round, steps, len(dataset), lr, seconds)
    weights = strip_prefix(unwrap(trainer.model).state_dict())
    arrays = ArrayRecord({k: v.detach().cpu() for k, v in weights.items()})
    return Message(RecordDict({"arrays": arrays, "metrics": MetricRecord(metrics)}), reply_to=msg)


def step_progress(label: str, total: int, parts: int = 4) -> Any:
    """An ``on_step`` that prints ``clef: <label>: step k/total`` at every quarter of the round to
    the site's console (in simulation ``clef simulate`` echoes it; no data, only counts)."""
    every = max(1, total // parts)
    done = [0]

    def on_step(info: Any) -> None:
        done[0] += 1
        if done[0] % every == 0 or done[0] == total:
            print(f"clef: {label}: step {done[0]}/{total}, loss {info.loss:.4f}", flush=True)

    return on_step


@torch.no_grad()
def local_evaluate(msg: Message, cfg: Mapping[str, Any], spec: SiteSpec, log: Any) -> Message:
    conf = msg.content["config"]
    server_round = int(conf.get("server-round", 0))
    train_cfg = TrainConfig(**cfg["train"])
    site = prepared_site(spec, cfg)
    dataset = pretrain_dataset(spec, cfg, site, train_cfg.seed)
    encoder = build_model(dict(cfg))
    encoder.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    device = resolve_device(spec.device or train_cfg.device)
    encoder = encoder.to(device).eval()
    loss_fn = make_loss(LossConfig(**cfg["loss"]))
    # a fixed epoch id keeps the evaluation views the same in every round
    loader = make_loader(dataset, train_cfg, epoch=10**6)
    total = count = 0.0
    for i, batch in enumerate(loader):
        if i >= int(conf.get("eval-batches", DEFAULT_EVAL_BATCHES)):
            break
        n = batch["view1"].shape[0]
        z = encoder(torch.cat([batch["view1"], batch["view2"]]).to(device))
        loss = loss_fn(z.float(), torch.as_tensor(batch["risk"], dtype=torch.float32, device=device),
                       torch.as_tensor(batch["completeness"], dtype=torch.float32, device=device))
        total += float(loss) * n
        count += n
    if not count:
        raise ValueError(f"site {spec.site_id}: nothing to evaluate")
    log.info("evaluate round %d: loss %.4f over %d patients", server_round, total / count, count)
    metrics = MetricRecord({"num-examples": count, "eval_loss": total / count, "site-index": float(spec.index)})
    return Message(RecordDict({"metrics": metrics}), reply_to=msg)


def site_train(msg: Message, context: Context, cfg: Mapping[str, Any], spec: SiteSpec, log: Any) -> Message:
    """The round's training: DP-SGD under ``privacy.mode = "patient"`` (client/privacy.py), else
    :func:`local_train`."""
    if str(cfg.get("privacy", {}).get("mode", "off")) == "patient":
        from client.privacy import private_train

        return private_train(msg, cfg, spec, log, node_config=context.node_config,
                             run_dir=str(run_dir(context.run_config)))
    return local_train(msg, cfg, spec, log)


@app.train()
def train(msg: Message, context: Context) -> Message:
    return guarded("train", msg, context, lambda cfg, spec, log: site_train(msg, context, cfg, spec, log))


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    return guarded("evaluate", msg, context, lambda cfg, spec, log: local_evaluate(msg, cfg, spec, log))
