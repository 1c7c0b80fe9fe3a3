"""Preprocessing: config round trip, band-pass response, resampling, NaN gaps, windows, per-window quality."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from clef_core.config import load_config
from clef_core.data.errors import BadRecordError
from clef_core.data.leads import LEADS
from clef_core.data.preprocess import (
    PREPROCESS_VERSION,
    PreprocessConfig,
    bandpass,
    cut_windows,
    preprocess_record,
    resample,
    zscore,
)
from clef_core.data.records import EcgRecord, read_record
from edge.runtime.quality import prepare_samples
from wfdb_factory import bad_records, ecg_like

CFG = PreprocessConfig()


def record(signal: np.ndarray, fs: float = 500, leads: list[str] | None = None, name: str = "r") -> EcgRecord:
    leads = leads or list(LEADS[: signal.shape[0]])
    return EcgRecord(name=name, signal=signal.astype(np.float32), fs=fs, leads=leads, source_leads=leads,
                     units=["mV"] * len(leads))


def test_config_from_default_section_and_round_trip() -> None:
    cfg = PreprocessConfig(**load_config()["preprocess"])
    got = (cfg.sample_rate, cfg.window_s, cfg.bandpass_low, cfg.bandpass_high, cfg.filter_order)
    assert got == (500, 10.0, 0.67, 40.0, 5)
    assert cfg.window_samples == 5000
    d = cfg.to_dict()
    assert d["version"] == PREPROCESS_VERSION and d["leads"] == list(LEADS) and d["units"] == "mV"
    assert PreprocessConfig.from_dict(d) == cfg
    with pytest.raises(ValueError, match="version"):
        PreprocessConfig.from_dict({**d, "version": PREPROCESS_VERSION + 1})
    with pytest.raises(ValueError, match="unknown key"):
        PreprocessConfig.from_dict({**d, "zscore": True})
    with pytest.raises(ValueError, match="bandpass"):
        PreprocessConfig(sample_rate=60)


def _gain(freq: float, fs: int = 500, seconds: float = 60) -> float:
    t = np.arange(int(fs * seconds)) / fs
    x = np.sin(2 * np.pi * freq * t)[None]
    y = bandpass(x, CFG)
    mid = slice(len(t) // 4, 3 * len(t) // 4)  # away from the edges
    return float(np.sqrt(np.mean(y[0, mid] ** 2) / np.mean(x[0, mid] ** 2)))


@pytest.mark.parametrize("freq, low, high", [(0.2, 0, 0.001), (0.3, 0, 0.01), (0.5, 0, 0.1), (45, 0, 0.3),
                                             (50, 0, 0.1), (60, 0, 0.05), (100, 0, 0.001),
                                             (2, 0.97, 1.01), (10, 0.99, 1.01), (25, 0.97, 1.01)])
def test_bandpass_response(freq: float, low: float, high: float) -> None:
    assert low <= _gain(freq) <= high


def test_bandpass_is_zero_phase() -> None:
    t = np.arange(5000) / 500
    x = np.exp(-(((t - 5) / 0.02) ** 2))[None]  # a QRS-like pulse at 5 s
    assert np.argmax(bandpass(x, CFG)[0]) == np.argmax(x[0])


@pytest.mark.parametrize("fs, seconds", [(360, 30), (1000, 38.4), (257, 20), (250, 10), (500, 10), (128, 12)])
def test_resample_keeps_duration_and_frequency(fs: int, seconds: float) -> None:
    t = np.arange(int(round(fs * seconds))) / fs
    y = resample(np.sin(2 * np.pi * 7 * t)[None], fs, 500)
    assert abs(y.shape[1] - round(500 * seconds)) <= 1
    spectrum = np.abs(np.fft.rfft(y[0]))
    assert np.fft.rfftfreq(y.shape[1], 1 / 500)[spectrum.argmax()] == pytest.approx(7, abs=0.11)


def test_nan_gaps_interpolated_and_long_ones_marked() -> None:
    x = np.tile(np.linspace(0, 1, 1000), (2, 1))
    x[0, 100:150] = np.nan  # 0.1 s at 500 Hz
    x[1, :20] = np.nan  # leading gap: nearest value
    s = prepare_samples(x, 500, CFG.quality)
    np.testing.assert_allclose(s.filled[0], np.linspace(0, 1, 1000), atol=1e-12)
    assert np.all(s.filled[1, :20] == s.filled[1, 20]) and not s.long_gap.any()
    x[0, 100:400] = np.nan  # 0.6 s: interpolated too, but marked
    x[1, 500] = 31.0  # beyond max_abs_mv: out of range, then interpolated like a gap
    s = prepare_samples(x, 500, CFG.quality)
    assert np.isfinite(s.filled).all() and s.long_gap[0, 100:400].all() and s.long_gap.sum() == 300
    assert s.out_of_range[1, 500] and s.out_of_range.sum() == 1 and s.filled[1, 500] < 1


def _windows_30s(x: np.ndarray) -> np.ndarray:
    return np.concatenate([x, x, x], axis=1)


def test_one_artefact_costs_only_its_window() -> None:
    """A 1 s 40 mV spike or a 1 s NaN gap in the middle window of a 30 s record: that window is
    skipped with its reason and counted; the record and its other windows are kept."""
    clean = _windows_30s(ecg_like(2, 500, 10).T.astype(np.float64))
    for reason, damage in (("out_of_range", 40.0), ("nan_gap", np.nan)):
        x = clean.copy()
        x[:, 7000:7500] = damage
        w = preprocess_record(record(x), CFG)
        assert list(w.start_s) == [0.0, 20.0] and w.skipped == {reason: 1}, (reason, w.skipped)
        assert w.lead_skipped == {reason: 2}
        # the neighbours are what they were without the artefact: no ringing, no lost context
        ref = preprocess_record(record(clean), CFG)
        assert np.abs(w.signals[1] - ref.signals[2]).max() < 0.05
    x = clean.copy()
    x[1, 7000:7500] = 40.0  # only lead II: masked in that window, lead I kept
    w = preprocess_record(record(x), CFG)
    assert len(w.start_s) == 3 and w.lead_mask[1, :2].tolist() == [True, False] and w.skipped == {}
    assert w.lead_skipped == {"out_of_range": 1}


def test_record_refused_only_when_no_window_survives() -> None:
    rng = np.random.default_rng(0)
    cases = {"not_ecg": rng.standard_normal((2, 15000)), "nan_gap": np.full((2, 15000), np.nan),
             "flat_line": np.full((2, 15000), 0.3), "out_of_range": ecg_like(2, 500, 30).T * 1000}
    cases["nan_gap"][0, ::1000] = 0.1  # a few finite samples: gaps, not an all-NaN record
    for reason, x in cases.items():
        with pytest.raises(BadRecordError, match=f"record r: {reason}: leads I, II: no usable window of 3"):
            preprocess_record(record(x), CFG)


def test_short_nan_gap_in_record_is_filled() -> None:
    x = ecg_like(2, 500, 10).T
    x[0, 2000:2100] = np.nan
    w = preprocess_record(record(x), CFG)
    assert np.isfinite(w.signals).all() and w.lead_mask[0, :2].all()


def test_cut_windows_non_overlapping() -> None:
    x = np.arange(2 * 23).reshape(2, 23)
    w = cut_windows(x, 5)
    assert w.shape == (4, 2, 5)
    np.testing.assert_array_equal(w[1, 1], x[1, 5:10])


def test_every_shared_ecg_record_preprocesses(shared_data: Path) -> None:
    for hea in sorted((shared_data / "ecg").glob("*.hea")):
        w = preprocess_record(read_record(hea.with_suffix("")), CFG)
        assert w.signals.shape == (1, 12, 5000) and w.signals.dtype == np.float32
        assert np.isfinite(w.signals).all() and np.abs(w.signals).max() < CFG.max_abs_mv
        assert abs(w.signals[0].mean(axis=-1)).max() < 0.1  # band-passed: no baseline offset
        if hea.stem in ("JS20004", "JS20008"):  # V2, V4, V6 are recorded as zeros in these two
            assert [LEADS[i] for i in np.flatnonzero(~w.lead_mask[0])] == ["V2", "V4", "V6"]
            assert not w.signals[0, [7, 9, 11]].any()
        else:
            assert w.lead_mask.all(), hea.stem


def test_float16_storage_is_adequate(shared_data: Path) -> None:
    x = preprocess_record(read_record(shared_data / "ecg" / "JS20007"), CFG).signals  # the largest amplitude
    err = np.abs(x.astype(np.float16).astype(np.float32) - x)
    assert err.max() < 0.004  # mV: below the ADC resolution of a 1000 adu/mV record... x4
    assert np.sqrt(np.mean(err**2)) / np.sqrt(np.mean(x**2)) < 1e-3


def test_ptb_1000hz_resampled_into_windows(shared_data: Path) -> None:
    w = preprocess_record(read_record(shared_data / "wfdb" / "s0010_re"), CFG)
    assert w.signals.shape == (3, 12, 5000) and w.lead_mask.all()
    np.testing.assert_array_equal(w.start_s, [0, 10, 20])


@pytest.mark.parametrize("name, other", [("101", "V1"), ("114", "V5")])
def test_mitdb_30_min_many_windows(shared_data: Path, name: str, other: str) -> None:
    w = preprocess_record(read_record(shared_data / "mitdb" / name), CFG)
    assert w.signals.shape == (180, 12, 5000)  # 650000 / 360 Hz = 1805.6 s
    present = sorted(LEADS[i] for i in np.flatnonzero(w.lead_mask.any(axis=0)))
    assert present == sorted(["II", other])
    assert w.lead_mask[:, LEADS.index("II")].all()
    np.testing.assert_array_equal(w.start_s[:3], [0, 10, 20])


def test_flat_lead_masked_flat_record_refused() -> None:
    x = ecg_like(3, 500, 10).T
    x[1] = 0.4  # lead II stuck at an offset
    w = preprocess_record(record(x), CFG)
    np.testing.assert_array_equal(w.lead_mask[0, :3], [True, False, True])
    assert not w.signals[0, 1].any()
    with pytest.raises(BadRecordError, match="record r: flat_line"):
        preprocess_record(record(np.full((3, 5000), 0.4)), CFG)


def test_nan_lead_absent_all_nan_refused() -> None:
    x = ecg_like(3, 500, 10).T
    x[2] = np.nan
    w = preprocess_record(record(x), CFG)
    np.testing.assert_array_equal(w.lead_mask[0, :3], [True, True, False])
    with pytest.raises(BadRecordError, match="all_nan"):
        preprocess_record(record(np.full((3, 5000), np.nan)), CFG)


def test_record_checks() -> None:
    with pytest.raises(BadRecordError, match="record r: too_short"):
        preprocess_record(record(ecg_like(2, 500, 9.9).T), CFG)
    with pytest.raises(BadRecordError, match="bad_sampling_rate"):
        preprocess_record(record(ecg_like(2, 60, 20).T, fs=60), CFG)
    with pytest.raises(BadRecordError, match="out_of_range"):
        preprocess_record(record(ecg_like(2, 500, 10).T * 1000), CFG)


def test_damaged_files_give_their_reason(tmp_path: Path) -> None:
    for name, reason in bad_records(tmp_path).items():
        with pytest.raises(BadRecordError) as err:
            preprocess_record(read_record(tmp_path / name, record_id=name), CFG)
        assert (err.value.reason, err.value.record_id) == (reason, name)


def test_zscore() -> None:
    x = np.stack([np.sin(np.arange(5000) / 30) * 3 + 2, np.full(5000, 7.0)])
    z = zscore(x)
    np.testing.assert_allclose(z[0].mean(), 0, atol=1e-5)
    np.testing.assert_allclose(z[0].std(), 1, atol=1e-4)
    assert np.all(z[1] == 0)
