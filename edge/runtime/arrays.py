"""Read a raw ECG array without wfdb: ``.npy`` (1-D, or 2-D leads x samples) or numeric ``.csv``
(one column per lead, samples down the rows, an optional first row of lead names)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


class RecordError(ValueError):
    """A record cannot be read; the message names the file."""


def read_array(path: str | Path, lead: str | None = None) -> tuple[np.ndarray, str]:
    """``(signal (N,), lead name)`` for one lead of an array file (default: the first column/row).
    A single unnamed lead (a 1-D ``.npy``, a one-column ``.csv`` without header) takes ``lead`` as
    its name, so task heads fitted on that lead run on it."""
    path = Path(path)
    if not path.is_file():
        raise RecordError(f"{path}: no such file")
    names: list[str] = []
    try:
        if path.suffix.lower() == ".npy":
            data = np.load(path, allow_pickle=False)
            data = np.atleast_2d(data)  # leads x samples
        elif path.suffix.lower() == ".csv":
            with open(path) as fh:
                first = fh.readline()
            has_header = not all(_is_number(f) for f in first.strip().split(","))
            if has_header:
                names = [n.strip() for n in first.strip().split(",")]
            data = np.loadtxt(path, delimiter=",", skiprows=int(has_header), ndmin=2).T
        else:
            raise RecordError(f"{path}: unknown array type (expected .npy or .csv)")
    except (ValueError, OSError) as exc:
        if isinstance(exc, RecordError):
            raise
        raise RecordError(f"{path}: unreadable: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from exc
    if data.ndim != 2 or data.shape[1] < 2 or not np.issubdtype(data.dtype, np.number):
        raise RecordError(f"{path}: expected a numeric 1-D signal or a leads x samples array, got shape {data.shape}")
    if not names and data.shape[0] == 1 and lead is not None:
        return data[0].astype(np.float64), lead
    names = names or [f"lead{i}" for i in range(data.shape[0])]
    if lead is None:
        return data[0].astype(np.float64), names[0]
    if lead not in names:
        raise RecordError(f"{path}: no lead {lead!r} (has {', '.join(names)})")
    return data[names.index(lead)].astype(np.float64), lead


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
