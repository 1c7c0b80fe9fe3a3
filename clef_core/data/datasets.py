"""Torch datasets over the preprocessed store: CLEF pretraining views and labelled windows.

:class:`PretrainDataset` yields one item per patient per epoch (the method uses one record per
patient in pretraining): for each patient a record is drawn uniformly among the patient's
records, then a window uniformly among that record's windows (with ``views.pairing =
"recordings"`` also a window of another of the patient's records, for the second view), from a generator seeded with a keyed
hash of ``(seed, patient id)`` and the epoch (:func:`patient_rng`); the same generator then draws
the views. An item therefore depends only on (that patient's data, config, seed, epoch): not on
the other patients, nor on the DataLoader worker that makes it, so runs are reproducible with any
``num_workers``.

:class:`LabelledWindows` yields ``(x (1, T), y (C,))`` for linear probes and fine-tuning, from a
store (one lead, every window or each record's first) or from in-memory arrays (e.g. beat-centred
MIT-BIH windows).

Both work with ``DataLoader(num_workers > 0)``: :class:`~clef_core.data.store.ECGStore` maps its
signals lazily per process and drops the map when pickled, so each worker maps the file itself.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from clef_core.data.augment import ViewConfig
from clef_core.data.leads import canonical_lead
from clef_core.data.noise import NoiseBank
from clef_core.data.preprocess import zscore
from clef_core.data.views import make_views

_SEED_TAG = 0xC1EF  # separates these streams from any other use of the same seed


def patient_rng(seed: int, epoch: int, subject_id: str) -> np.random.Generator:
    """The generator of one patient's draws in one epoch: seeded by a keyed hash (BLAKE2b, the
    run's seed as key) of the patient id, so a patient's record, window and views depend on
    nothing about the other patients -- removing one patient changes only that patient's term
    (the sensitivity argument of patient-level DP, docs/privacy.md)."""
    key = int(seed).to_bytes(8, "little", signed=True)
    digest = hashlib.blake2b(str(subject_id).encode("utf-8"), key=key, digest_size=16).digest()
    return np.random.default_rng(np.random.SeedSequence([_SEED_TAG, int(epoch), int.from_bytes(digest, "little")]))


def _store_index(store: Any) -> pd.DataFrame:
    index = store.index
    missing = {"record_id", "subject_id"} - set(index.columns)
    if missing:
        raise ValueError(f"store index lacks column(s) {sorted(missing)}")
    out = pd.DataFrame(
        {
            "row": np.arange(len(index)),
            "record_id": index["record_id"].astype(str).to_numpy(),
            "subject_id": index["subject_id"].astype(str).to_numpy(),
            "start_s": index["start_s"].to_numpy() if "start_s" in index.columns else np.zeros(len(index)),
        }
    )
    return out


def _keyed_by_record(table: pd.DataFrame, what: str) -> pd.DataFrame:
    """``table`` with a str ``record_id`` column (from a column, the index, or MIMIC's study_id)."""
    if "record_id" in table.columns:
        out = table.copy()
    elif table.index.name == "record_id":
        out = table.reset_index()
    elif "study_id" in table.columns:  # MIMIC: record_id = str(study_id)
        out = table.assign(record_id=table["study_id"])
    else:
        raise ValueError(f"{what}: no 'record_id' column or index (nor 'study_id')")
    out["record_id"] = out["record_id"].astype(str)
    dup = out["record_id"][out["record_id"].duplicated()]
    if len(dup):
        raise ValueError(f"{what}: record_id '{dup.iloc[0]}' appears more than once ({len(dup)} duplicates)")
    return out


class PretrainDataset(Dataset):
    """One CLEF pretraining item per patient (``subject_id``) per epoch.

    Item: ``dict(view1=(1, T) float32 tensor, view2=(1, T), risk=float (NaN when unknown),
    completeness=float, index=int, window=int (store row), lead1=int, lead2=int)``; default collate.

    ``clinical`` is the clinical table (``clef_core.metadata``), joined on ``record_id``; a store
    record absent from it gets risk NaN and completeness 0 and is counted in
    ``n_without_metadata``. Windows with no available lead are left out (``n_windows_without_leads``).
    """

    def __init__(
        self,
        store: Any,
        clinical: pd.DataFrame,
        cfg: ViewConfig,
        noise_bank: NoiseBank,
        seed: int,
        epoch: int = 0,
    ) -> None:
        self.cfg = cfg
        self.noise_bank = noise_bank
        self.seed = int(seed)
        self.epoch = int(epoch)
        self.store = store
        self._lead_mask = np.asarray(store.lead_mask, dtype=bool)

        windows = _store_index(store)
        has_lead = self._lead_mask.any(axis=1)
        self.n_windows_without_leads = int((~has_lead).sum())
        windows = windows[has_lead].sort_values(["subject_id", "record_id", "start_s", "row"], kind="stable")
        if windows.empty:
            raise ValueError("PretrainDataset: the store has no window with an available lead")

        # CSR layout: patient p owns records rec_ptr[pat_ptr[p]:pat_ptr[p+1]], record r owns
        # windows rows[rec_ptr[r]:rec_ptr[r+1]].
        self._rows = windows["row"].to_numpy()
        rec_change = np.r_[True, (windows["record_id"].to_numpy()[1:] != windows["record_id"].to_numpy()[:-1])
                           | (windows["subject_id"].to_numpy()[1:] != windows["subject_id"].to_numpy()[:-1])]
        self._rec_ptr = np.r_[np.flatnonzero(rec_change), len(windows)]
        rec_subject = windows["subject_id"].to_numpy()[rec_change]
        pat_change = np.r_[True, rec_subject[1:] != rec_subject[:-1]]
        self._pat_ptr = np.r_[np.flatnonzero(pat_change), len(rec_subject)]
        self.subject_ids = rec_subject[pat_change]
        record_ids = windows["record_id"].to_numpy()[rec_change]

        table = _keyed_by_record(clinical, "clinical table")
        missing_cols = {"risk", "completeness"} - set(table.columns)
        if missing_cols:
            raise ValueError(f"clinical table lacks column(s) {sorted(missing_cols)}")
        table = table.set_index("record_id")
        known = pd.Index(record_ids).isin(table.index)
        self.n_without_metadata = int((~known).sum())
        joined = table.reindex(record_ids)
        self._risk = pd.to_numeric(joined["risk"], errors="coerce").to_numpy(dtype=np.float64)
        completeness = pd.to_numeric(joined["completeness"], errors="coerce").to_numpy(dtype=np.float64)
        bad = known & ~((completeness >= 0) & (completeness <= 1))
        if bad.any():
            raise ValueError(
                f"clinical table: record {record_ids[bad][0]}: completeness {completeness[bad][0]} not in [0, 1]"
            )
        self._completeness = np.where(known, completeness, 0.0)

    def __len__(self) -> int:
        return len(self._pat_ptr) - 1

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch: it changes each patient's window and every augmentation."""
        self.epoch = int(epoch)

    def _pick(self, index: int, rng: np.random.Generator) -> tuple[int, int]:
        """(record number, store row) of patient ``index`` for the draw ``rng``."""
        first, last = self._pat_ptr[index], self._pat_ptr[index + 1]
        record = int(first + rng.integers(last - first))
        lo, hi = self._rec_ptr[record], self._rec_ptr[record + 1]
        return record, int(self._rows[lo + rng.integers(hi - lo)])

    def _other_recording(self, index: int, record: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray] | None:
        """(window, lead mask) of a window of another record of patient ``index`` (``views.pairing =
        "recordings"``), uniform over the other records and their windows; None with one record."""
        first, last = self._pat_ptr[index], self._pat_ptr[index + 1]
        if last - first < 2:
            return None
        pick = int(first + rng.integers(last - first - 1))
        pick += pick >= record  # skip the first view's record
        lo, hi = self._rec_ptr[pick], self._rec_ptr[pick + 1]
        row = int(self._rows[lo + rng.integers(hi - lo)])
        return np.asarray(self.store.window(row), dtype=np.float32), self._lead_mask[row]

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(f"PretrainDataset: index {index} out of range for {len(self)} patients")
        rng = patient_rng(self.seed, self.epoch, self.subject_ids[index])
        record, row = self._pick(index, rng)
        window = np.asarray(self.store.window(row), dtype=np.float32)
        other = self._other_recording(index, record, rng) if self.cfg.pairing == "recordings" else None
        view1, view2, lead1, lead2 = make_views(window, self._lead_mask[row], rng, self.cfg, self.noise_bank, other)
        return {
            "view1": torch.from_numpy(view1),
            "view2": torch.from_numpy(view2),
            "risk": float(self._risk[record]),
            "completeness": float(self._completeness[record]),
            "index": int(index),
            "window": row,
            "lead1": lead1,
            "lead2": lead2,
        }


def resolve_lead(name: str, leads: Sequence[str]) -> int:
    """Row of lead ``name`` in ``leads``, names matched as in :func:`clef_core.data.leads.canonical_lead`
    ("ii", "MLII" and "II" are the same lead)."""
    wanted = canonical_lead(name)
    for i, lead in enumerate(leads):
        if wanted is not None and canonical_lead(lead) == wanted:
            return i
    raise ValueError(f"lead '{name}' is not one of {list(leads)}")


class LabelledWindows(Dataset):
    """Single-lead windows with labels for downstream tasks: item ``(x (1, T) float32, y (C,) float32)``.

    From a store: ``labels`` keyed by ``record_id`` (column or index; MIMIC ``study_id`` is
    accepted), one item per window of the requested ``lead`` (or per record, its first window, with
    ``first_window_only``). Windows of records without a label row are dropped
    (``n_without_label``), as are windows where the lead is absent (``n_lead_absent``). Label
    values may be NaN (a label unknown for that record); filter them per task.
    From arrays: :meth:`from_arrays`.
    """

    def __init__(
        self,
        store: Any,
        labels: pd.DataFrame,
        label_columns: Sequence[str],
        lead: str = "I",
        zscore: bool = True,
        first_window_only: bool = False,
    ) -> None:
        self.label_columns = list(label_columns)
        self.zscore = zscore
        self.lead = lead
        lead_idx = resolve_lead(lead, list(store.leads))
        table = _keyed_by_record(labels, "labels")
        absent_cols = [c for c in self.label_columns if c not in table.columns]
        if absent_cols or not self.label_columns:
            raise ValueError(f"labels: missing label column(s) {absent_cols or '(none given)'}")

        windows = _store_index(store)
        if first_window_only:
            windows = windows.sort_values(["record_id", "start_s", "row"], kind="stable")
            windows = windows.drop_duplicates("record_id").sort_values("row")
        labelled = windows["record_id"].isin(table["record_id"]).to_numpy()
        lead_ok = np.asarray(store.lead_mask, dtype=bool)[windows["row"].to_numpy(), lead_idx]
        self.n_without_label = int((~labelled).sum())
        self.n_lead_absent = int((labelled & ~lead_ok).sum())
        windows = windows[labelled & lead_ok]

        values = table.set_index("record_id").loc[windows["record_id"], self.label_columns]
        self._y = values.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float32)
        self._rows = windows["row"].to_numpy()
        self._lead_idx = lead_idx
        self.record_ids = windows["record_id"].to_numpy()
        self.groups = windows["subject_id"].to_numpy()
        self.store: Any = store
        self._x: np.ndarray | None = None

    @classmethod
    def from_arrays(
        cls,
        x: np.ndarray,
        y: np.ndarray,
        groups: Sequence[Any] | None = None,
        *,
        label_columns: Sequence[str] | None = None,
        record_ids: Sequence[Any] | None = None,
        zscore: bool = True,
        lead: str = "",
    ) -> LabelledWindows:
        """In-memory windows ``x`` (N, T) or (N, 1, T) with labels ``y`` (N,) or (N, C).

        ``groups`` (e.g. subject or record per window, for grouped splits) defaults to ``record_ids``,
        then to the row number.
        """
        x = np.asarray(x)
        if x.ndim == 3 and x.shape[1] == 1:
            x = x[:, 0]
        if x.ndim != 2:
            raise ValueError(f"LabelledWindows.from_arrays: x must be (N, T) or (N, 1, T), got {x.shape}")
        y = np.asarray(y, dtype=np.float32)
        y = y[:, None] if y.ndim == 1 else y
        if y.ndim != 2 or y.shape[0] != x.shape[0]:
            raise ValueError(f"LabelledWindows.from_arrays: y {y.shape} does not match x {x.shape}")
        n = x.shape[0]
        ids = np.asarray(record_ids if record_ids is not None else np.arange(n)).astype(str)
        grp = np.asarray(groups if groups is not None else ids).astype(str)
        if len(ids) != n or len(grp) != n:
            raise ValueError(f"LabelledWindows.from_arrays: record_ids/groups must have {n} entries")
        self = cls.__new__(cls)
        self.label_columns = list(label_columns) if label_columns is not None else [f"y{i}" for i in range(y.shape[1])]
        if len(self.label_columns) != y.shape[1]:
            raise ValueError(f"LabelledWindows.from_arrays: {len(self.label_columns)} label names for {y.shape[1]} columns")
        self.zscore, self.lead = zscore, lead
        self.n_without_label = self.n_lead_absent = 0
        self._x, self._y, self.store, self._rows = x, y, None, np.arange(n)
        self.record_ids, self.groups = ids, grp
        return self

    def __len__(self) -> int:
        return len(self._y)

    def _signal(self, rows: np.ndarray | int) -> np.ndarray:
        if self._x is not None:
            x = self._x[rows]
        else:
            x = self.store.signals[rows, self._lead_idx]
        x = np.asarray(x, dtype=np.float32)
        return zscore(x) if self.zscore else x

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(f"LabelledWindows: index {index} out of range for {len(self)} windows")
        x = self._signal(int(self._rows[index]))
        return torch.from_numpy(np.ascontiguousarray(x[None, :])), torch.from_numpy(self._y[index].copy())

    def to_numpy(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(X (N, T) float32, y (N, C) float32, groups (N,) str)`` for probes and grouped splits."""
        if len(self) == 0:
            return np.zeros((0, 0), np.float32), self._y.copy(), self.groups.copy()
        return self._signal(self._rows), self._y.copy(), self.groups.copy()
