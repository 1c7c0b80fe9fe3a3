"""The server's round loop: train, screen, aggregate, evaluate, checkpoint, log -- resumable.

Flower's ``Strategy.start`` always counts rounds from 1 and keeps its state in memory, so the
loop is written out here (the same steps, in the same order) to start at the round after the
last checkpoint with the checkpointed weights and server-optimizer state, and to make every
round durable before the next begins:

1. ``configure_train`` with the round's train config (client lr from one cosine schedule over
   all rounds, local epochs/steps, seed); Flower samples ``fraction_train`` of the nodes (at
   least ``min_train_nodes``) once ``min_available_nodes`` are connected;
2. ``send_and_receive`` with ``round_timeout``; failed, missing and rejected replies are
   reported (:mod:`server.validation`) and never averaged in; fewer than ``min_train_nodes``
   accepted replies fail the run (the last complete round stays on disk: rerun to resume);
3. optional federated evaluation and the server-side linear probe;
4. an atomic checkpoint, then the round's metrics line.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message
from flwr.serverapp import Grid

from clef_core.checkpoint import encoder_config_of, save_model
from clef_core.data.preprocess import PreprocessConfig
from clef_core.encoders.config import make_config
from clef_core.task import build_model
from clef_core.train.config import TrainConfig
from clef_core.train.trainer import seed_everything
from clef_core.federation.contract import SITE_INDEX_KEY
from clef_core.federation.sites import site_names
from clef_core.run_folder import COMPLETE, FAILED, RUNNING, json_safe
from server.checkpoint import ServerRunFolder, ServerState, check_same_experiment
from server.probe import ProbeSet, linear_probe
from server.settings import FederationSettings
from server.privacy import BudgetReached, server_privacy
from server.strategy import round_lr
from server.validation import Verdict, reply_bytes

log = logging.getLogger("clef.server")


class RoundFailed(RuntimeError):
    """Too few sites delivered a usable update; the run stops after its last complete round."""


def initial_arrays(cfg: Mapping[str, Any]) -> tuple[torch.nn.Module, ArrayRecord]:
    """The encoder of ``[model]`` initialised from ``train.seed`` and its weights as an ArrayRecord."""
    seed_everything(int(cfg["train"]["seed"]))
    encoder = build_model(make_config(**cfg["model"]))
    return encoder, ArrayRecord(encoder.state_dict())


def load_arrays(encoder: torch.nn.Module, arrays: Mapping[str, np.ndarray]) -> torch.nn.Module:
    encoder.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in arrays.items()})
    return encoder




class Federation:
    """One federated run in one run folder (see the module docstring)."""

    def __init__(self, cfg: Mapping[str, Any], folder: ServerRunFolder, manifest: Path,
                 probe: ProbeSet | None = None, probe_note: str = "") -> None:
        self.cfg = cfg
        self.settings = FederationSettings.from_config(cfg)
        self.train_cfg = TrainConfig(**cfg["train"])
        self.folder = folder
        self.names = site_names(manifest)
        self.probe = probe
        self.probe_note = probe_note
        self.encoder, arrays = initial_arrays(cfg)
        self.arrays = arrays
        self.fingerprint = {"encoder": encoder_config_of(self.encoder), "strategy": self.settings.strategy,
                            "loss": dict(cfg["loss"])}
        self.start_round = 1
        state = folder.latest()
        if state is not None:
            check_same_experiment(state, self.fingerprint, {k: v.numpy() for k, v in arrays.items()}, str(folder.root))
            self.arrays = ArrayRecord({k: Array(np.array(v, order="C")) for k, v in state.arrays.items()})
            self.start_round = state.round + 1
        folder.reconcile_metrics(state)
        self.privacy = server_privacy(cfg, folder.read_metrics())
        self.strategy = self.privacy.strategy(self.settings, self.train_cfg.lr)
        if state is not None:
            self.strategy.load_state_dict(state.strategy)

    # ------------------------------------------------------------------ one run

    def run(self, grid: Grid) -> Path:
        s = self.settings
        nodes = len(list(grid.get_node_ids()))
        if self.names and nodes != len(self.names):
            log.warning("%d nodes are connected but sites.json lists %d sites: in simulation, set num-supernodes "
                        "to the number of sites", nodes, len(self.names))
        if self.start_round > s.rounds:
            log.info("run folder %s already has %d rounds (asked for %d): nothing to train",
                     self.folder.root, self.start_round - 1, s.rounds)
        else:
            log.info("federated rounds %d..%d in %s: %s", self.start_round, s.rounds, self.folder.root, s.describe())
        stopped = {}
        for server_round in range(self.start_round, s.rounds + 1):
            self.folder.write_status(RUNNING, round=server_round - 1, rounds=s.rounds)
            try:
                self.run_round(grid, server_round)
            except BudgetReached as exc:  # a privacy budget ends the run with the last round's model
                log.warning("the run ends after round %d: %s", server_round - 1, exc)
                stopped = {"stopped": str(exc)}
                break
        final = self.save_final()
        last = self.folder.rounds()
        self.folder.write_status(COMPLETE, round=last[-1] if last else 0, rounds=s.rounds,
                                 final_model=str(final), **stopped)
        return final

    def train_config(self, server_round: int) -> ConfigRecord:
        s = self.settings
        lr = round_lr(server_round, s.rounds, self.train_cfg.lr, s.lr_min, s.lr_schedule)
        return ConfigRecord({"lr": lr, "local-epochs": s.local_epochs, "local-steps": s.local_steps,
                             "seed": self.train_cfg.seed})

    def run_round(self, grid: Grid, server_round: int) -> dict[str, Any]:
        started = time.perf_counter()
        config = self.train_config(server_round)
        messages = list(self.strategy.configure_train(server_round, self.arrays, config, grid))
        replies = list(grid.send_and_receive(messages, timeout=self.settings.round_timeout))
        arrays, metrics = self.strategy.aggregate_train(server_round, replies)
        screen = self.strategy.last_screen
        if arrays is None:
            if self.privacy.budget_stop(screen):
                raise BudgetReached(f"round {server_round}: every site that could train is out of its privacy budget")
            self._fail(server_round, screen, len(messages))
        sent_arrays, self.arrays = self.arrays, arrays
        line: dict[str, Any] = {
            "round": server_round,
            "train_loss": json_safe(float(metrics["train_loss"])) if metrics and "train_loss" in metrics else None,
            "lr": float(config["lr"]),
            "sampled": len(messages),
            "accepted": len(screen.accepted),
            "rejected": screen.count("rejected"),
            "failed": screen.count("failed") + screen.count("missing"),
            "bytes_sent": sum(_content_bytes(m) for m in messages),
            "bytes_received": sum(reply_bytes(r) for r in replies),
            "train": {k: json_safe(float(v)) for k, v in (metrics or {}).items()},
            "sites": self._site_entries(screen.verdicts),
        }
        if server_round == 1 and self.probe is not None and self.settings.eval_every:
            initial = self._probe(sent_arrays)  # the encoder before any training: round 0 of the plots
            line["probe_auroc_initial"] = initial.get("probe_auroc")
            line["probe_initial"] = initial
        line.update(self.privacy.round_fields(self.strategy, screen))
        line.update(self.evaluate(grid, server_round))
        line["seconds"] = round(time.perf_counter() - started, 3)
        line["time"] = time.time()
        state = ServerState(server_round, {k: v.numpy() for k, v in self.arrays.items()},
                            self.strategy.state_dict(), line, self.fingerprint)
        self.folder.save_round(state, keep=self.settings.keep_checkpoints)
        loss = "n/a" if line["train_loss"] is None else f"{line['train_loss']:.4f}"
        log.info("round %d: train_loss %s, %d/%d sites accepted, %.1f s", server_round, loss,
                 line["accepted"], line["sampled"], line["seconds"])
        return line

    def _fail(self, server_round: int, screen: Any, sampled: int) -> None:
        sites = ", ".join(f"node {v.node_id}: {v.status} ({v.reason})" for v in screen.verdicts
                          if v.status != "accepted")
        error = (f"round {server_round}: only {len(screen.accepted)} of {sampled} sampled sites gave a usable "
                 f"update (min_train_nodes = {self.settings.min_train_nodes})")
        self.folder.write_status(FAILED, round=server_round - 1, rounds=self.settings.rounds, error=error,
                                 sites=sites)
        raise RoundFailed(f"{error}: {sites}")

    def _probe(self, arrays: ArrayRecord) -> dict[str, float]:
        encoder = load_arrays(self.encoder, {k: v.numpy() for k, v in arrays.items()})
        return {k: round(v, 6) for k, v in linear_probe(encoder, self.probe, seed=self.train_cfg.seed).items()}

    def _site_entries(self, verdicts: list[Verdict]) -> list[dict[str, Any]]:
        """Per-site lines. A failed or silent node sends no metrics, so its site is unknown to
        the server; in simulation it is one of the sites that did not answer, and it is named
        when that leaves no doubt."""
        entries, unnamed = [], []
        answered = set()
        for verdict in verdicts:
            entry = {k: json_safe(v) for k, v in verdict.to_dict().items()}
            index = verdict.metrics.get(SITE_INDEX_KEY)
            if index is not None and int(index) >= 0:
                entry["site"] = self.names.get(int(index), f"site-{int(index)}")
                answered.add(int(index))
            else:
                unnamed.append(entry)
            entries.append(entry)
        silent = [name for i, name in sorted(self.names.items()) if i not in answered]
        if unnamed and len(silent) == len(unnamed):
            for entry, name in zip(unnamed, silent, strict=True):
                entry["site"] = name if len(silent) == 1 else f"one of {', '.join(silent)}"
        return entries

    def evaluate(self, grid: Grid, server_round: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.settings.fraction_evaluate > 0:
            messages = list(self.strategy.configure_evaluate(server_round, self.arrays, ConfigRecord(), grid))
            replies = list(grid.send_and_receive(messages, timeout=self.settings.round_timeout))
            ok = [r for r in replies if not r.has_error()]
            try:
                metrics = self.strategy.aggregate_evaluate(server_round, ok) if ok else None
            except Exception as exc:  # inconsistent replies: report, keep training
                log.warning("round %d: federated evaluation not aggregated (%s)", server_round, exc)
                metrics = None
            out["eval"] = {k: json_safe(float(v)) for k, v in (metrics or {}).items()}
            out["eval_failed"] = len(messages) - len(ok)
        every = self.settings.eval_every
        if self.probe is not None and every and (server_round % every == 0 or server_round == self.settings.rounds):
            out.update(self._probe(self.arrays))
        elif self.probe is None and self.probe_note:
            out["probe"] = self.probe_note
        return out

    def save_final(self) -> Path:
        encoder = load_arrays(self.encoder, {k: v.numpy() for k, v in self.arrays.items()})
        lines = self.folder.read_metrics()
        return save_model(
            self.folder.final_model,
            encoder,
            preprocess=PreprocessConfig(**self.cfg["preprocess"]).to_dict(),
            provenance={
                "kind": "federated-pretrain",
                "federation": dict(self.cfg["federation"]),
                "loss": dict(self.cfg["loss"]),
                "train": dict(self.cfg["train"]),
                "model": dict(self.cfg["model"]),
                "views": dict(self.cfg["views"]),
                "risk": dict(self.cfg["risk"]),
                "rounds": len(lines),
                "final_train_loss": lines[-1].get("train_loss") if lines else None,
                "sites": sorted({s.get("site", f"node-{s['node_id']}") for line in lines for s in line["sites"]
                                 if s["status"] == "accepted"}),
                "privacy": self.privacy.provenance(),
                "torch_version": torch.__version__,
            },
        )


def _content_bytes(message: Message) -> int:
    content = message.content
    return (sum(r.count_bytes() for r in content.array_records.values())
            + sum(r.count_bytes() for r in content.config_records.values()))
