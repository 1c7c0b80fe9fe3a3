"""The device runtime (edge/runtime) against scipy, on real records; and in its own numpy<2 venv."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import scipy.signal as ss
import wfdb

from edge.export.preprocess_json import build_preprocess_json
from edge.runtime import SpecError, load_spec, spec_from_dict, windows_of
from edge.runtime.filters import SOSFilter
from edge.runtime.resample import design_fir, resample
from edge.runtime.arrays import RecordError
from edge.runtime.stream import iter_windows
from edge.runtime.wfdb_lite import read_wfdb_lead

REPO = Path(__file__).resolve().parents[1]
EDGE_VENV = Path(os.environ.get("CLEF_EDGE_VENV", REPO / ".venv-edge"))
WINDOW_TOL = 1e-3  # z-score units; measured 2e-5 with the default 10 s context


@pytest.fixture(scope="module")
def spec_dict() -> dict:
    return build_preprocess_json({})


@pytest.fixture(scope="module")
def spec(spec_dict):
    return spec_from_dict(spec_dict)


def scipy_windows(x: np.ndarray, fs: float, d: dict) -> np.ndarray:
    """Whole-record reference: resample_poly, sosfiltfilt at the model rate, back-to-back z-scored windows."""
    rate = d["sample_rate"]
    up, down = (int(v) for v in (np.array([rate, fs]) / np.gcd(int(rate), int(fs))))
    y = ss.resample_poly(x, up, down) if up != down else x
    y = ss.sosfiltfilt(np.array(d["bandpass"]["filters"][f"{rate:g}"]["sos"]), y)
    t = int(rate * d["window_s"])
    w = y[: (y.size // t) * t].reshape(-1, t)
    return (w - w.mean(1, keepdims=True)) / w.std(1, keepdims=True)


def test_filtfilt_matches_scipy_on_real_12_lead(shared_data, spec_dict):
    f = spec_dict["bandpass"]["filters"]["500"]
    flt = SOSFilter(np.array(f["sos"]), np.array(f["zi"]), f["padlen"])
    for rec in ("HR06000", "JS20004", "E07503"):
        x, _ = wfdb.rdsamp(str(shared_data / "ecg" / rec))
        ref = ss.sosfiltfilt(np.array(f["sos"]), x.T)
        assert np.abs(flt.filtfilt(x.T) - ref).max() < 1e-9, rec


@pytest.mark.parametrize("fs_in,fs_out", [(360, 500), (1000, 500), (250, 500), (128, 500), (500, 250)])
def test_resample_matches_resample_poly(fs_in, fs_out):
    x = np.random.default_rng(0).standard_normal(int(fs_in * 12.3))
    from fractions import Fraction

    fr = Fraction(fs_out, fs_in)
    ref = ss.resample_poly(x, fr.numerator, fr.denominator)
    y = resample(x, fs_in, fs_out)
    assert y.shape == ref.shape
    assert np.abs(y - ref).max() < 1e-12
    assert np.abs(design_fir(fr.numerator, fr.denominator)
                  - ss.firwin(2 * 10 * max(fr.numerator, fr.denominator) + 1, 1 / max(fr.numerator, fr.denominator),
                              window=("kaiser", 5.0)) * fr.numerator).max() < 1e-12


def test_stream_matches_whole_record_processing(shared_data, spec, spec_dict):
    x, fields = wfdb.rdsamp(str(shared_data / "mitdb" / "101"), channels=[0], sampto=360 * 600)
    ref = scipy_windows(x[:, 0], fields["fs"], spec_dict)
    wins = [w.x for w in windows_of(x[:, 0], fields["fs"], spec, chunk_s=7.3)]  # odd chunks on purpose
    assert len(wins) == len(ref) == 60
    assert np.abs(np.stack(wins) - ref).max() < WINDOW_TOL
    # a 10 s, 500 Hz record is one window and matches exactly: its edges are the record's edges
    y, _ = wfdb.rdsamp(str(shared_data / "ecg" / "HR06001"), channels=[1])
    (w,) = list(windows_of(y[:, 0], 500, spec))
    assert np.abs(w.x - scipy_windows(y[:, 0], 500, spec_dict)[0]).max() < 1e-5


def test_device_windows_match_the_training_store_preprocessing(shared_data, spec):
    """The contract: what the device feeds the model is what training saw (clef_core's
    preprocess_record + the per-view z-score), here on a 1000 Hz PTB record (38 s, 3 windows)."""
    pre = pytest.importorskip("clef_core.data.preprocess")
    from clef_core.data.records import read_record

    rec = read_record(shared_data / "wfdb" / "s0010_re")
    win = pre.preprocess_record(rec, pre.PreprocessConfig())
    lead = rec.leads.index("II")
    ours = list(windows_of(rec.signal[lead].astype(np.float64), rec.fs, spec))
    assert [w.start_s for w in ours] == list(win.start_s)
    ref = pre.zscore(win.signals[:, pre.LEAD_INDEX["II"]].astype(np.float64))
    assert np.abs(np.stack([w.x for w in ours]) - ref).max() < WINDOW_TOL


def test_stream_memory_does_not_grow_with_record_length(spec):
    rng = np.random.default_rng(1)

    def peak(minutes: int) -> int:
        def chunk() -> np.ndarray:  # 1 s at 250 Hz: noise and one QRS-like spike (pure noise is refused)
            x = 0.05 * rng.standard_normal(250)
            x[100:104] += 1.0
            return x

        chunks = (chunk() for _ in range(minutes * 60))
        tracemalloc.start()
        n = sum(1 for _ in iter_windows(chunks, 250, spec))
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert n == minutes * 6
        return top

    short, long = peak(2), peak(20)
    assert long < 1.2 * short + 100_000, (short, long)


def test_nan_gap_costs_only_its_window_and_flat_is_skipped(spec):
    x = np.sin(np.arange(500 * 30) / 500 * 2 * np.pi * 1.2)
    x[600:650] = np.nan  # 0.1 s: interpolated
    x[6000:6500] = np.nan  # 1 s: only that window is skipped, not its neighbour's context
    x[12500:] = 0.0  # lead off for the last 5 s and the next window
    x = np.concatenate([x, np.zeros(5000)])
    out = list(windows_of(x, 500, spec))
    assert [w.start_s for w in out] == [0.0, 10.0, 20.0, 30.0]
    assert out[0].x is not None and np.isfinite(out[0].x).all() and out[2].x is not None
    assert out[1].skipped.startswith("nan_gap: 1.00 s of NaN") and out[3].skipped.startswith("flat:")


def _artefacts(x: np.ndarray, fs: float) -> np.ndarray:
    """A real lead with one artefact per window: 1 s at 40 mV, 1 s of NaN, 0.2 s of NaN (kept),
    a flat lead-off stretch, a window of white noise."""
    x = x.copy()
    w, s = int(10 * fs), int(fs)
    x[2 * w + 3 * s : 2 * w + 4 * s] = 40.0
    x[5 * w + 6 * s : 5 * w + 7 * s] = np.nan
    x[7 * w + 2 * s : 7 * w + 2 * s + s // 5] = np.nan
    x[9 * w : 12 * w] = 0.0  # the middle window is flat (its neighbours ring from the edges)
    x[13 * w : 14 * w] = np.random.default_rng(0).standard_normal(w) * 0.3
    return x


def test_store_and_device_judge_windows_alike(shared_data, spec):
    """Parity of the one quality rule (edge/runtime/quality.py): on a real lead with artefacts the
    store's per-window decisions (clef_core.data.preprocess.window_reasons) are the device's."""
    pre = pytest.importorskip("clef_core.data.preprocess")
    from edge.runtime.quality import reason_code

    x, fields = wfdb.rdsamp(str(shared_data / "mitdb" / "101"), channels=[0], sampto=360 * 180)
    x = _artefacts(x[:, 0], fields["fs"])
    _, reasons = pre.window_reasons(x[None], fields["fs"], pre.PreprocessConfig())
    store = [reason_code(r) if r else None for r in reasons[:, 0]]
    device = [reason_code(w.skipped) if w.skipped else None for w in windows_of(x, fields["fs"], spec)]
    assert device == store
    assert [store[k] for k in (2, 5, 7, 13)] == ["out_of_range", "nan_gap", None, "noise"]
    assert store[10] == "flat" and store[0] is store[17] is None


@pytest.mark.parametrize("case,reason", [("all_nan", "all_nan"), ("noise", "not_ecg"), ("flat", "flat_line"),
                                         ("microvolts", "out_of_range")])
def test_store_and_device_refuse_the_same_records(shared_data, spec, case, reason):
    pre = pytest.importorskip("clef_core.data.preprocess")
    from clef_core.data.errors import BadRecordError
    from clef_core.data.records import EcgRecord

    from edge.runtime import SignalError

    x, fields = wfdb.rdsamp(str(shared_data / "mitdb" / "101"), channels=[0], sampto=360 * 30)
    x = {"all_nan": np.full(x.shape[0], np.nan), "noise": np.random.default_rng(1).standard_normal(x.shape[0]),
         "flat": np.full(x.shape[0], 0.2), "microvolts": x[:, 0] * 1000}[case]
    # a constant at 360 Hz is not flat at the record's ends after resample_poly's zero padding
    fs = 500 if case == "flat" else fields["fs"]
    rec = EcgRecord(name="r", signal=x[None].astype(np.float32), fs=fs, leads=["II"], source_leads=["II"],
                    units=["mV"])
    with pytest.raises(BadRecordError, match=f"record r: {reason}"):
        pre.preprocess_record(rec, pre.PreprocessConfig())
    with pytest.raises(SignalError, match=f"^{reason}: "):
        list(windows_of(x, fs, spec))


@pytest.mark.parametrize("record,lead", [("ecg/E07500", "II"), ("wfdb/s0010_re", "II"), ("mitdb/101", "II"),
                                         ("noise/bw", None)])
def test_numpy_wfdb_reader_matches_wfdb(shared_data, record, lead):
    """Formats 16 in .mat with a byte offset (CinC), 16 (PTB), 212 (MIT-BIH); MLII counts as II."""
    x, fs, name = read_wfdb_lead(shared_data / record, lead)
    rec = wfdb.rdrecord(str(shared_data / record), sampto=None if "mitdb" not in record else None)
    ref = rec.p_signal[:, rec.sig_name.index(name)]
    assert fs == rec.fs and x.shape == ref.shape
    assert np.array_equal(np.isnan(x), np.isnan(ref)) and np.nanmax(np.abs(x - ref)) < 1e-9


def test_numpy_wfdb_reader_errors_name_the_record(tmp_path, shared_data):
    shutil.copy(shared_data / "ecg" / "E07500.hea", tmp_path / "E07500.hea")
    (tmp_path / "E07500.mat").write_bytes(b"\x00" * 100)  # truncated
    with pytest.raises(RecordError, match="record E07500: signal file E07500.mat holds"):
        read_wfdb_lead(tmp_path / "E07500", "I")
    with pytest.raises(RecordError, match="record E07500: no lead 'V9'"):
        read_wfdb_lead(tmp_path / "E07500", "V9")
    with pytest.raises(RecordError, match="record nothing: no header"):
        read_wfdb_lead(tmp_path / "nothing")


def test_spec_errors_name_the_file(tmp_path, spec_dict):
    p = tmp_path / "preprocess.json"
    p.write_text(json.dumps({**spec_dict, "format_version": 99}))
    with pytest.raises(SpecError, match="preprocess.json.*format_version 99"):
        load_spec(p)
    p.write_text("{not json")
    with pytest.raises(SpecError, match="not valid JSON"):
        load_spec(p)
    with pytest.raises(SpecError, match="no such file"):
        load_spec(tmp_path / "missing.json")


def test_runtime_imports_only_numpy():
    probe = (
        "import sys, json, numpy as np\n"
        "import edge.runtime as r, edge.runtime.__main__, edge.runtime.selftest\n"
        "bad = [m for m in ('torch','scipy','wfdb','clef_core','pandas','onnxruntime') if m in sys.modules]\n"
        "print(json.dumps(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def write_reference(path: Path, spec_dict: dict, shared_data: Path) -> None:
    x, _ = wfdb.rdsamp(str(shared_data / "ecg" / "JS20004"))
    sos = np.array(spec_dict["bandpass"]["filters"]["500"]["sos"])
    r = np.random.default_rng(2).standard_normal(360 * 11)
    m, f = wfdb.rdsamp(str(shared_data / "mitdb" / "115"), channels=[0], sampto=360 * 120)
    np.savez(
        path,
        spec_json=json.dumps(spec_dict),
        filt_x=x.T, filt_expect=ss.sosfiltfilt(sos, x.T),
        res_x=r, res_fs=360.0, res_fs_out=500.0, res_expect=ss.resample_poly(r, 25, 18),
        win_x=m[:, 0], win_fs=float(f["fs"]), win_expect=scipy_windows(m[:, 0], f["fs"], spec_dict), win_tol=WINDOW_TOL,
    )


def run_in_edge_venv(tmp_path: Path, *args: str) -> dict:
    """Copy edge/runtime alone (as a device would get it) and run its selftest in .venv-edge."""
    if not (EDGE_VENV / "bin" / "python").exists():
        pytest.skip(f"no edge venv at {EDGE_VENV}: python3 -m venv .venv-edge && "
                    ".venv-edge/bin/pip install 'numpy<2' tflite-runtime==2.14.0")
    device = tmp_path / "device"
    shutil.copytree(REPO / "edge" / "runtime", device / "clef_edge", ignore=shutil.ignore_patterns("__pycache__"))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([str(EDGE_VENV / "bin" / "python"), "-m", "clef_edge.selftest", *args],
                          cwd=device, capture_output=True, text=True, env=env, timeout=300)
    assert proc.stdout.strip(), proc.stderr
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert proc.returncode == 0, res
    return res


def test_runtime_selftest_in_numpy1_venv(tmp_path, spec_dict, shared_data):
    ref = tmp_path / "ref.npz"
    write_reference(ref, spec_dict, shared_data)
    res = run_in_edge_venv(tmp_path, str(ref))
    assert res["numpy"].startswith("1.")
    assert res["filtfilt_max_abs_diff"] < 1e-9 and res["resample_max_abs_diff"] < 1e-9
    assert res["windows_max_abs_diff"] < WINDOW_TOL
    assert res["forbidden_imports"] == []


@pytest.mark.parametrize("record", ["mitdb/203", "mitdb/207", "ecg/E07503", "wfdb/s0010_re"])
def test_real_ecg_is_never_taken_for_noise(shared_data, spec, record):
    """AF (203), ventricular flutter (207, the lowest-kurtosis ECG measured) and 12-lead records
    with low-kurtosis leads: no window of any lead is skipped as noise."""
    x, f = wfdb.rdsamp(str(shared_data / record))
    for lead in range(x.shape[1]):
        if np.ptp(x[:, lead]) > 0:
            assert not [w.skipped for w in windows_of(x[:, lead], f["fs"], spec) if w.skipped], (record, lead)


def test_noise_rule_and_range_check(spec):
    from edge.runtime import SignalError

    rng = np.random.default_rng(3)
    for noise in (rng.standard_normal(500 * 30), rng.uniform(-1, 1, 500 * 30)):
        with pytest.raises(SignalError, match=r"not_ecg: no usable window of 3 \(noise 3\)"):
            list(windows_of(noise, 500, spec))
    with pytest.raises(SignalError, match="too_short: 9.99 s"):
        list(windows_of(np.sin(np.arange(4995) / 50), 500, spec))
    x = np.sin(np.arange(500 * 30) / 50)
    x[12_345] = 31.0  # one sample beyond the store's 30 mV: its window only
    out = list(windows_of(x, 500, spec))
    assert out[2].skipped.startswith("out_of_range: 31.0 mV at 24.69 s") and out[1].x is not None


def test_calibrated_head_prints_a_platt_probability_and_decides_on_it(spec_dict):
    """A shipped Platt map turns the head's logit into sigmoid(a z + b); the decision is taken on
    that probability at the operating threshold, and the head says it is calibrated and on what."""
    cal = {"method": "platt", "a": 2.0, "b": -3.0, "n_records": 18, "brier_before": 0.2, "brier_after": 0.1}
    op = {"probability_threshold": 0.3, "target_sensitivity": 0.9, "sensitivity": 0.88, "specificity": 0.6,
          "n_pos": 40, "n_neg": 60, "calibrated": True, "calibration": cal}
    head = {"labels": ["af"], "weight": [[1.0, 0.0]], "bias": [0.5], "activation": "sigmoid", "lead": "II",
            "metric": "auroc", "value": 0.8, "operating_points": {"af": op}}
    h = spec_from_dict({**spec_dict, "heads": {"af_II": head}}).heads["af_II"]
    for z in (-1.0, 1.0, 1.2, 3.0):
        p = h(np.array([z - 0.5, 7.0]))
        assert p[0] == pytest.approx(1 / (1 + np.exp(-(2.0 * z - 3.0))))
        assert h.decisions(p) == {"af": bool(p[0] >= 0.3)}
    text = h.describe("af_II")
    assert "a calibrated probability" in text and "calibrated (Platt) on 18 held-out records" in text
    assert "sensitivity 0.88, specificity 0.60" in text
    bad = {**op, "calibration": {"method": "platt", "a": "x"}}
    with pytest.raises(SpecError, match="head 'af_II' label 'af': calibration needs numbers"):
        spec_from_dict({**spec_dict, "heads": {"af_II": {**head, "operating_points": {"af": bad}}}})
