"""Data-layer throughput: read + preprocess records/s from WFDB, store build records/s, windows/s
from the store through a DataLoader, and what the small encoder consumes in training.

Issue 3 target: the store delivers at least 20x what the small encoder consumes. A pretraining item
reads ONE stored window and makes TWO single-lead views of it, so the ratio is
``store windows/s / (consumed views/s / 2)``; the conservative ratio (one window read per view)
is printed too. Records: the 25 real 12-lead records of ../shared/data/ecg, repeated.

    python benchmarks/bench_data.py [--repeats 4] [--windows 2000] [--workers 2] [--batch 64]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from clef_core.data.preprocess import PreprocessConfig, preprocess_record
from clef_core.data.records import RecordRef, iter_wfdb_folder, read_record
from clef_core.data.store import ECGStore, build_store
from clef_core.data.window_dataset import WindowDataset

TARGET = 20.0
SHARED = Path(os.environ.get("CLEF_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def bench_read_preprocess(refs: list[RecordRef], repeats: int, cfg: PreprocessConfig) -> float:
    start = time.perf_counter()
    for _ in range(repeats):
        for ref in refs:
            preprocess_record(read_record(ref.path, record_id=ref.record_id), cfg)
    return repeats * len(refs) / (time.perf_counter() - start)


def repeated_refs(refs: list[RecordRef], n: int) -> list[RecordRef]:
    """``n`` references cycling over ``refs``, each its own record and patient (one window each)."""
    out = []
    for k in range(n):
        rid = f"{refs[k % len(refs)].record_id}#{k}"
        out.append(replace(refs[k % len(refs)], record_id=rid, subject_id=rid))
    return out


def bench_loader(store: ECGStore, workers: int, batch: int, epochs: int = 2) -> float:
    loader = DataLoader(WindowDataset(store), batch_size=batch, shuffle=True, num_workers=workers,
                        persistent_workers=workers > 0, drop_last=False)
    rates = []
    for _ in range(epochs):  # the first epoch includes worker start-up
        start, n = time.perf_counter(), 0
        for item in loader:
            n += len(item["signal"])
        rates.append(n / (time.perf_counter() - start))
    return max(rates)


def bench_pretrain_loader(store: ECGStore, workers: int, batch: int) -> float | None:
    """Views/s of the CLEF training loader (PretrainDataset: 2 augmented, z-scored views per item)."""
    try:
        import pandas as pd

        from clef_core.data.augment import ViewConfig
        from clef_core.data.datasets import PretrainDataset
        from clef_core.data.noise import NoiseBank
    except ImportError as exc:
        print(f"training loader: clef_core.data.datasets not importable ({exc}); not measured")
        return None
    records = store.index["record_id"].unique()
    clinical = pd.DataFrame({"record_id": records, "risk": np.nan, "completeness": 0.0})
    dataset = PretrainDataset(store, clinical, ViewConfig(), NoiseBank(store.sample_rate), seed=0)
    loader = DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers, persistent_workers=workers > 0)
    rates = []
    for _ in range(2):
        start, n = time.perf_counter(), 0
        for item in loader:
            n += 2 * len(item["view1"])
        rates.append(n / (time.perf_counter() - start))
    return max(rates)


def bench_encoder(batch: int, steps: int = 3) -> float | None:
    """Views/s of forward + backward + AdamW step of the small encoder at (batch, 1, 5000)."""
    try:
        from clef_core.encoders import build_encoder
    except ImportError as exc:
        print(f"encoder: clef_core.encoders not importable ({exc}); consumption not measured")
        return None
    model = build_encoder("small")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(batch, 1, 5000)
    times = []
    for step in range(steps + 1):
        start = time.perf_counter()
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        opt.step()
        if step:  # step 0 is warm-up
            times.append(time.perf_counter() - start)
    return batch / float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=4, help="passes over the 25 records for read + preprocess")
    ap.add_argument("--windows", type=int, default=2000, help="store size (windows)")
    ap.add_argument("--workers", type=int, default=2, help="store build and DataLoader workers")
    ap.add_argument("--batch", type=int, default=64)
    args = ap.parse_args()
    train_views_s = None
    torch.set_num_threads(os.cpu_count() or 1)
    cfg = PreprocessConfig()
    refs = list(iter_wfdb_folder(SHARED / "ecg"))
    print(f"machine: {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"
          f"; load average {os.getloadavg()[0]:.1f} (other jobs share the cores)")

    rate = bench_read_preprocess(refs, args.repeats, cfg)
    print(f"read + preprocess (1 process): {rate:.0f} records/s  "
          f"({len(refs)} records x {args.repeats}, 500 Hz, 10 s, 12 leads)")

    tmp = Path(tempfile.mkdtemp(prefix="bench_data_"))
    try:
        refs_n = repeated_refs(refs, args.windows)
        report = build_store(refs_n, tmp / "store", cfg, progress=False, workers=args.workers)
        print(f"store build ({args.workers} workers): {report.n_records / report.seconds:.0f} records/s, "
              f"{report.n_windows} windows in {report.seconds:.1f} s")
        store = ECGStore.open(tmp / "store")
        windows_s = bench_loader(store, args.workers, args.batch)
        print(f"store -> DataLoader ({args.workers} workers, batch {args.batch}, 12-lead float32 windows): "
              f"{windows_s:.0f} windows/s")
        train_views_s = bench_pretrain_loader(store, args.workers, args.batch)
        if train_views_s is not None:
            print(f"store -> CLEF training loader (PretrainDataset, augmentation + z-score, {args.workers} workers): "
                  f"{train_views_s:.0f} views/s")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    views_s = bench_encoder(args.batch)
    if views_s is None:
        print("ratio: not available (no encoder to measure against)")
        return
    print(f"small encoder forward+backward+AdamW (batch {args.batch} x (1, 5000)): "
          f"{views_s:.0f} views/s consumed")
    ratio = windows_s / (views_s / 2)
    verdict = "met" if ratio >= TARGET else "NOT met"
    print(f"ratio store/consume: {ratio:.1f}x (one window read per item of two views; "
          f"target >= {TARGET:.0f}x: {verdict})")
    print(f"conservative ratio (one window read per view): {windows_s / views_s:.1f}x")
    if train_views_s is not None:
        print(f"training-loader ratio (augmented views delivered / views consumed): {train_views_s / views_s:.1f}x")


if __name__ == "__main__":
    main()
