"""Noise bank, augmentation, CLEF views and the pretraining / labelled datasets."""

from __future__ import annotations

import dataclasses
import logging
import math

import numpy as np
import pytest

from clef_core.data import noise as noise_mod
from clef_core.data.augment import (AUGMENTATIONS, AugmentSpec, ViewConfig, apply_augmentation, augment,
                                   draw_augmentation, resized_crop)
from clef_core.data.preprocess import zscore
from clef_core.data.noise import NOISE_KINDS, NoiseBank, find_noise_dir, generate_bw, generate_em, generate_ma
from clef_core.data.views import disjoint_starts, draw_leads, make_views

FS = 500
T = 5000


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.asarray(x, np.float64) ** 2)))


def _power_below(x: np.ndarray, hz: float, fs: float = FS) -> float:
    spec = np.abs(np.fft.rfft(x - x.mean())) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / fs)
    return float(spec[freqs < hz].sum() / spec.sum())


@pytest.fixture(scope="module")
def generated_bank() -> NoiseBank:
    return NoiseBank(FS, noise_dir=None)


@pytest.fixture(scope="module")
def recorded_bank(shared_data) -> NoiseBank:
    return NoiseBank(FS, noise_dir=shared_data / "noise")


def _ecg_like(n_leads: int = 12) -> np.ndarray:
    """A smooth multi-lead test window in mV (sines of lead-specific amplitude)."""
    t = np.arange(T) / FS
    amp = np.linspace(0.2, 1.5, n_leads)[:, None]
    return (amp * np.sin(2 * np.pi * 1.2 * t) + 0.3 * np.sin(2 * np.pi * 7 * t + np.arange(n_leads)[:, None])).astype(np.float32)


# ---------------------------------------------------------------------------------- noise


@pytest.mark.parametrize("kind", NOISE_KINDS)
@pytest.mark.parametrize("rms", [0.1, 0.37])
def test_generated_noise_has_exact_rms_and_zero_mean(generated_bank, kind, rms):
    rng = np.random.default_rng(1)
    for length in (T, 777):
        x = generated_bank.sample(kind, length, rms, rng)
        assert x.dtype == np.float32 and x.shape == (length,)
        assert _rms(x) == pytest.approx(rms, rel=1e-5)
        assert abs(float(x.mean())) < 1e-5


def test_recorded_noise_loaded_from_shared_data(recorded_bank, shared_data):
    assert recorded_bank.source("bw") == "recorded" and recorded_bank.source("ma") == "recorded"
    assert recorded_bank.source("em") == "generated"
    desc = recorded_bank.describe()
    assert desc["noise_dir"] == str(shared_data / "noise")
    assert desc["kinds"]["bw"]["source"] == "recorded" and desc["kinds"]["bw"]["channels"] == 2
    assert desc["kinds"]["bw"]["seconds"] == pytest.approx(650000 / 360, abs=0.01)  # 30 min at any rate
    assert desc["kinds"]["em"]["source"] == "generated"

    rng = np.random.default_rng(2)
    for kind in ("bw", "ma"):
        x = recorded_bank.sample(kind, T, 0.1, rng)
        assert x.shape == (T,) and _rms(x) == pytest.approx(0.1, rel=1e-5)
    # The real recordings have the spectra their names promise (resampled correctly to 500 Hz).
    bw = np.concatenate([recorded_bank.sample("bw", T, 0.1, rng) for _ in range(20)])
    ma = np.concatenate([recorded_bank.sample("ma", T, 0.1, rng) for _ in range(20)])
    # (NST "ma" also carries much sub-Hz drift: only its >5 Hz share tells it from "bw".)
    assert _power_below(bw, 1.5) > 0.8
    assert 1 - _power_below(ma, 5.0) > 0.03 > 0.01 > 1 - _power_below(bw, 5.0)


def test_recorded_window_is_a_slice_of_the_resampled_record(recorded_bank):
    record = noise_mod.load_recorded(str(recorded_bank.noise_dir), "ma", float(FS))
    assert record.shape == (2, math.ceil(650000 * FS / 360))
    x = recorded_bank.sample("ma", 1000, 0.1, np.random.default_rng(3))
    replay = np.random.default_rng(3)  # the same draws: channel, then start
    channel, start = int(replay.integers(2)), int(replay.integers(record.shape[1]))
    expected = noise_mod.scale_to_rms(np.take(record[channel], np.arange(start, start + 1000), mode="wrap"), 0.1)
    np.testing.assert_allclose(x, expected, atol=1e-6)


