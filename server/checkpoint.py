"""The server's run folder: atomic round checkpoints on top of :mod:`clef_core.run_folder`.

Layout of a run folder::

    checkpoints/round_00003.pt   global weights, round, strategy state, that round's metrics line
    metrics.jsonl                one JSON object per completed round
    final_model.pt               the final global encoder (clef_core.checkpoint format)
    status.json                  {"state": "starting" | "running" | "complete" | "failed" | "interrupted",
                                  "round": ..., ...}

A round is complete once its checkpoint file exists: it is written to a temporary file and
renamed (:meth:`clef_core.run_folder.RunFolder.save_state`), so a crash leaves either the old or the
new file, never half of one. The metrics line is appended after the checkpoint; on resume,
:meth:`ServerRunFolder.reconcile_metrics` rewrites metrics.jsonl to exactly the completed rounds (a
line lost in a crash is restored from the checkpoint, a line of an uncheckpointed round is
dropped). Checkpoints hold tensors and plain values only (``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clef_core.run_folder import RunFolder, dumps

FORMAT = "clef-fl-server-state"
FORMAT_VERSION = 1
ROUND_FILE = re.compile(r"^round_(\d{5})\.pt$")


class ResumeError(ValueError):
    """A run folder cannot be resumed with this experiment; the message says why."""


@dataclasses.dataclass
class ServerState:
    """Everything needed to continue after ``round``."""

    round: int
    arrays: dict[str, np.ndarray]
    strategy: dict[str, dict[str, np.ndarray]]
    metrics: dict[str, Any]
    fingerprint: dict[str, Any]

    def to_payload(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "round": int(self.round),
            "arrays": {k: torch.from_numpy(np.array(v, order="C")) for k, v in self.arrays.items()},
            "strategy": {name: {k: torch.from_numpy(np.array(v, order="C")) for k, v in part.items()}
                         for name, part in self.strategy.items()},
            "metrics_json": dumps(self.metrics),
            "fingerprint_json": json.dumps(self.fingerprint, sort_keys=True),
        }

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any], where: str) -> ServerState:
        if payload.get("format") != FORMAT or payload.get("format_version") != FORMAT_VERSION:
            raise ResumeError(f"{where}: not a clef-fl server checkpoint of version {FORMAT_VERSION}")
        return cls(
            round=int(payload["round"]),
            arrays={k: v.numpy() for k, v in payload["arrays"].items()},
            strategy={name: {k: v.numpy() for k, v in part.items()} for name, part in payload["strategy"].items()},
            metrics=json.loads(payload["metrics_json"]),
            fingerprint=json.loads(payload["fingerprint_json"]),
        )


class ServerRunFolder(RunFolder):
    """A run folder (:class:`clef_core.run_folder.RunFolder`) with the server's round checkpoints."""

    def __init__(self, root: str | Path) -> None:
        super().__init__(root)
        self.checkpoints = self.root / "checkpoints"
        self.final_model = self.root / "final_model.pt"

    def round_path(self, server_round: int) -> Path:
        return self.checkpoints / f"round_{server_round:05d}.pt"

    def rounds(self) -> list[int]:
        if not self.checkpoints.is_dir():
            return []
        return sorted(int(m.group(1)) for p in self.checkpoints.iterdir() if (m := ROUND_FILE.match(p.name)))

    def latest(self) -> ServerState | None:
        """The last complete round's state, or None for a fresh run folder."""
        rounds = self.rounds()
        if not rounds:
            return None
        path = self.round_path(rounds[-1])
        try:
            payload = self.load_state(path)
        except ValueError as exc:
            raise ResumeError(f"{exc}; delete it to resume from the round before") from exc
        if payload is None:  # removed since it was listed
            raise ResumeError(f"{path}: checkpoint vanished while resuming")
        return ServerState.from_payload(payload, str(path))

    def save_round(self, state: ServerState, keep: int = 0) -> Path:
        """Checkpoint ``state`` atomically, then log its metrics line; keep the last ``keep``
        checkpoints (0: all)."""
        path = self.save_state(state.to_payload(), self.round_path(state.round))
        self.append_metrics(state.metrics)
        if keep > 0:
            for old in self.rounds()[:-keep]:
                self.round_path(old).unlink(missing_ok=True)
        return path

    def reconcile_metrics(self, state: ServerState | None) -> None:
        """Make metrics.jsonl hold exactly one line per completed round up to ``state.round``."""
        last = state.round if state is not None else 0

        def completed(line: Mapping[str, object]) -> bool:
            done = line.get("round")
            return isinstance(done, int) and done <= last

        self.truncate_metrics(completed, restore=[state.metrics] if state is not None else [], key="round")


def check_same_experiment(state: ServerState, fingerprint: Mapping[str, object], arrays: Mapping[str, np.ndarray],
                          where: str) -> None:
    """A checkpoint may continue only the same encoder, strategy and loss (rounds, lr, local
    steps, sites sampled may change)."""
    for key in ("encoder", "strategy", "loss"):
        if state.fingerprint.get(key) != fingerprint.get(key):
            raise ResumeError(f"{where}: the run was made with {key} {state.fingerprint.get(key)!r}, the config now "
                              f"says {fingerprint.get(key)!r}; use a new run folder")
    shapes = {k: tuple(v.shape) for k, v in arrays.items()}
    saved = {k: tuple(v.shape) for k, v in state.arrays.items()}
    if shapes != saved:
        raise ResumeError(f"{where}: the checkpointed weights do not fit the configured encoder")
