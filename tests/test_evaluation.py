"""Evaluation: metrics, probes, grouped splits, MIT-BIH beat windows, evidence, sweeps, CLI."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from clef_core.evaluation.evidence import distance_risk_spearman, pca_2d, similarity_by_risk_bins
from clef_core.evaluation.metrics import (
    auroc,
    auroc_chance_halfwidth,
    auroc_ci95_halfwidth,
    macro_auroc_ovr,
    r2,
    sensitivity_ppv,
    spearman,
)
from clef_core.evaluation.mitdb import AAMI_CLASSES, aami_class, beat_windows, load_beats, resolve_records
from clef_core.evaluation.probe import fit_probe
from clef_core.evaluation.protocol import oof_decisions, score
from clef_core.evaluation.splits import group_folds, group_split
from clef_core.evaluation.sweep import grid_points, parse_grid, point_name, run_sweep
from clef_core.data.preprocess import PreprocessConfig


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


# ----------------------------------------------------------------------------- metrics


def test_auroc_hand_example_with_ties():
    # positives 0.35, 0.8, 0.4 against negatives 0.1, 0.4, 0.4:
    # 0.35 beats 1; 0.8 beats 3; 0.4 beats 1 and ties 2 (1/2 each) -> (1 + 3 + 2) / 9
    y = np.array([0, 0, 1, 1, 0, 1])
    s = np.array([0.1, 0.4, 0.35, 0.8, 0.4, 0.4])
    assert auroc(y, s) == pytest.approx(6 / 9)
    assert auroc([0, 0, 1, 1], [1, 2, 3, 4]) == 1.0
    assert auroc([0, 0, 1, 1], [4, 3, 2, 1]) == 0.0
    assert auroc([0, 1, 0, 1], [5, 5, 5, 5]) == 0.5
    assert math.isnan(auroc([1, 1], [0.1, 0.2]))
    with pytest.raises(ValueError, match="NaN"):
        auroc([0, 1], [0.1, np.nan])


def test_auroc_intervals_match_simulation():
    """The chance half-width (Mann-Whitney null variance) and the Hanley-McNeil CI against 4000
    simulated draws: no-signal scores, and binormal scores with a true AUROC of about 0.8."""
    rng = np.random.default_rng(0)
    y = np.r_[np.ones(6), np.zeros(19)]
    null = np.array([auroc(y, rng.normal(size=25)) for _ in range(4000)])
    spread = (np.quantile(null, 0.975) - np.quantile(null, 0.025)) / 2
    assert auroc_chance_halfwidth(6, 19) == pytest.approx(spread, rel=0.1)
    assert auroc_chance_halfwidth(6, 19) > 0.1 > auroc_chance_halfwidth(150, 300)  # 25 records say little
    shift = 1.19  # binormal: AUROC = Phi(shift / sqrt(2)) = 0.8
    y = np.r_[np.ones(40), np.zeros(60)]
    draws = np.array([auroc(y, np.r_[rng.normal(shift, size=40), rng.normal(size=60)]) for _ in range(4000)])
    assert auroc_ci95_halfwidth(0.8, 40, 60) == pytest.approx(1.96 * draws.std(), rel=0.15)
    assert math.isnan(auroc_ci95_halfwidth(0.8, 0, 60)) and math.isnan(auroc_chance_halfwidth(3, 0))


def test_small_tasks_are_flagged_and_large_ones_are_not():
    from clef_core.evaluation.run import flag_small_task

    rng = np.random.default_rng(1)
    for n, flagged in ((25, True), (600, False)):
        y = (rng.random((n, 2)) < 0.3).astype(float)
        metrics = score("binary", ["a", "b"], y, rng.normal(size=(n, 2)), min_per_class=3)
        flag_small_task("binary", metrics, 0.1)
        assert ("too_small" in metrics) == flagged and metrics["chance_95"] > 0 and metrics["ci_95"] > 0
    metrics = {"mean_mae": 1.0, "labels": {}}
    flag_small_task("regression", metrics, 0.1)
    assert metrics == {"mean_mae": 1.0, "labels": {}}


def test_multiclass_metrics_and_regression():
    y = np.array([0, 0, 1, 1, 2, 2])
    pred = np.array([0, 1, 1, 1, 2, 0])
    per = sensitivity_ppv(y, pred, ["N", "S", "V"])
    assert per["N"] == {"sensitivity": 0.5, "ppv": 0.5, "n_true": 2, "n_pred": 2}
    assert per["S"]["sensitivity"] == 1.0 and per["S"]["ppv"] == pytest.approx(2 / 3)
    macro, classes = macro_auroc_ovr(y, np.eye(3)[y])
    assert macro == 1.0 and classes == [1.0, 1.0, 1.0]
    assert r2([1, 2, 3], [1, 2, 3]) == 1.0 and r2([1, 2, 3], [2, 2, 2]) == 0.0
    assert spearman([1, 2, 3, 4], [10, 20, 30, 100]) == pytest.approx(1.0)


# ----------------------------------------------------------------------------- splits and probes


def test_group_split_and_folds_keep_subjects_apart():
    rng = np.random.default_rng(0)
    groups = rng.integers(0, 40, 300).astype(str)
    y = (rng.random(300) < 0.2).astype(float)
    train, test = group_split(groups, 0.3, seed=1, y=y)
    assert len(train) + len(test) == 300
    assert not set(groups[train]) & set(groups[test])
    folds = group_folds(groups, 5, seed=2, y=y)
    assert sorted(np.concatenate(folds).tolist()) == list(range(300))
    for a in range(len(folds)):
        for b in range(a + 1, len(folds)):
            assert not set(groups[folds[a]]) & set(groups[folds[b]])


def test_probe_separable_near_one_and_random_labels_near_half():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 16))
    groups = np.repeat(np.arange(200), 2)
    separable = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(float)[:, None]
    random = (rng.random(400) < 0.5).astype(float)[:, None]
    for y, lo, hi in ((separable, 0.97, 1.0), (random, 0.38, 0.62)):
        dec = oof_decisions(x, y, "binary", ["y"], groups, folds=5, seed=0, l2=1.0)
        value = score("binary", ["y"], y, dec)["mean_auroc"]
        assert lo <= value <= hi, value


def test_probe_folds_into_one_linear_layer():
    rng = np.random.default_rng(1)
    x = rng.normal(3.0, 5.0, size=(120, 8))
    for kind, y in (("binary", (x[:, :2] > 3).astype(float)), ("regression", x[:, :1] * 2 + 7),
                    ("multiclass", (x[:, 0] > 3).astype(int) + (x[:, 1] > 3).astype(int))):
        labels = ["a", "b", "c"][: (3 if kind == "multiclass" else y.shape[1])]
        probe = fit_probe(x, y, kind, labels, l2=1.0, class_weight="balanced" if kind == "multiclass" else None)
        lin = probe.to_linear()
        with torch.no_grad():
            folded = lin(torch.as_tensor(x, dtype=torch.float32)).double().numpy()
        np.testing.assert_allclose(folded, probe.decision(x), rtol=1e-4, atol=1e-3)
    assert np.abs(probe.decision(x).argmax(1) - y).mean() < 0.2


# ----------------------------------------------------------------------------- MIT-BIH


def test_aami_mapping():
    assert AAMI_CLASSES == ("N", "S", "V", "F")
    assert [aami_class(s) for s in "NLRej"] == ["N"] * 5
    assert [aami_class(s) for s in "AaJS"] == ["S"] * 4
    assert [aami_class(s) for s in "VE"] == ["V", "V"] and aami_class("F") == "F"
    assert [aami_class(s) for s in "/fQ"] == ["Q"] * 3
    assert aami_class("+") is None and aami_class("~") is None and aami_class("|") is None


def test_beat_window_is_centred_on_the_annotation_after_resampling():
    fs, cfg = 360.0, PreprocessConfig()
    t = np.arange(int(60 * fs))
    beats = np.array([2000, 7301, 12345, 16011])  # at 360 Hz
    signal = sum(np.exp(-0.5 * ((t - s) / 3.0) ** 2) for s in beats)
    edge = np.array([100, len(t) - 50])  # windows that would leave the record
    windows, keep = beat_windows(signal, fs, np.r_[beats, edge], cfg)
    assert keep.tolist() == [True] * 4 + [False, False]
    assert windows.shape == (4, cfg.window_samples)
    peaks = np.abs(windows).argmax(axis=1)
    assert np.all(np.abs(peaks - cfg.window_samples // 2) <= 1), peaks


def test_mitdb_real_record_beats(shared_data):
    paths = resolve_records("DS1", shared_data / "mitdb")
    assert len(paths) == 22
    beats = load_beats(paths[:1], PreprocessConfig(), "II", beats_per_class=5, seed=0)  # record 101
    assert beats.x.shape[1] == 5000 and set(beats.records) == {"101"}
    counts = beats.counts["101"]
    assert counts["used"]["N"] == 5 and sum(counts["used"].values()) == len(beats.y)
    # MIT-BIH marks normal beats at the R peak: within +-0.3 s of the window centre (less than one
    # RR interval) the largest deflection is the centre itself, to a few ms
    centre = np.abs(beats.x[beats.y == 0, 2500 - 150 : 2500 + 150]).argmax(axis=1) - 150
    assert np.all(np.abs(centre) <= 3), centre
    with pytest.raises(FileNotFoundError, match="999"):
        resolve_records("101,999", shared_data / "mitdb")


# ----------------------------------------------------------------------------- evidence


def test_distance_risk_spearman_sign():
    rng = np.random.default_rng(0)
    risk = rng.uniform(0.0, 0.3, 60)
    theta = risk / 0.3 * (np.pi / 2)  # cosine distance 1 - cos(dtheta) grows with |risk difference|
    emb = np.stack([np.cos(theta), np.sin(theta)], axis=1)
    res = distance_risk_spearman(emb, risk, permutations=19)
    assert res["rho"] == pytest.approx(1.0) and res["p_mantel"] == pytest.approx(1 / 20)
    reversed_ = np.stack([np.cos(np.pi / 2 - theta), np.sin(np.pi / 2 - theta)], axis=1)
    assert distance_risk_spearman(reversed_, risk, permutations=0)["rho"] == pytest.approx(1.0)
    noise = rng.normal(size=(60, 8))
    assert abs(distance_risk_spearman(noise, risk, permutations=0)["rho"]) < 0.2
    risk_nan = risk.copy()
    risk_nan[:10] = np.nan
    assert distance_risk_spearman(emb, risk_nan, permutations=0)["n_patients"] == 50
    bins = similarity_by_risk_bins(emb, risk, bins=4)
    assert [b["mean_similarity"] for b in bins] == sorted((b["mean_similarity"] for b in bins), reverse=True)
    coords, explained = pca_2d(emb)
    assert coords.shape == (60, 2) and sum(explained) == pytest.approx(1.0)


# ----------------------------------------------------------------------------- sweeps


def test_sweep_grid_and_resume(tmp_path, tiny_config):
    grid = parse_grid(["loss.alpha=0.1,0.5", "loss.tau=0.07"])
    assert grid_points(grid) == [{"loss.alpha": 0.1, "loss.tau": 0.07}, {"loss.alpha": 0.5, "loss.tau": 0.07}]
    assert point_name(grid_points(grid)[0]) == "alpha=0.1,tau=0.07"
    calls = []

    def evaluate_point(cfg, folder):
        calls.append(cfg["loss"]["alpha"])
        return {"mean_auroc": cfg["loss"]["alpha"]}

    table = run_sweep(tiny_config, grid, tmp_path, evaluate_point)
    assert calls == [0.1, 0.5] and table["mean_auroc"].tolist() == [0.1, 0.5]
    run_sweep(tiny_config, grid, tmp_path, evaluate_point)
    assert calls == [0.1, 0.5]  # finished points are skipped
    assert (tmp_path / "sweep.md").read_text().count("\n| 0.") == 2
    from clef_core.config import ConfigError

    with pytest.raises(ConfigError, match="loss.nope"):
        run_sweep(tiny_config, parse_grid(["loss.nope=1"]), tmp_path / "bad", evaluate_point)


# ----------------------------------------------------------------------------- CLI end to end


def _evaluate(*argv: str) -> int:
    from clef.cli import main

    return main(["evaluate", *argv])


def test_cli_synthetic_and_evidence(tmp_path, tiny_checkpoint, tiny_site, capsys):
    from clef_core.checkpoint import load_model

    out = tmp_path / "eval"
    code = _evaluate(str(tiny_checkpoint), "--task", "synthetic,evidence", "--cohort", str(tiny_site.root),
                     "--out", str(out), "--quiet", "--set", "evaluate.evidence_permutations=9",
                     "--set", "evaluate.min_per_class=3", "--set", "evaluate.folds=3")
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    task = results["tasks"]["synthetic_I"]
    assert 0.0 <= task["metrics"]["mean_auroc"] <= 1.0
    assert "grouped" in task["metrics"]["protocol"]
    ev = results["evidence"]["I"]
    assert set(ev["spearman"]) == {"clinical", "truth"} and "age" in ev["leakage"] and "sex" in ev["leakage"]
    for png in ("embedding_map_I.png", "similarity_vs_risk_I.png", "tasks.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    baseline = results["baseline"]
    assert "random weights" in baseline["what"] and 0.0 <= baseline["tasks"]["synthetic_I"]["metrics"]["mean_auroc"] <= 1
    assert set(baseline["evidence"]["I"]["spearman"]) == {"clinical", "truth"}
    assert task["metrics"]["chance_95"] > 0.1 and "too few examples" in task["metrics"]["too_small"]  # 30 patients
    for row in ev["similarity_by_risk_bin"]["truth"]:
        assert -1 <= row["q25_similarity"] <= row["median_similarity"] <= row["q75_similarity"] <= 1
    printed = capsys.readouterr()
    assert "untrained" in printed.out and "TOO SMALL TO MEAN MUCH" in printed.out
    listed = printed.out.split("outputs:")[1]
    for name in ("results.json", "model.pt", "embedding_map_I.png", "similarity_vs_risk_I.png", "tasks.png"):
        assert str(out / name) in listed
    model = load_model(out / "model.pt")  # a copy with the head; the original is untouched
    head = model.heads["synthetic_I"]
    assert head.labels == task["head_labels"] and head.meta["activation"] == "sigmoid"
    ops = head.meta["operating_points"]  # a threshold per label at the stated sensitivity, chosen out-of-fold
    assert set(ops) == set(head.labels) and all(op["target_sensitivity"] == 0.9 for op in ops.values())
    assert all(0 <= op["sensitivity"] <= 1 and 0 <= op["probability_threshold"] <= 1 for op in ops.values())
    assert load_model(tiny_checkpoint).heads == {}
    # the saved head reproduces the probe: outputs on embeddings are finite and have one column per label
    with torch.no_grad():
        z = model.encoder(torch.randn(2, 1, 5000))
        assert head.module(z).shape == (2, len(head.labels))


def test_cli_finetune_writes_a_loadable_model(tmp_path, tiny_checkpoint, tiny_site):
    from clef_core.checkpoint import load_model

    out = tmp_path / "ft"
    code = _evaluate(str(tiny_checkpoint), "--task", "synthetic", "--mode", "finetune", "--cohort", str(tiny_site.root),
                     "--out", str(out), "--quiet", "--lead", "II", "--set", "evaluate.finetune_epochs=1",
                     "--set", "evaluate.min_per_class=3")
    assert code == 0
    model = load_model(out / "finetuned_synthetic_II.pt")
    assert model.heads["synthetic_II"].meta["mode"] == "finetune" and model.provenance["kind"] == "finetune"


def test_a_program_evaluates_a_checkpoint_without_the_cli(tmp_path, tiny_checkpoint, tiny_site, tiny_config):
    """clef_core.evaluation.checkpoint_tasks is the whole of `clef evaluate` but the printing: typed
    options in, results and the files written out, one error type for what the user must fix."""
    from clef.commands import evaluate as cli
    from clef_core.evaluation.checkpoint_tasks import (
        HEAD_STORES,
        TASKS,
        EvaluationError,
        EvaluationOptions,
        evaluate_checkpoint,
        parse_tasks,
    )
    from clef_core.evaluation.run import EvalSettings

    assert (cli.TASKS, cli.HEAD_STORES) == (TASKS, HEAD_STORES)  # the CLI's help lists the library's names
    settings = EvalSettings(**{**tiny_config["evaluate"], "lead": "II", "min_per_class": 3, "folds": 3})
    said: list[str] = []
    options = EvaluationOptions(out=tmp_path / "o", cohort=tiny_site.root, heads="none", baseline=False, quiet=True)
    evaluation = evaluate_checkpoint(tiny_checkpoint, tiny_config, settings, parse_tasks("synthetic"), options,
                                     say=said.append)
    results = evaluation.results
    assert set(results["tasks"]) == {"synthetic_II"} and "baseline" not in results and results["heads_saved_in"] is None
    assert 0.0 <= results["tasks"]["synthetic_II"]["metrics"]["mean_auroc"] <= 1.0
    assert evaluation.outputs == [("figure", tmp_path / "o" / "tasks.png")] and not (tmp_path / "o" / "model.pt").exists()
    assert any("synthetic_II: mean AUROC" in line for line in said)
    with pytest.raises(EvaluationError, match="--data: folder not found"):
        evaluate_checkpoint(tiny_checkpoint, tiny_config, settings, ["mitdb"],
                            dataclasses.replace(options, data=tmp_path / "absent"))
    with pytest.raises(EvaluationError, match="not_a_model"):
        evaluate_checkpoint(tmp_path / "not_a_model.pt", tiny_config, settings, ["synthetic"], options)
    with pytest.raises(ValueError, match="unknown task"):
        parse_tasks("synthetic,nope")
    with pytest.raises(ValueError, match="heads = 'elsewhere'"):
        EvaluationOptions(out=tmp_path, heads="elsewhere")


def test_cli_bad_checkpoint_is_one_line_error(tmp_path, capsys):
    bad = tmp_path / "not_a_model.pt"
    bad.write_text("hello")
    assert _evaluate(str(bad), "--task", "synthetic", "--out", str(tmp_path / "o")) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("clef evaluate:") and "not_a_model.pt" in err and len(err.splitlines()) == 1


def test_supervised_control_reads_each_windows_record_labels(tiny_site, tiny_config):
    import copy

    from clef_core.evaluation.supervised import record_labels, train_supervised

    y = record_labels(tiny_site, ["af", "lvh"])
    table = tiny_site.labels.set_index("study_id")
    for row in (0, len(y) - 1):
        record = str(tiny_site.store.index["record_id"].iloc[row])
        np.testing.assert_array_equal(y[row], table.loc[record, ["af", "lvh"]].to_numpy(dtype=np.float32))
    cfg = copy.deepcopy(tiny_config)
    cfg["train"]["max_steps"] = 1
    encoder, info = train_supervised(cfg, tiny_site, ["af", "lvh", "high_risk"])
    assert info["steps"] == 1 and info["examples"] == cfg["train"]["batch_size"] and not encoder.training
