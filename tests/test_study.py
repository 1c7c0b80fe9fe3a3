"""clef study: the label-efficiency protocol's parts (splits, subsamples, grid probe, weighted AUROC,
paired bootstrap), the hand-made features, and the whole study end to end at a tiny size."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from clef_core.evaluation.label_efficiency import (fit_logistic_grid, paired_bootstrap, subsample_patients,
                                                   three_way_split, weighted_auroc)
from clef_core.evaluation.metrics import auroc, mean_sd
from clef_core.evaluation.probe import fit_logistic


def test_weighted_auroc_is_the_mann_whitney_statistic():
    rng = np.random.default_rng(0)
    s = np.round(rng.normal(size=200), 1)  # many ties
    y = (rng.random(200) < 0.3).astype(float)
    assert weighted_auroc(s, y)[0] == pytest.approx(auroc(y, s))
    w = rng.integers(0, 4, size=200)
    assert weighted_auroc(s, y, w[None, :])[0] == pytest.approx(auroc(np.repeat(y, w), np.repeat(s, w)))
    assert np.isnan(weighted_auroc(s, np.zeros(200))[0])


def test_grid_probe_matches_the_single_probe():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(120, 6))
    y = np.c_[(x[:, 0] + rng.normal(size=120) > 0), np.zeros(120)].astype(float)
    y[:10, 0] = np.nan
    W, b = fit_logistic_grid(x, y, [1.0, 100.0])
    w_ref, b_ref = fit_logistic(x[10:], y[10:, 0], 100.0)
    assert np.allclose(W[1, 0], w_ref, atol=1e-4) and b[1, 0] == pytest.approx(b_ref, abs=1e-4)
    assert np.abs(W[0, 0]).sum() > np.abs(W[1, 0]).sum()  # weaker L2, larger weights
    assert not W[:, 1].any()  # one class only: a constant score


def test_splits_and_nested_subsamples_respect_patients():
    groups = np.repeat(np.arange(100), 2).astype(str)
    pool, val, test = three_way_split(groups, 0.2, 0.3, seed=0)
    for a, b in ((pool, val), (pool, test), (val, test)):
        assert not set(groups[a]) & set(groups[b])
    assert len(set(groups[test])) == 30 and len(set(groups[val])) == 20
    small = subsample_patients(groups[pool], 0.1, 0, 0, min_patients=3)
    large = subsample_patients(groups[pool], 0.5, 0, 0, min_patients=3)
    assert set(groups[pool][small]) <= set(groups[pool][large])
    assert len(set(groups[pool][small])) == 5
    assert len(set(groups[pool][subsample_patients(groups[pool], 0.01, 0, 0, min_patients=3)])) == 3
    other = subsample_patients(groups[pool], 0.1, 1, 0, min_patients=3)
    assert set(groups[pool][other]) != set(groups[pool][small])


def test_paired_bootstrap():
    rng = np.random.default_rng(2)
    n = 150
    y = (rng.random((n, 2)) < 0.4).astype(float)
    patients = np.arange(n) // 2
    base = [y + rng.normal(0, 1.0, size=(n, 2)) for _ in range(4)]
    same = paired_bootstrap(base, base, y, patients, n_boot=200)
    assert same["diff"] == 0 and same["ci_low"] == 0 and same["ci_high"] == 0
    better = [s + 0.8 * y for s in base]
    res = paired_bootstrap(better, base, y, patients, n_boot=200)
    assert res["diff"] > 0.05 and res["ci_low"] > 0 and res["p_above_0"] == 1.0


def test_handmade_features_find_the_heart_rate():
    from clef_core.data.preprocess import zscore
    from clef_core.evaluation.handmade import N_FEATURES, features
    from clef_core.synth import draw_clinical, make_sites, render

    c = draw_clinical(20, make_sites(1, 0), 0)
    sinus = ~c.records["af"].astype(bool).to_numpy()[:20]
    f = features(zscore(render(c, slice(0, 20), clean=True)[:, 0]), 500.0)
    hr = c.subjects.set_index("subject_id").loc[c.records["subject_id"][:20], "hr"].to_numpy()
    assert f.shape == (20, N_FEATURES) and np.isfinite(f).all()
    assert np.abs(f[sinus, 0] - hr[sinus]).max() < 6  # bpm


def test_study_runs_end_to_end(tmp_path):
    from clef.cli import main

    out = tmp_path / "study"
    args = ["study", "--out", str(out), "--set", "synth.patients=24", "--set", "study.eval_patients=40",
            "--set", 'model.scale="tiny"', "--set", "preprocess.sample_rate=100", "--set", "train.max_steps=2",
            "--set", "train.batch_size=8", "--set", "study.seeds=[0]", "--set", "study.subsamples=2",
            "--set", "study.label_fractions=[0.5,1.0]", "--set", "study.bootstrap=20", "--set", "study.min_patients=4",
            "--set", "study.diagnose_batches=1", "--set", "synth.risk_labels=true", "--set", "synth.risk_signal=1.0",
            "--set", "study.mitdb=true", "--set", "study.mitdb_stride_s=600.0", "--set", "study.finetune_steps=2"]
    assert main(args) == 0
    table = (out / "table.md").read_text()
    for arm in ("untrained", "features", "ntxent", "clef", "clef_repaired", "placebo", "placebo_known", "oracle",
                "clef_signal_off", "ntxent_signal_off", "supervised"):
        assert f"| {arm} |" in table
    assert "| Bayes ceiling (true h) |" in table and "Resolution: 95 % CI half-width" in table
    assert "| mean weight known-known / known-unknown / unknown-unknown |" in table  # the weight diagnostics
    diffs = (out / "differences.md").read_text()
    for row in ("clef - ntxent", "placebo - ntxent", "ntxent - untrained", "clef_repaired - untrained",
                "ntxent - features", "clef_repaired - features", "clef_repaired - placebo_known", "oracle - ntxent",
                "clef_signal_off - ntxent_signal_off"):
        assert f"| {row} |" in diffs
    assert "ntxent - features" not in diffs.split("### Fine-tuned")[1]  # no features arm among the fine-tunes
    rep = pd.read_csv(out / "representation_differences.csv")  # per label and on the representation headline
    assert set(rep["labels"]) == {"representation", *summary_labels(out)} and "high_risk" not in json.loads(
        (out / "summary.json").read_text())["representation_labels"]
    assert set(rep["comparison"]) == {"ntxent - untrained", "clef_repaired - untrained", "ntxent - features",
                                      "clef_repaired - features"}
    assert "## Representation: pretrained vs random init, per label" in diffs.split("### Fine-tuned")[0]
    assert "Representation headline: mean test AUROC over" in table and (out / "representation_table.csv").is_file()
    fine = table.split("## Fine-tuned")[1]  # the fine-tune protocol: every arm with an encoder, its own CIs
    assert "| untrained |" in fine and "| supervised |" in fine and "| features |" not in fine
    assert "| 10 % (4 pts) | 100 % (" in fine and "clef_repaired - placebo" in diffs.split("### Fine-tuned")[1]
    ft = pd.read_csv(out / "finetune.csv")
    assert set(ft["fraction"]) == {0.1, 1.0} and set(ft["subsample"]) == {0, 1} and ft["epoch"].ge(1).all()
    ft_first = (out / "finetune.csv").read_text()
    summary = json.loads((out / "summary.json").read_text())
    assert "cvd_event" in summary["labels"] and summary["diagnostics"]["clef"]["pairs_with_risk"] >= 0
    assert summary["diagnostics"]["oracle"]["risk_known"] == 1.0  # the oracle's batches: h for every record
    assert 0.5 < summary["bayes_ceiling"]["cvd_event"] <= 1
    off = json.loads((out / "data" / "pretrain_signal_off" / "cohort" / ".clef-cohort-complete.json").read_text())
    assert off["synth"]["risk_signal"] == 0.0 and summary["synth"]["risk_signal"] == 1.0  # the negative control's cohort
    assert (out / "label_efficiency.png").stat().st_size > 1000
    from tests.conftest import SHARED_DATA

    if (SHARED_DATA / "mitdb" / "101.hea").is_file():  # the real-data part runs when the data is there
        assert "MIT-BIH DS1 as 10 s window tasks" in table and summary["mitdb_windows"]["records"] == 22
    first = (out / "study.csv").read_text()
    import shutil

    for arm in ("ntxent_s0", "supervised_s0"):  # a cache of before encoder.pt: the encoder is resumed or retrained
        (out / "arms" / arm / "encoder.pt").unlink()
        shutil.rmtree(out / "arms" / arm / "finetune")
    assert main(args) == 0  # resumes from the cached embeddings: the same numbers
    assert (out / "study.csv").read_text() == first
    assert (out / "finetune.csv").read_text() == ft_first  # fine-tunes come from their caches
    assert main(args + ["--set", "train.lr=0.01"]) == 1  # other settings never reuse the cache
    assert main(args + ["--set", "study.finetune_lr=0.01"]) == 1  # nor other fine-tune settings


def summary_labels(out) -> list[str]:
    return json.loads((out / "summary.json").read_text())["labels"]


def test_representation_headline_leaves_out_risk_derived_and_saturated_labels():
    from clef_core.evaluation.study import StudyConfig, label_differences, representation_labels
    from clef_core.evaluation.tasks import TaskData

    study = StudyConfig(label_fractions=(0.5, 1.0), seeds=(0, 1), subsamples=1, bootstrap=50,
                        headline_labels=("cvd_event",))
    labels = ["af", "lvh", "high_risk", "cvd_event"]
    rows = [{"arm": arm, "fraction": f, "label": c, "auroc": auc}
            for arm, aucs in (("untrained", (0.80, 0.7, 0.8, 0.6)), ("ntxent", (0.99, 0.8, 0.8, 0.6)),
                              ("features", (0.99, 0.7, 0.9, 0.6)))
            for f in (0.5, 1.0) for c, auc in zip(labels, aucs)]
    long = pd.DataFrame(rows)
    # af: median over the three arms at 100 % is 0.99 >= 0.97 (saturated, whatever the untrained arm scores);
    # high_risk is computed from the risk score; the headline_labels setting does not narrow it
    assert representation_labels(long, study) == ["lvh", "cvd_event"]
    assert representation_labels(long, StudyConfig(label_fractions=(0.5, 1.0), risk_derived_labels=())) == [
        "lvh", "high_risk", "cvd_event"]
    rng = np.random.default_rng(5)
    n = 80
    y = (rng.random((n, 4)) < 0.4).astype(float)
    task = TaskData("t", "binary", labels, np.zeros((n, 4)), y, np.arange(n).astype(str), "I")
    test = np.arange(n)
    scores = {("ntxent", s, f, 0): y * 2 + rng.normal(size=(n, 4)) for s in (0, 1) for f in (0.5, 1.0)}
    scores.update({("untrained", s, f, 0): rng.normal(size=(n, 4)) for s in (0, 1) for f in (0.5, 1.0)})
    diffs = label_differences(scores, task, test, ["lvh", "cvd_event"], study)
    assert set(diffs["comparison"]) == {"ntxent - untrained"}  # comparisons without both arms are skipped
    assert list(diffs["labels"].drop_duplicates()) == ["representation", *labels] and len(diffs) == 2 * 5
    by = diffs.set_index(["labels", "fraction"])
    assert (diffs["ci_low"] > 0).all()  # an informative arm against noise: every CI above 0
    single = [by.at[(c, 1.0), "diff"] for c in ("lvh", "cvd_event")]
    assert by.at[("representation", 1.0), "diff"] == pytest.approx(np.mean(single))  # the headline is the label mean


def test_oracle_site_reads_the_hidden_factor(tmp_path, tiny_site):
    from clef_core.evaluation.label_efficiency import weighted_auroc
    from clef_core.experiment import load_experiment
    from clef_core.evaluation.study_truth import bayes_ceiling, oracle_site
    from clef_core.evaluation.tasks import synthetic_task
    from clef_core.prepared_site import default_cohort, prepare_site
    from clef_core.synth.risk_link import event_probability

    cfg = load_experiment(overrides=["synth.patients=30", "synth.risk_labels=true", "synth.risk_signal=1.0",
                                     "preprocess.sample_rate=100"])
    site = prepare_site(default_cohort(tmp_path, cfg), tmp_path, cfg, progress=False)
    truth = pd.read_csv(site.root / "truth.csv", dtype={"subject_id": str}).set_index("subject_id")
    oracle = oracle_site(site)
    expected = truth.loc[oracle.clinical["subject_id"].astype(str), "risk_factor"].to_numpy()
    assert np.array_equal(oracle.clinical["risk"].to_numpy(), expected) and (oracle.clinical["completeness"] == 1).all()
    assert site.clinical["risk"].isna().any() and not np.array_equal(site.clinical["risk"], oracle.clinical["risk"])
    task = synthetic_task(site, "I")
    rows = np.arange(len(task))
    ceiling = bayes_ceiling(site.root, task, rows)
    y = task.y[:, task.labels.index("cvd_event")]
    p = event_probability(truth.loc[task.groups, "risk_factor"].to_numpy())
    assert ceiling["cvd_event"] == pytest.approx(weighted_auroc(p, y)[0]) and set(ceiling) == {"cvd_event"}
    with pytest.raises(ValueError, match="risk_factor"):  # the default cohort has no hidden factor
        oracle_site(tiny_site)
    assert bayes_ceiling(tiny_site.root, synthetic_task(tiny_site, "I"), np.arange(3)) == {}


def test_features_pair_with_every_seed_and_headline_labels_are_checked():
    from clef_core.evaluation.study import StudyConfig, paired_differences, split_saturated_labels
    from clef_core.evaluation.tasks import TaskData

    rng = np.random.default_rng(3)
    n = 60
    y = (rng.random((n, 2)) < 0.4).astype(float)
    task = TaskData("t", "binary", ["a", "b"], np.zeros((n, 4)), y, np.arange(n).astype(str), "I")
    study = StudyConfig(seeds=(0, 1, 2), label_fractions=(1.0,), subsamples=1, bootstrap=20)
    test = np.arange(n)
    scores = {("features", 0, 1.0, 0): y + rng.normal(size=(n, 2))}
    scores.update({("ntxent", s, 1.0, 0): y + rng.normal(size=(n, 2)) for s in (0, 1, 2)})
    diffs = paired_differences(scores, task, test, ["a"], y[:, :1], study, (("ntxent", "features"),))
    assert diffs["units"].tolist() == [3]  # the features arm's one unit pairs with all three seeds
    long = pd.DataFrame({"arm": ["ntxent"] * 2, "fraction": [1.0] * 2, "label": ["a", "b"], "auroc": [0.99, 0.6]})
    assert split_saturated_labels(long, study) == (["b"], ["a"])
    assert split_saturated_labels(long, StudyConfig(headline_labels=("a",), label_fractions=(1.0,))) == (["a"], ["a"])


def test_bad_study_settings_are_named():
    from clef_core.evaluation.study import StudyConfig

    with pytest.raises(ValueError, match="study.arms"):
        StudyConfig(arms=("clef", "byol"))
    with pytest.raises(ValueError, match="label_fractions"):
        StudyConfig(label_fractions=(0.0, 1.0))
    with pytest.raises(ValueError, match="finetune_fractions"):
        StudyConfig(finetune_fractions=(0.1, 2.0))
    with pytest.raises(ValueError, match="study.workers"):
        StudyConfig(workers=0)
    with pytest.raises(ValueError, match="study.finetune_arms"):
        StudyConfig(finetune_arms=("features",))
    from clef_core.evaluation.study import finetune_arms

    assert finetune_arms(StudyConfig()) == tuple(a for a in StudyConfig().arms if a != "features")
    assert finetune_arms(StudyConfig(finetune_arms=("clef_repaired", "ntxent"))) == ("ntxent", "clef_repaired")
    assert finetune_arms(StudyConfig(finetune_fractions=())) == ()


@pytest.mark.parametrize("name", ["study-cpu", "study-gpu"])
def test_study_configs_are_valid(name):
    from clef_core.config import load_config
    from clef_core.evaluation.study import StudyConfig
    from clef_core.synth import SynthConfig
    from clef_core.train import LossConfig, TrainConfig

    cfg = load_config(name)
    StudyConfig(**cfg["study"])
    SynthConfig(**cfg["synth"])
    TrainConfig(**cfg["train"])
    LossConfig(**cfg["loss"])
    assert cfg["synth"]["risk_signal"] > 0 and cfg["synth"]["risk_labels"]


def test_rhythm_share_follows_rhythm_annotations():
    from clef_core.data.records import Annotations
    from clef_core.evaluation.mitdb import rhythm_share

    ann = Annotations(record="x", fs=100.0, sample=np.array([20, 100, 300, 400]), symbol=["+", "N", "+", "+"],
                      aux_note=["(N", "", "(AFIB", "(N"])
    share = rhythm_share(ann.rhythm_changes, 1000, np.array([0, 250, 300, 350, 450]), 100)
    assert share == pytest.approx([0.0, 0.5, 1.0, 0.5, 0.0])
    # the first rhythm holds from the record's start, a rhythm still running at the end holds to it,
    # and a window past the end counts the missing part as outside
    assert rhythm_share([(60, "AFIB")], 1000, np.array([0, 450, 900, 950]), 100) == pytest.approx([1.0, 1.0, 1.0, 0.5])
    assert rhythm_share([], 50, np.array([0]), 10) == pytest.approx([0.0])


def test_mitdb_window_labels_on_real_records(shared_data):
    from clef_core.data.preprocess import PreprocessConfig
    from clef_core.data.records import read_annotations
    from clef_core.evaluation.mitdb import aami_class
    from clef_core.evaluation.mitdb_windows import WINDOW_LABELS, load_windows, record_cv_auroc

    cfg = PreprocessConfig(sample_rate=100)
    x, y, g = load_windows([shared_data / "mitdb" / "203", shared_data / "mitdb" / "101"], cfg, stride_s=60.0)
    assert x.shape[1] == 1000 and y.shape == (len(x), len(WINDOW_LABELS)) and set(g) == {"203", "101"}
    assert y[g == "203", 2].mean() > 0.5 and y[g == "101", 2].sum() == 0  # 203 is mostly AF, 101 never
    ann = read_annotations(shared_data / "mitdb" / "101")
    v_samples = ann.sample[[aami_class(s) == "V" for s in ann.symbol]]
    starts = np.arange((g == "101").sum()) * 60 * 360
    expected = [((v_samples >= s) & (v_samples < s + 3600)).any() for s in starts]
    assert np.array_equal(y[g == "101", 0].astype(bool), expected)
    res = record_cv_auroc(np.c_[y[:, 2], np.random.default_rng(0).normal(size=len(y))], y, g, l2=1.0, folds=2)
    assert np.isnan(res["af"])  # AF positives in one record only: no record split can fit and score it


def test_a_study_without_paired_arms_still_reports(tmp_path):
    from clef.cli import main

    out = tmp_path / "study"
    args = ["study", "--out", str(out), "--set", "synth.patients=24", "--set", "study.eval_patients=40",
            "--set", 'model.scale="tiny"', "--set", "preprocess.sample_rate=100", "--set", "study.seeds=[0]",
            "--set", "study.subsamples=1", "--set", "study.label_fractions=[1.0]", "--set", "study.min_patients=4",
            "--set", "study.diagnose_batches=1", "--set", 'study.arms=["untrained","features"]',
            "--set", "study.finetune_fractions=[]", "--set", "train.batch_size=8"]
    assert main(args) == 0  # no comparison to bootstrap, no fine-tune: the tables are still written
    assert "| features |" in (out / "table.md").read_text() and not (out / "finetune.csv").exists()
    assert (out / "differences.csv").read_text().startswith("comparison,fraction,diff")


def test_mean_sd_is_the_table_cell_of_every_mean_over_units_table():
    assert mean_sd(pd.Series([0.5, 0.7])) == "0.600 ± 0.141"
    assert mean_sd(pd.Series([0.8123])) == "0.812 ± 0.000"  # one unit: no spread, not NaN
