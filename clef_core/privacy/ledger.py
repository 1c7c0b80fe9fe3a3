"""A site's privacy ledger: every private release, on the site's own disk, append-only.

One JSON object per line, appended after each round's training and before the round's reply
leaves the site::

    {"experiment": "run-3f2a9c01", "round": 4, "mode": "patient", "noise_multiplier": 1.1,
     "sample_rate": 0.125, "steps": 8, "delta": 1e-05, "clip_norm": 1.0, "epsilon": 2.71,
     "time": "2026-05-01T10:00:00+00:00"}

``epsilon`` is the cumulative epsilon of the experiment after that entry; it is informational:
the truth is the (noise_multiplier, sample_rate, steps) entries, which :meth:`epsilon` composes
afresh (:func:`clef_core.privacy.accounting.epsilon`, replace-one adjacency) on every call.
Nothing is held in memory between rounds, so restarts, resumed runs and new processes all see
the same spending; a round a resumed server replays is a second release and is counted twice, as
it must be.

Appends are one ``write`` of a whole line under an exclusive ``flock`` followed by ``fsync``. A
line that cannot be parsed, or whose fields have the wrong type (``"steps": 5.9``), makes the
ledger unreadable (:class:`LedgerError`): a site must not under-count its spending, so it refuses
to train until a person looks at the file.

Two more guards, both for :meth:`PrivacyLedger.reserve` (the budget check and the append of one
round, which must not interleave with another process's):

* ``<ledger dir>/ledger.lock`` -- an exclusive ``flock`` held from the budget check through the
  append, so two runs (two ClientApp processes, or two SuperNodes sharing the folder) cannot both
  pass the check against the same spending;
* the high-water mark (``<site work dir>/ledger.mark.json``, beside the site's store): how many
  entries the ledger held after the site's last append, and where it was. A ledger with fewer
  entries than the mark (deleted, emptied, moved to a new ``privacy-ledger-dir``) stops the site.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from clef_core.atomic import write_json_atomic
from clef_core.privacy.accounting import SITE_ADJACENCY, epsilon_of_curve, rdp_add_remove

LEDGER_FILE = "ledger.jsonl"
LOCK_FILE = "ledger.lock"
MARK_FILE = "ledger.mark.json"  # the high-water mark's name, in the site's work dir (beside its store)
FIELDS = ("experiment", "round", "mode", "noise_multiplier", "sample_rate", "steps", "delta")
_NUMBER = (int, float)
TYPES: dict[str, tuple[type, ...]] = {"experiment": (str,), "round": (int,), "mode": (str,),
                                      "noise_multiplier": _NUMBER, "sample_rate": _NUMBER, "steps": (int,),
                                      "delta": _NUMBER, "clip_norm": _NUMBER, "epsilon": _NUMBER, "time": (str,)}


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


def _typed(data: dict[str, Any]) -> dict[str, Any]:
    """The entry's fields, each of its type (bool is not a number; 5.9 is not a step count)."""
    missing = [k for k in FIELDS if k not in data]
    if missing:
        raise ValueError(f"missing {missing}")
    for key, value in data.items():
        want = TYPES.get(key)
        if want is not None and (isinstance(value, bool) or not isinstance(value, want)):
            raise ValueError(f"{key} = {value!r} is not of type {'/'.join(t.__name__ for t in want)}")
    return {k: data[k] for k in TYPES if k in data}


class PrivacyLedger:
    """The ledger file of one site (``<dir>/ledger.jsonl``), with its high-water mark ``mark``
    (a file outside ``dir``: docstring) when given."""

    def __init__(self, directory: str | Path, mark: str | Path | None = None) -> None:
        self.path = Path(directory) / LEDGER_FILE
        self.mark = Path(mark) if mark is not None else None

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
                    if not isinstance(data, dict):
                        raise ValueError("not a JSON object")
                    entry = Entry(**_typed(data))
                except (ValueError, TypeError) as exc:
                    raise LedgerError(f"{self.path}: line {number} is unreadable ({exc}); the site's spending cannot be "
                                      f"established, so it will not train until the ledger is repaired") from exc
                if experiment is None or entry.experiment == experiment:
                    out.append(entry)
        return out

    def curves(self, experiment: str) -> tuple[np.ndarray, np.ndarray]:
        """The composed add/remove RDP curves of ``experiment``'s entries and of the whole site's,
        from one read of the file (:func:`clef_core.privacy.accounting.rdp_add_remove`)."""
        entries = self.entries()
        return (rdp_add_remove(e.step() for e in entries if e.experiment == experiment),
                rdp_add_remove(e.step() for e in entries))

    def epsilon(self, delta: float, experiment: str | None = None,
                planned: tuple[float, float, int] | None = None) -> float:
        """Cumulative epsilon of the entries (of ``experiment``, or the whole site when None) at
        ``delta``, with one more ``planned`` (sigma, q, steps) entry when given."""
        history = [e.step() for e in self.entries(experiment)]
        if planned is not None:
            history.append(planned)
        return epsilon_of_curve(rdp_add_remove(history), delta, SITE_ADJACENCY)

    @contextlib.contextmanager
    def reserve(self) -> Iterator[PrivacyLedger]:
        """Hold ``ledger.lock`` (exclusive ``flock``) for a budget check and its append; first
        checks the high-water mark (module docstring)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path.parent / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self.check_mark()
            yield self
        finally:
            os.close(fd)  # closing releases the lock

    def check_mark(self) -> None:
        """:class:`LedgerError` when the ledger holds fewer entries than the site's high-water mark."""
        if self.mark is None or not self.mark.is_file():
            return
        try:
            mark = json.loads(self.mark.read_text(encoding="utf-8"))
            seen = int(mark["entries"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise LedgerError(f"{self.mark}: the ledger's high-water mark is unreadable ({exc}); the site will not "
                              f"train until a person looks at it") from exc
        held = len(self.entries())
        if held < seen:
            raise LedgerError(f"{self.path} holds {held} entries, but this site recorded {seen} (last in "
                              f"{mark.get('ledger')}, see {self.mark}): its ledger was deleted, emptied or moved, so "
                              f"its spending cannot be established; it will not train until the ledger is restored")

    def _raise_mark(self) -> None:
        """Move the high-water mark up to the ledger's entry count (never down)."""
        if self.mark is None:
            return
        held = len(self.entries())
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            held = max(held, int(json.loads(self.mark.read_text(encoding="utf-8"))["entries"]))
        write_json_atomic(self.mark, {"entries": held, "ledger": str(self.path.resolve())})

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
        self._raise_mark()
        return entry


def _plain(data: dict[str, Any]) -> dict[str, Any]:
    """NaN is not JSON: drop unknown informational values."""
    return {k: v for k, v in data.items() if not (isinstance(v, float) and v != v)}
