"""The device end of the edge path: a labelled prediction (an AF probe trained by `clef evaluate`
on MIT-BIH rhythm windows travels through `clef export` to `clef infer` and the device runtime),
and the records the device refuses as the store refuses them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from clef_core.evaluation.mitdb_rhythm import load_af_windows

REPO = Path(__file__).resolve().parents[1]
FAST = dict(windows_per_record=1, cuts=0)


def test_af_windows_of_a_real_af_record(shared_data):
    from clef_core.data.preprocess import PreprocessConfig

    w = load_af_windows([shared_data / "mitdb" / "201"], PreprocessConfig(), per_class=5)
    c = w.counts["201"]
    assert c["af_available"] > 20 and c["non_af_available"] > 20 and c["af_used"] == c["non_af_used"] == 5
    assert w.x.shape == (10, 5000) and np.allclose(w.x.std(1), 1, atol=1e-3)
    assert set(w.records) == {"201"} and np.all(w.start_s % 10 == 0)


def run(args: list[str], python: str = sys.executable, cwd: Path = REPO, env: dict | None = None):
    env = env if env is not None else {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run([python, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def af_export(tiny_checkpoint, tmp_path_factory, shared_data) -> Path:
    """evaluate (mitdb_af probe on 3 records, stored as a head) -> export (float + int8 ONNX)."""
    from clef_core.checkpoint import load_model
    from edge.export.exporter import ExportOptions, export_model

    tmp = tmp_path_factory.mktemp("af_export")
    ev = run(["-m", "clef", "evaluate", str(tiny_checkpoint), "--task", "mitdb_af", "--train", "201,203,101",
              "--out", str(tmp / "eval"), "--quiet", "--set", "evaluate.folds=3",
              "--set", "evaluate.mitdb_af_windows_per_class=6"])
    assert ev.returncode == 0, ev.stderr[-2000:]
    ckpt = tmp / "eval" / "model.pt"
    lm = load_model(ckpt)
    assert set(lm.heads) == {"mitdb_af_II"} and lm.heads["mitdb_af_II"].labels == ["af"]
    # a 3-step checkpoint's AF head may validate near chance: --force-heads ships it, labelled
    export_model(ckpt, tmp / "out", ExportOptions(calibration=shared_data / "ecg", tflite=False, report_data=None,
                                                  force_heads=True, **FAST), log=lambda _: None)
    return tmp / "out"


def device_copy(out: Path, tmp_path: Path) -> Path:
    """The runtime folder alone, with model.onnx and preprocess.json, as copied onto a device."""
    device = tmp_path / "device"
    shutil.copytree(REPO / "edge" / "runtime", device / "clef_edge", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("model.onnx", "preprocess.json"):
        shutil.copy(out / name, device / name)
    return device


def run_device(device: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return run(["-m", "clef_edge", "model.onnx", *args], cwd=device, env=env)


def test_af_head_from_evaluate_to_device_predictions(af_export, tmp_path, shared_data):
    """The same keys and numbers from `clef infer` and from the runtime folder copied alone; the
    AF probability is the head's sigmoid on the float encoder's embedding of the device's window
    (model.onnx: float, exact)."""
    from clef_core.checkpoint import load_model
    from edge.runtime import load_spec, windows_of

    out = af_export
    lm = load_model(json.loads((out / "export_report.json").read_text())["checkpoint"])
    heads = load_spec(out / "preprocess.json").heads
    assert heads["mitdb_af_II"].activation == "sigmoid"

    record = shared_data / "mitdb" / "203"  # AF, atrial flutter and other rhythms
    infer = run(["-m", "clef", "infer", str(out / "model.onnx"), f"{record}.hea", "--lead", "II"])  # .hea too
    assert infer.returncode == 0, infer.stderr[-2000:]
    assert f"{record}.hea: 180 of 180 windows used" in infer.stderr, infer.stderr
    dev = run_device(device_copy(out, tmp_path), str(record), "--lead", "II")
    assert dev.returncode == 0, dev.stderr[-2000:]
    assert "180 of 180 windows used" in dev.stderr, dev.stderr
    a = [json.loads(x) for x in infer.stdout.splitlines()]
    b = [json.loads(x) for x in dev.stdout.splitlines()]
    assert len(a) == len(b) == 180
    assert [set(r) for r in a] == [set(r) for r in b]
    assert set(a[0]) == {"lead", "start_s", "embedding", "predictions", "decisions"}
    # the AF head ships an operating point chosen out-of-fold and, where its out-of-fold logits rank
    # the right way, a Platt map fitted on them; the device says which it prints
    op = heads["mitdb_af_II"].operating_points["af"]
    assert op["target_sensitivity"] == 0.9 and 0 <= op["probability_threshold"] <= 1
    assert op["calibrated"] == (op["calibration"] is not None)
    assert all(r["decisions"]["mitdb_af_II"]["af"] == (r["predictions"]["mitdb_af_II"]["af"]
                                                      >= op["probability_threshold"]) for r in a)
    said = (f"calibrated (Platt) on {op['calibration']['n_records']} held-out records" if op["calibrated"]
            else "not a calibrated probability")
    from edge.export.exporter import near_chance

    weak = near_chance(lm.heads["mitdb_af_II"].meta)
    assert heads["mitdb_af_II"].near_chance == weak
    for proc in (infer, dev):
        assert "head mitdb_af_II (lead II" in proc.stderr and said in proc.stderr
        assert ("NEAR CHANCE" in proc.stderr) == bool(weak)
    pa = np.array([r["predictions"]["mitdb_af_II"]["af"] for r in a])
    pb = np.array([r["predictions"]["mitdb_af_II"]["af"] for r in b])
    assert np.abs(pa - pb).max() < 1e-3 and ((pa >= 0) & (pa <= 1)).all()
    # the first window, by hand: device preprocessing -> float encoder -> the stored head
    from clef_core.data.records import read_record

    rec = read_record(record)
    spec = load_spec(out / "preprocess.json")
    w = next(iter(windows_of(rec.signal[rec.leads.index("II")].astype(np.float64), rec.fs, spec)))
    with torch.no_grad():
        logit = lm.heads["mitdb_af_II"].module(lm.encoder(torch.from_numpy(w.x[None, None])))
    a_b = (op["calibration"]["a"], op["calibration"]["b"]) if op["calibrated"] else (1.0, 0.0)
    assert abs(torch.sigmoid(a_b[0] * logit + a_b[1]).item() - pa[0]) < 1e-3


@pytest.mark.parametrize("case", ["too_short", "mis_scaled", "random"])
def test_device_refuses_what_the_store_refuses(af_export, tmp_path, shared_data, case):
    """A record shorter than one window, one in uV instead of mV, and white noise: each window is
    skipped with its reason, then one line on stderr naming the record and the reason, exit 1."""
    import wfdb

    x, fields = wfdb.rdsamp(str(shared_data / "mitdb" / "101"), channels=[0], sampto=360 * 60)
    x = x[:, 0]
    signal, reason = {
        "too_short": (x[: 360 * 8], "too_short"),
        "mis_scaled": (x * 1000.0, "out_of_range"),
        "random": (np.random.default_rng(0).standard_normal(x.size), "not_ecg"),
    }[case]
    rec = tmp_path / f"{case}.npy"
    np.save(rec, signal)
    proc = run_device(device_copy(af_export, tmp_path), str(rec), "--fs", "360")
    assert proc.returncode == 1
    *notes, line = proc.stderr.strip().splitlines()  # notes: which heads run on this (unnamed) lead
    assert str(rec) in line and reason in line, line
    assert all("mitdb_af_II" in n for n in notes), notes
    if case != "too_short":  # each window was reported as skipped before the record was refused
        lines = [json.loads(x) for x in proc.stdout.splitlines()]
        prefix = {"random": "noise:", "mis_scaled": "out_of_range:"}[case]
        assert len(lines) == 6 and all(r["skipped"].startswith(prefix) for r in lines)
    else:
        assert proc.stdout == ""
    # clef infer refuses the same way
    proc = run(["-m", "clef", "infer", str(af_export / "model.onnx"), str(rec), "--fs", "360"])
    assert proc.returncode == 1 and str(rec) in proc.stderr and reason in proc.stderr, proc.stderr