def test_fallback_generators_when_noise_folder_absent(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(noise_mod, "default_noise_dirs", lambda: [tmp_path / "missing", tmp_path])
    noise_mod._WARNED.clear()
    with caplog.at_level(logging.WARNING, logger="clef_core.data.noise"):
        bank = NoiseBank(FS, noise_dir="")
        NoiseBank(FS, noise_dir="")
    assert [r for r in caplog.records if "generated noise" in r.getMessage()].__len__() == 1  # once
    assert bank.noise_dir is None
    assert {k: v["source"] for k, v in bank.describe()["kinds"].items()} == dict.fromkeys(NOISE_KINDS, "generated")
    rng = np.random.default_rng(0)
    assert _rms(bank.sample("bw", T, 0.1, rng)) == pytest.approx(0.1, rel=1e-5)
    with pytest.raises(FileNotFoundError, match="views.noise_dir"):
        NoiseBank(FS, noise_dir=tmp_path / "not-there")


def test_noise_dir_search_order(tmp_path, monkeypatch, shared_data):
    monkeypatch.setenv(noise_mod.NOISE_DIR_ENV, str(tmp_path))
    dirs = noise_mod.default_noise_dirs()
    assert dirs[0] == tmp_path and dirs[-1].parts[-3:] == ("shared", "data", "noise")
    assert find_noise_dir("", candidates=[tmp_path, shared_data / "noise"]) == shared_data / "noise"
    assert find_noise_dir("", candidates=[tmp_path]) is None
    assert find_noise_dir(None) is None


def test_electrode_motion_generator_properties():
    x = generate_em(T, FS, np.random.default_rng(5))
    assert x.shape == (T,) and np.isfinite(x).all() and _rms(x) > 0
    np.testing.assert_array_equal(x, generate_em(T, FS, np.random.default_rng(5)))
    assert not np.allclose(x, generate_em(T, FS, np.random.default_rng(6)))
    # Abrupt jumps: the sample-to-sample difference is heavy-tailed, unlike smooth drift.
    jumps = [np.abs(np.diff(generate_em(T, FS, np.random.default_rng(s)))) for s in range(20)]
    assert np.median([j.max() / np.median(j) for j in jumps]) > 20
    # Low-frequency artifact (jumps decaying over 0.15-1 s, 2-12 Hz ringing, <2 Hz drift).
    long = generate_em(60 * FS, FS, np.random.default_rng(7))
    assert _power_below(long, 15.0) > 0.95
    # Never empty, even for a window too short to expect an event.
    assert _rms(generate_em(50, FS, np.random.default_rng(8))) > 0


def test_bw_and_ma_generators_spectra():
    rng = np.random.default_rng(9)
    assert _power_below(generate_bw(30 * FS, FS, rng), 1.05) > 0.99
    ma = generate_ma(30 * FS, FS, rng)
    assert _power_below(ma, 5.0) < 0.05 and np.isfinite(ma).all()


# ---------------------------------------------------------------------------------- augmentation


def test_view_config_from_default_toml():
    from clef_core.config import load_config

    cfg = ViewConfig(**load_config()["views"])
    assert cfg == ViewConfig()  # the dataclass defaults are default.toml's
    assert (cfg.pairing, cfg.crop_s, cfg.noise_scale, cfg.same_lead_p, cfg.mask_p, cfg.noise_dir) == (
        "disjoint_crops", 4.0, "snr", 0.8, 0.2, "")
    with pytest.raises(ValueError, match="mask_min"):
        ViewConfig(mask_min=0.4, mask_max=0.3)
    with pytest.raises(ValueError, match="views.pairing"):
        ViewConfig(pairing="neighbours")
    with pytest.raises(ValueError, match="crop_s"):
        ViewConfig(pairing="disjoint_crops", crop_s=0)
    with pytest.raises(ValueError, match="views.noise_scale"):
        ViewConfig(noise_scale="db")
    with pytest.raises(ValueError, match="views.flip_p"):
        ViewConfig(flip_p=1.5)


def test_mask_fraction_and_probability():
    cfg, rng, n = ViewConfig(), np.random.default_rng(10), 20000
    specs = [draw_augmentation(T, rng, cfg) for _ in range(n)]
    masks = [s.mask for s in specs if s.mask is not None]
    assert len(masks) / n == pytest.approx(0.2, abs=0.015)
    widths = np.array([b - a for a, b in masks]) / T
    assert widths.min() >= 0.1 and widths.max() <= 0.3 and widths.mean() == pytest.approx(0.2, abs=0.01)
    assert all(0 <= a < b <= T for a, b in masks)
    counts = {k: sum(s.kind == k for s in specs) / n for k in AUGMENTATIONS}
    assert all(abs(c - 0.2) < 0.015 for c in counts.values()), counts


def test_mask_zeroes_exactly_the_block_in_mv(generated_bank):
    x = _ecg_like()[0] + 1.0
    out = apply_augmentation(x, AugmentSpec("identity", (100, 1600)), np.random.default_rng(0), ViewConfig(), generated_bank)
    assert (out[100:1600] == 0).all() and np.array_equal(out[:100], x[:100]) and np.array_equal(out[1600:], x[1600:])
    absolute = ViewConfig(noise_scale="absolute", noise_rms=0.1)
    noisy = apply_augmentation(x, AugmentSpec("mixture", None), np.random.default_rng(0), absolute, generated_bank)
    assert _rms(noisy - x) == pytest.approx(0.1, rel=1e-4)


@pytest.mark.parametrize("snr_db", [0.0, 10.0, 20.0])
def test_noise_at_a_signal_to_noise_ratio_of_the_view(generated_bank, snr_db):
    cfg = ViewConfig(noise_scale="snr", noise_snr_db=snr_db)
    for amplitude in (0.05, 2.0):  # a small lead gets small noise: the ratio is what is fixed
        x = amplitude * _ecg_like()[0] + 3.0  # an offset does not count as signal
        for kind in ("em", "ma", "bw", "mixture"):
            noisy = apply_augmentation(x, AugmentSpec(kind, None), np.random.default_rng(1), cfg, generated_bank)
            ratio_db = 20 * np.log10(_rms(x - x.mean()) / _rms(noisy - x))
            assert ratio_db == pytest.approx(snr_db, abs=1e-3)


def test_sign_flip_and_resized_crop(generated_bank):
    x = _ecg_like()[3]
    quiet = dict(noise_scale="absolute", noise_rms=0.0, mask_p=0.0)
    flipped = augment(x, np.random.default_rng(2), ViewConfig(**quiet, flip_p=1.0), generated_bank)
    np.testing.assert_allclose(flipped, -zscore(x), atol=1e-5)
    same = augment(x, np.random.default_rng(2), ViewConfig(**quiet, rrc_p=1.0, rrc_min=1.0), generated_bank)
    np.testing.assert_allclose(same, zscore(x), atol=1e-4)  # keeping 100 % is the identity
    ramp = np.arange(1000, dtype=np.float32)
    for seed in range(20):
        out = resized_crop(ramp, np.random.default_rng(seed), 0.5)
        slope = float(np.mean(np.diff(out)))
        assert out.shape == ramp.shape and 0.5 - 1e-3 <= slope <= 1.0 + 1e-9  # a stretch of up to 2x
        assert out[0] >= 0 and out[-1] <= 999


def test_zscore_guard_for_flat_signal():
    out = zscore(np.zeros(T, np.float32))
    assert np.isfinite(out).all() and (out == 0).all()


# ---------------------------------------------------------------------------------- views


def test_same_lead_probability_with_12_leads():
    rng, n, p = np.random.default_rng(11), 40000, 0.8
    draws = np.array([draw_leads(np.ones(12, bool), rng, p) for _ in range(n)])
    same = float(np.mean(draws[:, 0] == draws[:, 1]))
    assert same == pytest.approx(p + (1 - p) / 12, abs=0.01)  # an independent draw may coincide
    assert np.bincount(draws[:, 0], minlength=12) / n == pytest.approx(np.full(12, 1 / 12), abs=0.01)


def test_only_available_leads_are_drawn(generated_bank):
    mask = np.zeros(12, bool)
    mask[[1, 6]] = True  # e.g. MIT-BIH: MLII and V1
    rng, cfg = np.random.default_rng(12), ViewConfig()
    window = _ecg_like()
    leads = set()
    for _ in range(300):
        _, _, l1, l2 = make_views(window, mask, rng, cfg, generated_bank)
        leads.update((l1, l2))
    assert leads == {1, 6}
    with pytest.raises(ValueError, match="no available lead"):
        make_views(window, np.zeros(12, bool), rng, cfg, generated_bank)


def test_views_are_zscored_and_finite_even_when_flat(generated_bank):
    rng, cfg = np.random.default_rng(13), ViewConfig()
    for window in (_ecg_like(), np.zeros((12, T), np.float32)):
        for _ in range(100):
            v1, v2, _, _ = make_views(window, np.ones(12, bool), rng, cfg, generated_bank)
            for v in (v1, v2):
                assert v.shape == (1, int(cfg.crop_s * FS)) and v.dtype == np.float32 and np.isfinite(v).all()
                assert abs(float(v.mean())) < 1e-4
                # A flat window stays flat (std 0) only without noise and without a mask.
                assert float(v.std()) == pytest.approx(1.0, abs=1e-3) or (window == 0).all()


def test_views_reproducible_from_seed(generated_bank):
    cfg, window, mask = ViewConfig(), _ecg_like(), np.ones(12, bool)
    a = make_views(window, mask, np.random.default_rng(14), cfg, generated_bank)
    b = make_views(window, mask, np.random.default_rng(14), cfg, generated_bank)
    c = make_views(window, mask, np.random.default_rng(15), cfg, generated_bank)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert a[2:] == b[2:]
    assert not np.array_equal(a[0], c[0])
    single = augment(window[0], np.random.default_rng(16), cfg, generated_bank)
    np.testing.assert_array_equal(single, augment(window[0], np.random.default_rng(16), cfg, generated_bank))


def test_disjoint_crops_share_no_sample(generated_bank):
    rng = np.random.default_rng(20)
    for n, crop in ((5000, 2000), (1000, 400), (1001, 500)):
        for _ in range(500):
            a, b = disjoint_starts(n, crop, rng)
            assert 0 <= a and a + crop <= n // 2 <= b and b + crop <= n
    # make_views: each view is its crop (no noise, no mask: the views are z-scored crops of the lead)
    quiet = ViewConfig(pairing="disjoint_crops", crop_s=2.0, same_lead_p=1.0, noise_scale="absolute", noise_rms=0.0,
                       mask_p=0.0)
    ramp = np.tile(np.random.default_rng(99).standard_normal(T).astype(np.float32), (12, 1))  # every crop unique
    for _ in range(50):
        v1, v2, l1, l2 = make_views(ramp, np.ones(12, bool), rng, quiet, generated_bank)
        assert v1.shape == v2.shape == (1, 1000) and l1 == l2
        idx = [np.flatnonzero([np.allclose(zscore(ramp[0, s:s + 1000]), v[0], atol=1e-4) for s in range(0, T - 999, 1)])
               for v in (v1, v2)]
        assert len(idx[0]) == len(idx[1]) == 1 and idx[0][0] + 1000 <= T // 2 <= idx[1][0]
    with pytest.raises(ValueError, match="crop_s"):
        make_views(ramp, np.ones(12, bool), rng, ViewConfig(crop_s=6.0), generated_bank)


def test_same_window_pairing_is_the_reference_pipeline(generated_bank):
    """pairing = same_window, whole window, absolute noise, no flip / resized crop: draw for draw the
    reference code's views (draw_leads, then each lead's window augmented)."""
    from clef_core.config import load_config

    cfg = ViewConfig(**load_config("paper")["views"])
    assert (cfg.pairing, cfg.crop_s, cfg.noise_scale, cfg.noise_rms, cfg.rrc_p, cfg.flip_p) == (
        "same_window", 0.0, "absolute", 0.1, 0.0, 0.0)
    window, mask = _ecg_like(), np.ones(12, bool)
    for seed in range(10):
        v1, v2, l1, l2 = make_views(window, mask, np.random.default_rng(seed), cfg, generated_bank)
        replay = np.random.default_rng(seed)
        r1, r2 = draw_leads(mask, replay, cfg.same_lead_p)
        s1 = draw_augmentation(T, replay, cfg)
        e1 = zscore(apply_augmentation(window[r1], s1, replay, cfg, generated_bank))
        s2 = draw_augmentation(T, replay, cfg)
        e2 = zscore(apply_augmentation(window[r2], s2, replay, cfg, generated_bank))
        assert (l1, l2) == (r1, r2) and v1.shape == (1, T)
        np.testing.assert_array_equal(v1[0], e1)
        np.testing.assert_array_equal(v2[0], e2)
        if s1.kind != "identity":  # 0.1 mV absolute, whatever the lead's amplitude
            assert _rms(apply_augmentation(window[r1], AugmentSpec(s1.kind, None), np.random.default_rng(0), cfg,
                                           generated_bank) - window[r1]) == pytest.approx(0.1, rel=1e-4)


def test_leads_pairing_draws_two_leads_at_the_same_moment(generated_bank):
    cfg = ViewConfig(pairing="leads", crop_s=2.0, noise_scale="absolute", noise_rms=0.0, mask_p=0.0)
    window = np.random.default_rng(98).standard_normal((12, T)).astype(np.float32)  # every crop unique
    rng = np.random.default_rng(21)
    for _ in range(50):
        v1, v2, l1, l2 = make_views(window, np.ones(12, bool), rng, cfg, generated_bank)
        assert l1 != l2
        starts = [np.flatnonzero([np.allclose(zscore(window[l, s:s + 1000]), v[0], atol=1e-3) for s in range(T - 999)])
                  for l, v in ((l1, v1), (l2, v2))]
        assert len(starts[0]) == 1 and list(starts[0]) == list(starts[1])  # the same moment
    single = np.zeros(12, bool)
    single[4] = True
    assert make_views(window, single, rng, cfg, generated_bank)[2:] == (4, 4)


def test_recordings_pairing_takes_view_2_from_the_other_recording(generated_bank):
    cfg = ViewConfig(pairing="recordings", crop_s=2.0, same_lead_p=1.0, noise_scale="absolute", noise_rms=0.0, mask_p=0.0)
    first, second = _ecg_like(), 5.0 + np.cos(np.arange(T, dtype=np.float32) / 30)[None].repeat(12, 0)
    rng = np.random.default_rng(22)
    for _ in range(20):
        v1, v2, l1, l2 = make_views(first, np.ones(12, bool), rng, cfg, generated_bank, (second, np.ones(12, bool)))
        assert l1 == l2 and v2.shape == (1, 1000)
        assert any(np.allclose(zscore(second[l2, s:s + 1000]), v2[0], atol=1e-3) for s in range(0, T - 999))
        assert any(np.allclose(zscore(first[l1, s:s + 1000]), v1[0], atol=1e-3) for s in range(0, T - 999))
    # one recording only: disjoint crops of it
    expected = make_views(first, np.ones(12, bool), np.random.default_rng(3), dataclasses.replace(cfg, pairing="disjoint_crops"),
                          generated_bank)
    got = make_views(first, np.ones(12, bool), np.random.default_rng(3), cfg, generated_bank)
    np.testing.assert_array_equal(expected[0], got[0])
    np.testing.assert_array_equal(expected[1], got[1])


# ---------------------------------------------------------------------------------- datasets
# A tiny real store built with the real builder: two records of one patient (pA), a 38.4 s PTB
# record (3 windows, pB), two more CinC records, and MIT-BIH 101 (30 min = 180 windows, leads II
# and V1 only, pE).

STORE_RECORDS = [
    ("HR06000", "pA", "ecg/HR06000"),
    ("HR06001", "pA", "ecg/HR06001"),
    ("s0010_re", "pB", "wfdb/s0010_re"),
    ("JS20000", "pC", "ecg/JS20000"),
    ("E07500", "pD", "ecg/E07500"),
    ("101", "pE", "mitdb/101"),
]


@pytest.fixture(scope="module")
def tiny_store(shared_data, tmp_path_factory):
    from clef_core.data.preprocess import PreprocessConfig
    from clef_core.data.records import RecordRef
    from clef_core.data.store import ECGStore, build_store

    refs = [RecordRef(rid, subject, shared_data / rel) for rid, subject, rel in STORE_RECORDS]
    out = tmp_path_factory.mktemp("views_store") / "store"
    report = build_store(refs, out, PreprocessConfig(), progress=False)
    assert report.n_skipped == 0
    return ECGStore.open(out)


@pytest.fixture(scope="module")
def clinical():
    import pandas as pd

    return pd.DataFrame(  # E07500 has no row; JS20000's and HR06001's risk are unknown
        {
            "record_id": ["HR06000", "HR06001", "s0010_re", "JS20000", "101"],
            "subject_id": ["pA", "pA", "pB", "pC", "pE"],
            "risk": [0.05, np.nan, 0.12, np.nan, 0.30],
            "completeness": [1.0, 2 / 7, 1.0, 0.0, 1.0],
        }
    )


def _pretrain(store, clinical, seed=0, epoch=0):
    from clef_core.data.datasets import PretrainDataset

    return PretrainDataset(store, clinical, ViewConfig(), NoiseBank(FS, noise_dir=None), seed=seed, epoch=epoch)


def test_pretrain_dataset_one_item_per_patient_with_clinical_join(tiny_store, clinical):
    ds = _pretrain(tiny_store, clinical)
    assert len(ds) == 5 and list(ds.subject_ids) == ["pA", "pB", "pC", "pD", "pE"]
    assert ds.n_without_metadata == 1  # E07500
    by_subject = {}
    for epoch in range(30):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            item = ds[i]
            for key in ("view1", "view2"):
                v = item[key].numpy()
                assert v.shape == (1, 2000) and v.dtype == np.float32 and np.isfinite(v).all()  # 4 s crops
                assert abs(float(v.mean())) < 1e-3 and float(v.std()) == pytest.approx(1.0, abs=1e-3)
            by_subject.setdefault(ds.subject_ids[i], []).append(item)
    risks = {s: {("nan" if math.isnan(it["risk"]) else it["risk"]) for it in items} for s, items in by_subject.items()}
    assert risks["pA"] == {0.05, "nan"}  # both of pA's records get picked over the epochs
    assert risks["pC"] == {"nan"} and risks["pD"] == {"nan"}  # unknown risk stays NaN, never 0
    assert {it["completeness"] for it in by_subject["pD"]} == {0.0}
    assert {it["completeness"] for it in by_subject["pC"]} == {0.0}
    assert {l for it in by_subject["pE"] for l in (it["lead1"], it["lead2"])} <= {1, 6}  # II, V1 only
    same = np.mean([it["lead1"] == it["lead2"] for items in by_subject.values() for it in items])
    assert 0.7 < same < 0.95


def test_pretrain_window_choice_per_epoch(tiny_store, clinical):
    ds = _pretrain(tiny_store, clinical, seed=3)
    patient = list(ds.subject_ids).index("pE")
    rows = []
    for epoch in range(20):
        ds.set_epoch(epoch)
        rows.append(ds[patient]["window"])
    assert len(set(rows)) > 10  # 180 windows of one record: a different one most epochs
    assert set(tiny_store.index.loc[rows, "record_id"]) == {"101"}
    ds.set_epoch(4)
    a, b = ds[patient], ds[patient]
    assert np.array_equal(a["view1"], b["view1"]) and np.array_equal(a["view2"], b["view2"])
    ds.set_epoch(5)
    assert not np.array_equal(a["view1"], ds[patient]["view1"])


def test_pretrain_dataset_rejects_bad_clinical_tables(tiny_store, clinical):
    with pytest.raises(ValueError, match="completeness"):
        _pretrain(tiny_store, clinical.drop(columns=["completeness"]))
    with pytest.raises(ValueError, match="HR06000.*more than once"):
        _pretrain(tiny_store, clinical.iloc[[0, 0]])
    with pytest.raises(ValueError, match="record HR06000"):
        _pretrain(tiny_store, clinical.assign(completeness=[1.5, 0, 0, 0, 0]))


def test_pretrain_dataloader_two_workers_reproducible(tiny_store, clinical):
    import torch
    from torch.utils.data import DataLoader

    def run(workers: int) -> list[dict]:
        ds = _pretrain(tiny_store, clinical, seed=7, epoch=2)
        return list(DataLoader(ds, batch_size=2, num_workers=workers))

    first, second, inline = run(2), run(2), run(0)
    assert len(first) == 3
    for a, b, c in zip(first, second, inline):
        for key in ("view1", "view2", "risk", "completeness", "index"):
            torch.testing.assert_close(a[key], b[key], equal_nan=True, rtol=0, atol=0)
            torch.testing.assert_close(a[key], c[key], equal_nan=True, rtol=0, atol=0)
    risk = torch.cat([b["risk"] for b in first])
    assert torch.isnan(risk[2]) and torch.isnan(risk[3])  # pC (unknown), pD (no metadata)


def test_labelled_windows_from_store(tiny_store):
    import pandas as pd

    from clef_core.data.datasets import LabelledWindows

    labels = pd.DataFrame(  # no row for JS20000
        {"record_id": ["HR06000", "HR06001", "s0010_re", "E07500", "101"], "af": [0, 1, 0, 0, 1], "lvh": [1, 0, np.nan, 0, 0]}
    )
    lead_i = LabelledWindows(tiny_store, labels, ["af", "lvh"], lead="I")
    assert len(lead_i) == 6 and lead_i.n_lead_absent == 180 and lead_i.n_without_label == 1
    x, y = lead_i[0]
    assert x.shape == (1, 5000) and x.dtype.is_floating_point and abs(float(x.std()) - 1) < 1e-3
    X, Y, groups = lead_i.to_numpy()
    assert X.shape == (6, 5000) and Y.shape == (6, 2)
    assert list(groups) == ["pA", "pA", "pB", "pB", "pB", "pD"]
    np.testing.assert_array_equal(Y[:, 0], [0, 1, 0, 0, 0, 0])
    assert np.isnan(Y[2:5, 1]).all()  # an unknown label stays NaN
    np.testing.assert_allclose(X[0], zscore(tiny_store.window(0)[0]), atol=1e-6)

    lead_ii = LabelledWindows(tiny_store, labels, ["af"], lead="MLII", zscore=False)
    assert len(lead_ii) == 186 and lead_ii.n_lead_absent == 0
    row = int(np.flatnonzero(tiny_store.index["record_id"] == "101")[0])
    item = int(np.flatnonzero(lead_ii.record_ids == "101")[0])
    np.testing.assert_array_equal(lead_ii.to_numpy()[0][item], tiny_store.window(row)[1])  # mV, not z-scored
    per_record = LabelledWindows(tiny_store, labels, ["af"], lead="ii", first_window_only=True)
    assert list(per_record.record_ids) == ["HR06000", "HR06001", "s0010_re", "E07500", "101"]
    with pytest.raises(ValueError, match="missing label column"):
        LabelledWindows(tiny_store, labels, ["hcm"])
    with pytest.raises(ValueError, match="lead 'X9'"):
        LabelledWindows(tiny_store, labels, ["af"], lead="X9")


def test_labelled_windows_from_arrays():
    import torch
    from torch.utils.data import DataLoader

    from clef_core.data.datasets import LabelledWindows

    rng = np.random.default_rng(0)
    x = (3 * rng.standard_normal((8, 1, 360)) + 1).astype(np.float32)  # e.g. beat-centred windows
    ds = LabelledWindows.from_arrays(x, np.arange(8) % 2, groups=list("aabbccdd"), label_columns=["V"])
    xb, yb = next(iter(DataLoader(ds, batch_size=8)))
    assert xb.shape == (8, 1, 360) and yb.shape == (8, 1)
    torch.testing.assert_close(xb.mean(-1), torch.zeros(8, 1), atol=1e-5, rtol=0)
    X, y, groups = ds.to_numpy()
    assert X.shape == (8, 360) and list(groups) == list("aabbccdd") and y[:, 0].tolist() == [0, 1] * 4
    with pytest.raises(ValueError, match="does not match"):
        LabelledWindows.from_arrays(x, np.zeros(7))
