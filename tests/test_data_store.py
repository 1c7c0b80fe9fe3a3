"""The preprocessed store: build, skip-and-report, resume after interruption, validation, loading."""

from __future__ import annotations

import csv
import json
import os
import pickle
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from clef.cli import main as clef_main
from clef_core.data.errors import StoreError
from clef_core.data.leads import LEADS
from clef_core.data.preprocess import PreprocessConfig, preprocess_record
from clef_core.data.records import RecordRef, iter_wfdb_folder, read_record
from clef_core.data.store import ECGStore, build_store
from clef_core.data.window_dataset import WindowDataset
from wfdb_factory import bad_records, copy_record, mimic_layout

CFG = PreprocessConfig()
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def shared_refs(shared_data: Path) -> list[RecordRef]:
    return list(iter_wfdb_folder(shared_data / "ecg"))


def _cohort(root: Path, shared_data: Path) -> dict[str, str]:
    """3 real records + one damaged record per bad-input case, in one WFDB folder."""
    for name in ("HR06000", "JS20004", "E07500"):
        copy_record(shared_data / "ecg" / name, root / "good")
    return {f"bad/{name}": reason for name, reason in bad_records(root / "bad").items()}


def _manifest(path: Path) -> dict:
    return json.loads((path / "manifest.json").read_text())


