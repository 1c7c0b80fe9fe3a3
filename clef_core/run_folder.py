"""A resumable command's run folder: atomic state files, metrics.jsonl, status.json, NaN-safe JSON.

Central pretraining (:mod:`clef_core.train.loop`), distillation (:mod:`clef_core.distill`) and
the federated server (:mod:`server.checkpoint`, which adds its round checkpoints) keep their
runs in one folder each::

    <state>.pt      what the command needs to continue (train_state.pt, distill_state.pt,
                    checkpoints/round_00003.pt), written atomically (:mod:`clef_core.atomic`)
    metrics.jsonl   one JSON object per line, appended and flushed as the run goes
    status.json     {"state": "starting" | "running" | "complete" | "failed" | "interrupted", ...}

Crash consistency: a state file is replaced atomically, so it always describes a whole epoch
(round); metrics lines are appended after it or during the next epoch, so a crash can leave
lines the state does not cover, a line cut mid-write, or (server) a state whose line was never
written. On resume :meth:`RunFolder.truncate_metrics` rewrites metrics.jsonl (atomically) to
exactly the lines the state covers, restoring the state's own line when it was lost: no line is
duplicated or orphaned.

JSON has no NaN or infinity (RFC 8259 section 6); :func:`json_safe` writes them as ``null`` (an
undefined metric, e.g. an AUROC without positives), and numpy/torch numbers as Python numbers.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from clef_core.atomic import atomic_torch_save, write_text_atomic

METRICS_FILE = "metrics.jsonl"
STATUS_FILE = "status.json"

STARTING, RUNNING, COMPLETE, FAILED, INTERRUPTED = "starting", "running", "complete", "failed", "interrupted"
LIVE_STATES = frozenset({STARTING, RUNNING})  # a run that says this and holds no lock has died


def json_safe(value: object) -> object:
    """``value`` with every non-finite float as None, numpy/torch values as Python values (arrays
    as lists), tuples as lists and mapping keys as strings: what :func:`json.dumps` writes
    with ``allow_nan=False``."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    tolist = getattr(value, "tolist", None)  # numpy / torch scalars and arrays
    if callable(tolist) and not isinstance(value, (str, bytes)):
        return json_safe(tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def dumps(value: object, *, indent: int | None = None, sort_keys: bool = False,
          default: Callable[[object], object] | None = None) -> str:
    """:func:`json.dumps` of :func:`json_safe` ``(value)``; strict JSON (never ``NaN``). ``default``
    turns what JSON has no type for into what it has (e.g. ``str`` for paths), as in json.dumps."""
    return json.dumps(json_safe(value), allow_nan=False, indent=indent, sort_keys=sort_keys, default=default)


def covered(epoch: int, step: int) -> Callable[[Mapping[str, object]], bool]:
    """The metrics lines a training state saved after ``epoch`` epochs and ``step`` steps covers
    (a line without a counter counts as 0 for it)."""
    def within(line: Mapping[str, object]) -> bool:
        e, s = line.get("epoch", 0), line.get("step", 0)
        return isinstance(e, int) and isinstance(s, int) and e <= epoch and s <= step

    return within


class MetricsLog:
    """metrics.jsonl open for appending: one :func:`dumps` line per record, flushed and fsynced
    (a crash loses at most the line being written, which :meth:`RunFolder.read_metrics` skips)."""

    def __init__(self, fh: IO[str]) -> None:
        self._fh = fh

    def append(self, record: Mapping[str, object]) -> None:
        self._fh.write(dumps(record) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())


@contextlib.contextmanager
def open_metrics_log(path: str | Path) -> Iterator[MetricsLog]:
    """``path`` (a metrics.jsonl) open for appending for the duration of the block."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        yield MetricsLog(fh)


class RunFolder:
    """The files every resumable command keeps (see the module docstring)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.metrics = self.root / METRICS_FILE
        self.status_file = self.root / STATUS_FILE

    # ------------------------------------------------------------------ state

    def save_state(self, payload: Mapping[str, object], name: str | Path) -> Path:
        """``torch.save`` ``payload`` (tensors and plain values) to ``root/name`` atomically."""
        return atomic_torch_save(dict(payload), self.root / name)

    def load_state(self, name: str | Path) -> dict[str, object] | None:
        """The state saved as ``root/name`` (None when there is none), loaded with
        ``weights_only=True``; an unreadable file is a :class:`ValueError` naming it."""
        import torch

        path = self.root / name
        if not path.is_file():
            return None
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # an atomic write cannot leave this; a disk fault or another program can
            raise ValueError(f"{path}: unreadable ({type(exc).__name__}: {exc})") from exc

    def resume_state(self, name: str | Path, *, resume: bool) -> dict[str, object] | None:
        """The state to continue from when ``resume`` (None when there is none); otherwise the run
        starts over: a state and metrics left in the folder are removed."""
        self.root.mkdir(parents=True, exist_ok=True)
        if resume:
            return self.load_state(name)
        self.metrics.unlink(missing_ok=True)
        (self.root / name).unlink(missing_ok=True)
        return None

    # ------------------------------------------------------------------ metrics.jsonl

    def append_metrics(self, record: Mapping[str, object]) -> None:
        """Append one line (durably: flushed and fsynced)."""
        with open_metrics_log(self.metrics) as log:
            log.append(record)

    def read_metrics(self) -> list[dict[str, Any]]:
        """Every readable line (a line cut by a crash mid-write is skipped)."""
        if not self.metrics.is_file():
            return []
        lines = []
        for text in self.metrics.read_text(encoding="utf-8").splitlines():
            try:
                line = json.loads(text)
            except json.JSONDecodeError:
                continue
            if isinstance(line, dict):
                lines.append(line)
        return lines

    def truncate_metrics(self, keep: Callable[[Mapping[str, object]], bool], *,
                         restore: Iterable[Mapping[str, object]] = (), key: str | None = None) -> int:
        """Rewrite metrics.jsonl (atomically) to what the saved state covers, and return its number
        of lines: the readable lines ``keep`` accepts, then ``restore`` (the state's own record of its last
        epoch or round, for a line lost after the state was saved); with ``key``, one line per
        value of ``key`` (the last written, a restored one winning), ordered by it."""
        lines: list[Mapping[str, object]] = [*filter(keep, self.read_metrics()), *restore]
        if key is not None:
            by_key: dict[int, Mapping[str, object]] = {}
            for line in lines:
                value = line.get(key)
                if not isinstance(value, int):
                    raise ValueError(f"{self.metrics}: {key} = {value!r} is not a whole number in {dict(line)}")
                by_key[value] = line
            lines = [by_key[k] for k in sorted(by_key)]
        if lines or self.metrics.is_file():
            write_text_atomic(self.metrics, "".join(dumps(line) + "\n" for line in lines))
        return len(lines)

    def last_metric(self, name: str, kind: str | None = None) -> float:
        """The last logged value of ``name`` (of lines whose ``kind`` is ``kind`` when given), NaN if none."""
        value = math.nan
        for line in self.read_metrics():
            if (kind is None or line.get("kind") == kind) and line.get(name) is not None:
                value = float(line[name])
        return value

    # ------------------------------------------------------------------ status.json

    def write_status(self, state: str, **fields: object) -> None:
        """status.json = ``{"state": state, **fields}`` (atomically)."""
        write_text_atomic(self.status_file, dumps({"state": state, **fields}, indent=2))

    def read_status(self) -> dict[str, Any]:
        """status.json, or {} when the folder has none."""
        if not self.status_file.is_file():
            return {}
        return json.loads(self.status_file.read_text(encoding="utf-8"))

    @contextlib.contextmanager
    def tracking_status(self, **fields: object) -> Iterator[dict[str, object]]:
        """status.json says ``running`` (with ``fields``) while the block runs, then ``complete``,
        ``failed`` (with the error) or ``interrupted`` (Ctrl-C: run the command again to resume),
        with ``fields`` as the block left them (it may update the dict it is given)."""
        fields = dict(fields)
        self.write_status(RUNNING, **fields)
        try:
            yield fields
        except KeyboardInterrupt:
            self.write_status(INTERRUPTED, **fields, note="stopped by the user; run the same command again to resume")
            raise
        except BaseException as exc:
            self.write_status(FAILED, **fields, error=f"{type(exc).__name__}: {exc}")
            raise
        self.write_status(COMPLETE, **fields)
