"""A site's privacy ledger: every private release, on the site's own disk, append-only.

One JSON object per line, appended after each round's training and before the round's reply
leaves the site::

    {"experiment": "run-3f2a9c01", "round": 4, "mode": "patient", "noise_multiplier": 1.1,
     "sample_rate": 0.125, "steps": 8, "delta": 1e-05, "clip_norm": 1.0, "epsilon": 2.71,
     "time": "2026-05-01T10:00:00+00:00"}

``epsilon`` is the cumulative epsilon of the experiment after that entry; it is informational:
the truth is the (noise_multiplier, sample_rate, steps) entries, which :meth:`epsilon` composes
afresh (:func:`clef_core.privacy.accounting.epsilon`) on every call. Nothing is held in memory
between rounds, so restarts, resumed runs and new processes all see the same spending; a round a
resumed server replays is a second release and is counted twice, as it must be.

Appends are one ``write`` of a whole line under an exclusive ``flock`` followed by ``fsync``. A
line that cannot be parsed makes the ledger unreadable (:class:`LedgerError`): a site must not
under-count its spending, so it refuses to train until a person looks at the file.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import fcntl
import json
import os
from pathlib import Path
from typing import Any

from clef_core.privacy.accounting import epsilon as compose_epsilon

LEDGER_FILE = "ledger.jsonl"
FIELDS = ("experiment", "round", "mode", "noise_multiplier", "sample_rate", "steps", "delta")


class LedgerError(RuntimeError):
    """The ledger cannot be read reliably; training must stop until it is repaired."""


@dataclasses.dataclass(frozen=True)
class Entry:
    experiment: str
    round: int
    mode: str
    noise_multiplier: float
    sample_rate: float
    steps: int
    delta: float
    clip_norm: float = float("nan")
    epsilon: float = float("nan")
    time: str = ""

    def step(self) -> tuple[float, float, int]:
        return self.noise_multiplier, self.sample_rate, self.steps


class PrivacyLedger:
    """The ledger file of one site (``<dir>/ledger.jsonl``)."""

    def __init__(self, directory: str | Path) -> None:
        self.path = Path(directory) / LEDGER_FILE

    def entries(self, experiment: str | None = None) -> list[Entry]:
        """All entries (of ``experiment`` when given), in the order they were written."""
        if not self.path.is_file():
            return []
        out = []
        with open(self.path, encoding="utf-8") as fh:
            for number, text in enumerate(fh, start=1):
                if not text.strip():
                    continue
                try:
                    data = json.loads(text)
                    missing = [k for k in FIELDS if k not in data]
                    if missing:
                        raise ValueError(f"missing {missing}")
                    entry = Entry(**{k: data[k] for k in (f.name for f in dataclasses.fields(Entry)) if k in data})
                except (ValueError, TypeError) as exc:
                    raise LedgerError(f"{self.path}: line {number} is unreadable ({exc}); the site's spending cannot be "
                                      f"established, so it will not train until the ledger is repaired") from exc
                if experiment is None or entry.experiment == experiment:
                    out.append(entry)
        return out

    def epsilon(self, delta: float, experiment: str | None = None,
                planned: tuple[float, float, int] | None = None) -> float:
        """Cumulative epsilon of the entries (of ``experiment``, or the whole site when None) at
        ``delta``, with one more ``planned`` (sigma, q, steps) entry when given."""
        history = [e.step() for e in self.entries(experiment)]
        if planned is not None:
            history.append(planned)
        return compose_epsilon(history, delta)

    def append(self, entry: Entry) -> Entry:
        """Record a release durably (flock + one write + fsync); returns the entry as written."""
        if entry.steps < 0 or not 0 < entry.sample_rate <= 1 or entry.noise_multiplier <= 0:
            raise ValueError(f"ledger: refusing an invalid entry {entry}")
        if not entry.time:
            entry = dataclasses.replace(entry, time=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = (json.dumps(_plain(dataclasses.asdict(entry)), allow_nan=False) + "\n").encode("utf-8")
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            written = os.write(fd, line)
            if written != len(line):
                raise LedgerError(f"{self.path}: short write ({written} of {len(line)} bytes)")
            os.fsync(fd)
        finally:
            os.close(fd)  # closing releases the lock
        return entry


def _plain(data: dict[str, Any]) -> dict[str, Any]:
    """NaN is not JSON: drop unknown informational values."""
    return {k: v for k, v in data.items() if not (isinstance(v, float) and v != v)}