def test_build_skips_bad_records_and_reports(tmp_path: Path, shared_data: Path) -> None:
    expected = _cohort(tmp_path / "cohort", shared_data)
    report = build_store(tmp_path / "cohort", tmp_path / "store", CFG, progress=False, chunk_records=4)
    assert (report.n_records, report.n_ok, report.n_windows) == (3 + len(expected), 3, 3)
    reasons = sorted(expected.values())
    assert report.skipped == {r: reasons.count(r) for r in set(reasons)}
    with open(tmp_path / "store" / "skipped.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert {row["record_id"]: row["reason"] for row in rows} == expected
    assert all(row["message"].startswith(f"record {row['record_id']}: {row['reason']}") for row in rows)

    store = ECGStore.open(tmp_path / "store")
    assert len(store) == 3 and store.leads == list(LEADS) and store.signals.shape == (3, 12, 5000)
    assert store.signals.dtype == np.float16 and store.preprocess == CFG.to_dict()
    assert list(store.index["record_id"]) == ["good/E07500", "good/HR06000", "good/JS20004"]
    ref = preprocess_record(read_record(shared_data / "ecg" / "HR06000"), CFG).signals[0]
    np.testing.assert_allclose(store.window(1), ref, atol=4e-3)
    assert store.window(1).dtype == np.float32
    np.testing.assert_array_equal(store.lead_mask[2], [lead not in ("V2", "V4", "V6") for lead in LEADS])
    manifest = _manifest(tmp_path / "store")
    assert manifest["n_windows"] == 3 and manifest["source"]["kind"] == "wfdb_folder"
    assert set(manifest["files"]) == {"signals.f16", "lead_mask.u8", "index.csv", "skipped.csv"}
    assert not list((tmp_path / "store").glob(".partial-*"))


def test_mimic_layout_store(tmp_path: Path) -> None:
    rows = mimic_layout(tmp_path / "mimic", n=3)
    report = build_store(tmp_path / "mimic", tmp_path / "store", CFG, progress=False)
    assert report.n_windows == 3 and not report.skipped
    index = ECGStore.open(tmp_path / "store").index
    assert list(index["record_id"]) == [r["study_id"] for r in rows]
    assert list(index["subject_id"]) == [r["subject_id"] for r in rows]
    assert list(index["cart_id"]) == ["cart0", "cart1", "cart0"]
    assert str(index["ecg_time"].iloc[0]) == "2180-07-20 08:44:00"
    assert _manifest(tmp_path / "store")["source"]["kind"] == "mimic"


def test_interrupted_build_resumes_and_is_never_valid_before(tmp_path: Path, shared_refs: list) -> None:
    clean = build_store(shared_refs, tmp_path / "clean", CFG, progress=False, chunk_records=5)

    def crash_after_second_chunk(k: int) -> None:
        if k == 1:
            raise KeyboardInterrupt("simulated interruption")

    with pytest.raises(KeyboardInterrupt):
        build_store(shared_refs, tmp_path / "s", CFG, progress=False, chunk_records=5,
                    on_chunk=crash_after_second_chunk)
    with pytest.raises(StoreError, match="unfinished build"):
        ECGStore.open(tmp_path / "s")
    resumed = build_store(shared_refs, tmp_path / "s", CFG, progress=False, chunk_records=5)
    assert resumed.resumed_chunks == 2 and resumed.n_windows == clean.n_windows == 25
    assert _manifest(tmp_path / "s")["files"] == _manifest(tmp_path / "clean")["files"]  # identical bytes


KILL_SCRIPT = """
import os, signal, sys
from clef_core.data.preprocess import PreprocessConfig
from clef_core.data.records import iter_wfdb_folder
from clef_core.data.store import build_store

def die(k):
    if k == 2:
        os.kill(os.getpid(), signal.SIGKILL)

build_store(list(iter_wfdb_folder(sys.argv[1])), sys.argv[2], PreprocessConfig(), progress=False,
            chunk_records=4, workers=2, on_chunk=die)
"""


def test_killed_build_resumes(tmp_path: Path, shared_data: Path, shared_refs: list) -> None:
    out = tmp_path / "s"
    with open(tmp_path / "log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(shared_data / "ecg"), str(out)],
                                cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        assert proc.wait(timeout=120) == -signal.SIGKILL, (tmp_path / "log").read_text()
    with pytest.raises(StoreError, match="not a finished store"):
        ECGStore.open(out)
    partial = next(out.glob(".partial-*"))
    with open(partial / "signals.f16", "ab") as fh:  # as if killed in the middle of the next chunk
        fh.write(b"\x01" * 12345)
    report = build_store(shared_refs, out, CFG, progress=False, chunk_records=4, workers=2)
    assert report.resumed_chunks == 3 and report.n_windows == 25
    clean = build_store(shared_refs, tmp_path / "clean", CFG, progress=False, chunk_records=4)
    assert _manifest(out)["files"] == _manifest(tmp_path / "clean")["files"]
    assert clean.n_windows == 25 and ECGStore.open(out).signals.shape == (25, 12, 5000)


@pytest.fixture()
def small_store(tmp_path: Path, shared_refs: list) -> Path:
    build_store(shared_refs[:6], tmp_path / "s", CFG, progress=False)
    return tmp_path / "s"


def test_corruption_detected_on_open(small_store: Path) -> None:
    ECGStore.open(small_store)
    with open(small_store / "signals.f16", "r+b") as fh:
        fh.seek(5000)
        byte = fh.read(1)
        fh.seek(5000)
        fh.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(StoreError, match="checksum mismatch in signals.f16"):
        ECGStore.open(small_store)
    with open(small_store / "lead_mask.u8", "r+b") as fh:
        fh.truncate(10)
    with pytest.raises(StoreError, match="lead_mask.u8 has 10 bytes"):
        ECGStore.open(small_store, verify=False)


def test_version_and_manifest_checked(small_store: Path) -> None:
    manifest = _manifest(small_store)
    (small_store / "manifest.json").write_text(json.dumps({**manifest, "format_version": 99}))
    with pytest.raises(StoreError, match="version 99"):
        ECGStore.open(small_store)
    pre = {**manifest["preprocess"], "version": 99}
    (small_store / "manifest.json").write_text(json.dumps({**manifest, "preprocess": pre}))
    with pytest.raises(StoreError, match="preprocess version 99"):
        ECGStore.open(small_store)
    (small_store / "manifest.json").unlink()
    with pytest.raises(StoreError, match="no manifest.json"):
        ECGStore.open(small_store)


def test_cached_rebuild_other_config_refused(small_store: Path, shared_refs: list) -> None:
    again = build_store(shared_refs[:6], small_store, CFG, progress=False)
    assert again.cached and again.n_windows == 6
    other = PreprocessConfig(bandpass_high=45.0)
    with pytest.raises(StoreError, match="already holds a different store"):
        build_store(shared_refs[:6], small_store, other, progress=False)
    rebuilt = build_store(shared_refs[:4], small_store, other, progress=False, overwrite=True)
    assert not rebuilt.cached and len(ECGStore.open(small_store)) == 4
    assert ECGStore.open(small_store).preprocess["bandpass_high"] == 45.0


def test_workers_give_identical_store(tmp_path: Path, shared_refs: list) -> None:
    build_store(shared_refs[:8], tmp_path / "w1", CFG, progress=False, workers=1, chunk_records=3)
    build_store(shared_refs[:8], tmp_path / "w2", CFG, progress=False, workers=2, chunk_records=3)
    assert _manifest(tmp_path / "w1")["files"] == _manifest(tmp_path / "w2")["files"]


def test_dataloader_with_two_workers(small_store: Path) -> None:
    torch.set_num_threads(1)
    store = ECGStore.open(small_store)
    store.signals  # mapped in the parent: must be dropped, not pickled
    assert len(pickle.dumps(store)) < store.signals.nbytes / 10
    loader = DataLoader(WindowDataset(store), batch_size=4, num_workers=2, shuffle=False)
    batches = list(loader)
    signals = torch.cat([b["signal"] for b in batches])
    assert signals.shape == (6, 12, 5000) and signals.dtype == torch.float32
    np.testing.assert_array_equal(signals.numpy(), store.signals[:].astype(np.float32))
    assert torch.cat([b["lead_mask"] for b in batches]).shape == (6, 12)
    assert torch.cat([b["index"] for b in batches]).tolist() == list(range(6))


def test_cli_store(tmp_path: Path, shared_data: Path, capsys: pytest.CaptureFixture) -> None:
    _cohort(tmp_path / "cohort", shared_data)
    code = clef_main(["store", str(tmp_path / "cohort"), "--out", str(tmp_path / "s"), "--no-progress",
                      "--set", "preprocess.window_s=5.0"])
    out = capsys.readouterr().out
    # the 6 s record now fits; the 12 s record with a 3 s NaN gap keeps its clean second window
    assert code == 0 and "records 13: ok 5, skipped 8; windows 8" in out, out
    assert "skipped truncated: 1" in out and "skipped too_short: 0" not in out
    assert "windows left out of kept records: nan_gap 1" in out and "store at " in out
    assert ECGStore.open(tmp_path / "s").window_samples == 2500
    assert clef_main(["store", str(tmp_path / "missing"), "--out", str(tmp_path / "s2")]) == 1
    assert "is not a directory" in capsys.readouterr().err


def test_cli_store_without_a_usable_window_says_why(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "empty").mkdir()
    assert clef_main(["store", str(tmp_path / "empty"), "--out", str(tmp_path / "s1"), "--no-progress"]) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"clef store: {tmp_path / 'empty'}: no records found"), line
    bad_records(tmp_path / "bad")
    (tmp_path / "bad" / "only").mkdir()
    for name in ("allnan", "flat"):
        for file in (tmp_path / "bad").glob(f"{name}.*"):
            file.rename(tmp_path / "bad" / "only" / file.name)
    assert clef_main(["store", str(tmp_path / "bad" / "only"), "--out", str(tmp_path / "s2"), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "no record gave a usable window: record allnan: all_nan" in err and "record flat: flat_line" in err


def test_changed_source_rebuilds_from_the_first_differing_chunk(tmp_path: Path, shared_refs: list) -> None:
    def crash(k: int) -> None:
        if k == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_store(shared_refs[:15], tmp_path / "s", CFG, progress=False, chunk_records=5, on_chunk=crash)
    changed = shared_refs[:5] + shared_refs[10:20]  # chunk 0 unchanged, chunk 1 differs
    report = build_store(changed, tmp_path / "s", CFG, progress=False, chunk_records=5)
    assert report.resumed_chunks == 1
    build_store(changed, tmp_path / "clean", CFG, progress=False, chunk_records=5)
    assert _manifest(tmp_path / "s")["files"] == _manifest(tmp_path / "clean")["files"]


def test_interrupted_publish_completes(tmp_path: Path, shared_refs: list) -> None:
    from clef_core.data.store import _build_key

    out = tmp_path / "s"
    build_store(shared_refs[:3], out, CFG, progress=False)
    expected = _manifest(out)
    partial = out / f".partial-{_build_key(CFG, {'kind': 'records'}, 256)}"
    partial.mkdir()
    (partial / "progress.json").write_text(json.dumps({"chunks": [{}]}))
    for name in ("signals.f16", "manifest.json"):  # as if killed while moving files into place
        os.replace(out / name, partial / name)
    with pytest.raises(StoreError):
        ECGStore.open(out)
    build_store(shared_refs[:3], out, CFG, progress=False)
    assert _manifest(out) == expected and len(ECGStore.open(out)) == 3 and not partial.exists()
