"""The preprocessed ECG store: one pass turns a cohort into memory-mapped, band-passed windows.

Layout of a store directory::

    manifest.json   format + version, preprocessing dict, counts, source, sha256/bytes per file
    signals.f16     raw float16 (N, 12, T), mV at the model rate, band-passed, NOT z-scored
    lead_mask.u8    raw uint8 (N, 12): lead present (recorded and not flat) in the window
    index.csv       one row per window: window_id, record_id, subject_id, start_s, ecg_time,
                    cart_id, source_fs
    skipped.csv     record_id, reason, message of every record left out

A record's windows are judged one by one (edge/runtime/quality.py, the rule the device runs):
the manifest counts the windows left out (``skipped_windows``) and the lead-windows masked
(``skipped_lead_windows``) by reason; a record is left out only when no window survives.

float16 is adequate for mV ECG: its range (+-65504) is far beyond the +-30 mV accepted
(``max_abs_mv``), and its spacing is <= 0.5 uV below 1 mV and <= 8 uV up to 16 mV, at or below
an ECG amplifier's resolution (1-5 uV/LSB), while halving disk and read bandwidth.

Atomic and resumable: the build appends chunks of records to files in ``.partial-<key>/`` and
commits each chunk in ``progress.json`` (written after the data are fsynced). A killed build
resumes from the last committed chunk (files are truncated back to it). The manifest is the
commit point of the whole store: it is moved into place last, and :meth:`ECGStore.open` refuses
a directory without a valid manifest and matching checksums.
"""

from __future__ import annotations

import contextlib
import csv
import ctypes
import fcntl
import hashlib
import io
import json
import os
import shutil
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sized
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from itertools import islice
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from clef_core.atomic import write_json_atomic
from clef_core.data.errors import BadRecordError, StoreError
from clef_core.data.leads import LEADS
from clef_core.data.preprocess import PreprocessConfig, Windows, preprocess_record
from clef_core.data.records import RecordRef, count_source, describe_source, iter_source, read_record

STORE_FORMAT = "clef-ecg-store"
STORE_VERSION = 1
SIGNALS, MASK, INDEX, SKIPPED = "signals.f16", "lead_mask.u8", "index.csv", "skipped.csv"
MANIFEST, PROGRESS = "manifest.json", "progress.json"
DATA_FILES = (SIGNALS, MASK, INDEX, SKIPPED)
INDEX_COLUMNS = ("window_id", "record_id", "subject_id", "start_s", "ecg_time", "cart_id", "source_fs")
SKIPPED_COLUMNS = ("record_id", "reason", "message")


@dataclass
class BuildReport:
    """What a build did. ``skipped`` counts records left out, by reason; ``skipped_windows`` the
    windows of kept records left out, by reason (edge/runtime/quality.py)."""

    path: Path
    n_records: int
    n_windows: int
    skipped: dict[str, int] = field(default_factory=dict)
    skipped_windows: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    resumed_chunks: int = 0
    cached: bool = False

    @property
    def n_skipped(self) -> int:
        return sum(self.skipped.values())

    @property
    def n_ok(self) -> int:
        return self.n_records - self.n_skipped


# --------------------------------------------------------------------------- small file helpers


def _sha256(path: Path, block: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def _read_json(path: Path) -> dict[str, Any]:
    with open(path) as fh:
        return json.load(fh)


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    # A POSIX record lock belongs to this process only: forked build workers do not inherit it,
    # and it goes away with the process however it dies (kill -9 included).
    with open(directory / ".lock", "w") as fh:
        try:
            fcntl.lockf(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            raise StoreError(f"{directory}: another process is building this store") from exc
        yield


# --------------------------------------------------------------------------- one record


class _Result(NamedTuple):
    ref: RecordRef
    windows: Windows | None
    source_fs: float
    error: BadRecordError | None


def _process(ref: RecordRef, cfg: PreprocessConfig) -> _Result:
    """Read + preprocess one record (runs in worker processes); bad input comes back as a value."""
    try:
        record = read_record(ref.path, record_id=ref.record_id)
        windows = preprocess_record(record, cfg)
    except BadRecordError as exc:
        return _Result(ref, None, float("nan"), exc)
    windows.signals = windows.signals.astype(np.float16)  # halves the transfer from workers
    return _Result(ref, windows, record.fs, None)


def _worker_init() -> None:
    """Build workers die with their parent: a killed build must not leave orphans (Linux prctl)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        if os.getppid() == 1:  # the parent died before prctl took effect
            os._exit(1)


# --------------------------------------------------------------------------- the partial build


class _Partial:
    """The ``.partial-<key>`` build folder: appendable data files + committed chunk list."""

    def __init__(self, directory: Path, key: str) -> None:
        self.dir = directory
        self.key = key
        if not (directory / PROGRESS).is_file():
            self._create()
        self.progress = _read_json(directory / PROGRESS)
        if self.progress.get("key") != key:
            raise StoreError(f"{directory}: progress file belongs to another build")
        self.rollback(len(self.progress["chunks"]))  # drop any appended-but-uncommitted tail

    def _create(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        for name, header in ((SIGNALS, None), (MASK, None), (INDEX, INDEX_COLUMNS), (SKIPPED, SKIPPED_COLUMNS)):
            with open(self.dir / name, "w", newline="") as fh:
                if header:
                    csv.writer(fh).writerow(header)
        base = {"sizes": self._sizes(), "n_windows": 0, "n_records": 0, "skipped": {},
                "skipped_windows": {}, "skipped_lead_windows": {}}
        write_json_atomic(self.dir / PROGRESS, {"key": self.key, "base": base, "chunks": []})

    def _sizes(self) -> dict[str, int]:
        return {name: (self.dir / name).stat().st_size for name in DATA_FILES}

    @property
    def chunks(self) -> list[dict[str, Any]]:
        return self.progress["chunks"]

    @property
    def state(self) -> dict[str, Any]:
        return self.chunks[-1] if self.chunks else self.progress["base"]

    def rollback(self, n_chunks: int) -> None:
        """Keep the first ``n_chunks`` committed chunks; truncate the files back to them."""
        self.progress["chunks"] = self.chunks[:n_chunks]
        for name, size in self.state["sizes"].items():
            with open(self.dir / name, "r+b") as fh:
                fh.truncate(size)
        write_json_atomic(self.dir / PROGRESS, self.progress)

    def append_chunk(self, results: Iterable[_Result], fingerprint: str, on_result: Callable[[], None]) -> None:
        """Append a chunk's results to the files, fsync them, then commit the chunk."""
        n_windows, n_records = self.state["n_windows"], self.state["n_records"]
        skipped = Counter(self.state["skipped"])
        skipped_windows = Counter(self.state.get("skipped_windows", {}))
        skipped_leads = Counter(self.state.get("skipped_lead_windows", {}))
        handles = {name: open(self.dir / name, "ab") for name in DATA_FILES}
        try:
            for res in results:
                n_records += 1
                if res.error is not None:
                    skipped[res.error.reason] += 1
                    _append_csv(handles[SKIPPED], [res.ref.record_id, res.error.reason, str(res.error)])
                else:
                    assert res.windows is not None  # _process returns windows or an error
                    _append_windows(handles, res, n_windows)
                    n_windows += len(res.windows.signals)
                    skipped_windows.update(res.windows.skipped)
                    skipped_leads.update(res.windows.lead_skipped)
                on_result()
            for fh in handles.values():
                fh.flush()
                os.fsync(fh.fileno())
        finally:
            for fh in handles.values():
                fh.close()
        self.chunks.append({"fingerprint": fingerprint, "sizes": self._sizes(), "n_windows": n_windows,
                            "n_records": n_records, "skipped": dict(skipped),
                            "skipped_windows": dict(skipped_windows), "skipped_lead_windows": dict(skipped_leads)})
        write_json_atomic(self.dir / PROGRESS, self.progress)


def _append_csv(fh: Any, row: list[Any]) -> None:
    buf = io.StringIO()
    csv.writer(buf).writerow(row)
    fh.write(buf.getvalue().encode())


def _append_windows(handles: dict[str, Any], res: _Result, first_id: int) -> None:
    ref, windows = res.ref, res.windows
    assert windows is not None
    handles[SIGNALS].write(np.ascontiguousarray(windows.signals, dtype=np.float16).tobytes())
    handles[MASK].write(np.ascontiguousarray(windows.lead_mask, dtype=np.uint8).tobytes())
    time_text = ref.ecg_time.isoformat(sep=" ") if ref.ecg_time else ""
    for k, start in enumerate(windows.start_s):
        _append_csv(handles[INDEX], [first_id + k, ref.record_id, ref.subject_id, f"{start:g}",
                                     time_text, ref.cart_id or "", f"{res.source_fs:g}"])


# --------------------------------------------------------------------------- build


def _resolve_source(source: str | Path | Iterable[RecordRef]) -> tuple[Iterable[RecordRef], dict[str, Any], int | None]:
    if isinstance(source, (str, Path)):
        return iter_source(source), describe_source(source), count_source(source)
    return source, {"kind": "records"}, len(source) if isinstance(source, Sized) else None


def _build_key(cfg: PreprocessConfig, source: dict[str, Any], chunk_records: int) -> str:
    text = json.dumps({"v": STORE_VERSION, "pre": cfg.to_dict(), "src": source, "chunk": chunk_records}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _fingerprint(refs: list[RecordRef]) -> str:
    return hashlib.sha256("\n".join(r.record_id for r in refs).encode()).hexdigest()[:16]


def _batched(items: Iterable[RecordRef], n: int) -> Iterator[list[RecordRef]]:
    it = iter(items)
    while batch := list(islice(it, n)):
        yield batch


def _cached_report(out: Path, cfg: PreprocessConfig, source: dict[str, Any], overwrite: bool) -> BuildReport | None:
    """The report of a finished store in ``out`` built the same way, else None (removing it if
    ``overwrite``); a store built another way without ``overwrite`` is an error."""
    manifest_path = out / MANIFEST
    if not manifest_path.is_file():
        return None
    try:
        manifest = _read_json(manifest_path)
        same = manifest["preprocess"] == cfg.to_dict() and manifest["source"] == source
    except (ValueError, KeyError):
        manifest, same = {}, False
    if same:
        try:
            ECGStore.open(out, verify=False)
        except StoreError:
            same = False
    if same:
        return BuildReport(out, manifest["n_records"], manifest["n_windows"], manifest["skipped"],
                           manifest.get("skipped_windows", {}), cached=True)
    if not overwrite:
        raise StoreError(f"{out} already holds a different store (other preprocessing or source); "
                         "pass overwrite=True (clef store --overwrite) or choose another directory")
    manifest_path.unlink()
    return None


def build_store(
    source: str | Path | Iterable[RecordRef],
    out_dir: str | Path,
    cfg: PreprocessConfig,
    *,
    progress: bool = True,
    workers: int = 1,
    chunk_records: int = 256,
    overwrite: bool = False,
    on_chunk: Callable[[int], None] | None = None,
) -> BuildReport:
    """Preprocess every record of ``source`` into a store at ``out_dir`` (atomic, resumable).

    ``source``: a cohort root (MIMIC layout or WFDB folder, auto-detected) or RecordRefs in a
    deterministic order. Bad records are skipped, counted by reason and listed in skipped.csv.
    An existing store built the same way is returned as is (``cached``). ``on_chunk(k)`` is
    called after chunk ``k`` is committed (a hook for progress reporting and tests).
    """
    start = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    refs, source_desc, total = _resolve_source(source)
    with _locked(out):
        cached = _cached_report(out, cfg, source_desc, overwrite)
        if cached is not None:
            return cached
        key = _build_key(cfg, source_desc, chunk_records)
        partial = out / f".partial-{key}"
        for stale in out.glob(".partial-*"):
            if stale != partial:
                shutil.rmtree(stale)
        if not (partial / MANIFEST).is_file():
            resumed = _run_chunks(refs, partial, key, cfg, total, progress, workers, chunk_records, on_chunk)
            _stage_manifest(partial, cfg, source_desc, time.perf_counter() - start)
        else:
            resumed = len(_read_json(partial / PROGRESS)["chunks"])
        manifest = _publish(partial, out)
    return BuildReport(out, manifest["n_records"], manifest["n_windows"], manifest["skipped"],
                       manifest["skipped_windows"], seconds=time.perf_counter() - start, resumed_chunks=resumed)


def _run_chunks(refs: Iterable[RecordRef], partial_dir: Path, key: str, cfg: PreprocessConfig,
                total: int | None, progress: bool, workers: int, chunk_records: int,
                on_chunk: Callable[[int], None] | None) -> int:
    """Process the source chunk by chunk, skipping chunks already committed; returns how many were."""
    partial = _Partial(partial_dir, key)
    resumed, k = 0, -1
    pool = ProcessPoolExecutor(workers, initializer=_worker_init) if workers > 1 else None
    bar = tqdm(total=total, disable=not progress, unit="rec", desc="preprocessing")
    try:
        for k, chunk in enumerate(_batched(refs, chunk_records)):
            fingerprint = _fingerprint(chunk)
            if k < len(partial.chunks):
                if partial.chunks[k]["fingerprint"] == fingerprint:
                    resumed += 1
                    bar.update(len(chunk))
                    continue
                partial.rollback(k)  # the source changed from here on
            results = (pool.map(_process, chunk, [cfg] * len(chunk)) if pool
                       else (_process(ref, cfg) for ref in chunk))
            partial.append_chunk(results, fingerprint, lambda: bar.update(1))
            bar.set_postfix(windows=partial.state["n_windows"], skipped=sum(partial.state["skipped"].values()))
            if on_chunk is not None:
                on_chunk(k)
        if len(partial.chunks) > k + 1:  # the source shrank since the interrupted run
            partial.rollback(k + 1)
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return resumed


def _stage_manifest(partial_dir: Path, cfg: PreprocessConfig, source: dict[str, Any], seconds: float) -> None:
    state = _Partial(partial_dir, _read_json(partial_dir / PROGRESS)["key"]).state
    manifest = {
        "format": STORE_FORMAT,
        "format_version": STORE_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "preprocess": cfg.to_dict(),
        "leads": list(LEADS),
        "window_samples": cfg.window_samples,
        "dtype": "float16",
        "n_windows": state["n_windows"],
        "n_records": state["n_records"],
        "n_skipped": sum(state["skipped"].values()),
        "skipped": state["skipped"],
        "skipped_windows": state.get("skipped_windows", {}),
        "skipped_lead_windows": state.get("skipped_lead_windows", {}),
        "source": source,
        "build_seconds": round(seconds, 3),
        "files": {name: {"bytes": (partial_dir / name).stat().st_size, "sha256": _sha256(partial_dir / name)}
                  for name in DATA_FILES},
    }
    write_json_atomic(partial_dir / MANIFEST, manifest)


def _publish(partial_dir: Path, out: Path) -> dict[str, Any]:
    """Move the staged files into ``out``, the manifest last; idempotent if interrupted."""
    manifest = _read_json(partial_dir / MANIFEST)
    for name in manifest["files"]:
        if (partial_dir / name).exists():
            os.replace(partial_dir / name, out / name)
    os.replace(partial_dir / MANIFEST, out / MANIFEST)
    shutil.rmtree(partial_dir)
    return manifest


# --------------------------------------------------------------------------- reading


class ECGStore:
    """A finished store, validated and memory-mapped (see the module docstring for the layout).

    ``signals`` is opened lazily per process, so a store (or a Dataset holding one) can go to
    DataLoader workers without copying the array: pickling drops the memmap.
    """

    def __init__(self, path: Path, manifest: dict[str, Any], index: pd.DataFrame, lead_mask: np.ndarray) -> None:
        self.path = path
        self.manifest = manifest
        self.index = index
        self.lead_mask = lead_mask
        self.leads: list[str] = list(manifest["leads"])
        self.preprocess: dict[str, Any] = manifest["preprocess"]
        self.window_samples: int = int(manifest["window_samples"])
        self.sample_rate: int = int(self.preprocess["sample_rate"])
        self._signals: np.ndarray | None = None
        self._pid = os.getpid()

    @classmethod
    def open(cls, path: str | Path, *, verify: bool = True) -> ECGStore:
        """Open a store; refuses a partial, corrupt or other-version store with a :class:`StoreError`.

        ``verify`` checks every file's sha256 (a full read); sizes are always checked.
        """
        path = Path(path)
        manifest = _load_manifest(path)
        _check_files(path, manifest, verify)
        n = int(manifest["n_windows"])
        lead_mask = np.fromfile(path / MASK, dtype=np.uint8).reshape(n, len(LEADS)).astype(bool)
        index = _read_index(path / INDEX)
        if len(index) != n:
            raise StoreError(f"{path}: index has {len(index)} rows, manifest says {n} windows")
        return cls(path, manifest, index, lead_mask)

    @property
    def signals(self) -> np.ndarray:
        if self._signals is None or self._pid != os.getpid():
            shape = (len(self), len(LEADS), self.window_samples)
            self._signals = (np.memmap(self.path / SIGNALS, dtype=np.float16, mode="r", shape=shape)
                             if shape[0] else np.zeros(shape, dtype=np.float16))
            self._pid = os.getpid()
        return self._signals

    def __len__(self) -> int:
        return int(self.manifest["n_windows"])

    def window(self, i: int) -> np.ndarray:
        """Window ``i`` as (12, T) float32 mV (absent leads are 0; see ``lead_mask[i]``)."""
        return np.asarray(self.signals[i], dtype=np.float32)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_signals"] = None
        return state

    def __repr__(self) -> str:
        return f"ECGStore({str(self.path)!r}, windows={len(self)}, T={self.window_samples})"


def _load_manifest(path: Path) -> dict[str, Any]:
    if not (path / MANIFEST).is_file():
        partial = sorted(path.glob(".partial-*")) if path.is_dir() else []
        hint = " (an unfinished build is present; run the build again to resume it)" if partial else ""
        raise StoreError(f"{path}: not a finished store, no {MANIFEST}{hint}")
    try:
        manifest = _read_json(path / MANIFEST)
    except ValueError as exc:
        raise StoreError(f"{path / MANIFEST}: not valid JSON: {exc}") from exc
    if manifest.get("format") != STORE_FORMAT or manifest.get("format_version") != STORE_VERSION:
        raise StoreError(f"{path}: store format {manifest.get('format')!r} version "
                         f"{manifest.get('format_version')!r}; this code reads {STORE_FORMAT!r} {STORE_VERSION}")
    try:
        PreprocessConfig.from_dict(manifest["preprocess"])
    except (KeyError, TypeError, ValueError) as exc:
        raise StoreError(f"{path}: {exc}") from exc
    if manifest.get("leads") != list(LEADS):
        raise StoreError(f"{path}: lead order {manifest.get('leads')} differs from {list(LEADS)}")
    return manifest


def _check_files(path: Path, manifest: dict[str, Any], verify: bool) -> None:
    n, T = int(manifest["n_windows"]), int(manifest["window_samples"])
    expected = {SIGNALS: n * len(LEADS) * T * 2, MASK: n * len(LEADS)}
    for name in DATA_FILES:
        meta = manifest["files"].get(name)
        file = path / name
        if meta is None or not file.is_file():
            raise StoreError(f"{path}: data file {name} missing")
        size = file.stat().st_size
        if size != meta["bytes"] or size != expected.get(name, size):
            raise StoreError(f"{path}: {name} has {size} bytes, manifest says {meta['bytes']}")
        if verify and _sha256(file) != meta["sha256"]:
            raise StoreError(f"{path}: checksum mismatch in {name} (corrupt store; rebuild it)")


def _read_index(path: Path) -> pd.DataFrame:
    index = pd.read_csv(path, dtype={"record_id": str, "subject_id": str, "cart_id": str, "ecg_time": str},
                        keep_default_na=False)
    index["ecg_time"] = pd.to_datetime(index["ecg_time"].replace("", None), errors="coerce")
    index["cart_id"] = index["cart_id"].replace("", None)
    index["start_s"] = index["start_s"].astype(np.float64)
    return index
