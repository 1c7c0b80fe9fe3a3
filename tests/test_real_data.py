"""Real records: pretraining on several folders as one cohort (clef pretrain --cohort DIR DIR ...), and
clef evaluate's MIT-BIH tasks on any MIT-BIH-format folder (--data) scored on another (--test-data / --test)."""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from bench_loader import load_benchmark

SMALL = ("preprocess.sample_rate=100", 'model.scale="tiny"', "train.batch_size=8", "train.epochs=2",
         "train.max_steps=2", 'loss.kind="ntxent"')


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def link(src_dir: Path, names: list[str], dst: Path, exts: tuple[str, ...] = ("hea", "dat", "atr")) -> Path:
    """``dst`` holding symbolic links to the records ``names`` of ``src_dir`` (the files that exist)."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in names:
        for ext in exts:
            if (src_dir / f"{name}.{ext}").is_file():
                (dst / f"{name}.{ext}").symlink_to(src_dir / f"{name}.{ext}")
    return dst


@pytest.fixture(scope="module")
def folders(tmp_path_factory, shared_data) -> dict[str, Path]:
    """Small real folders: two MIT-BIH records, three twelve-lead records, and a second folder named
    ``ecg`` (one record) elsewhere."""
    root = tmp_path_factory.mktemp("real")
    return {"mitdb": link(shared_data / "mitdb", ["101", "203"], root / "mitdb"),
            "ecg": link(shared_data / "ecg", ["E07500", "HR06000", "JS20000"], root / "ecg", ("hea", "mat")),
            "ecg2": link(shared_data / "ecg", ["E07501"], root / "other" / "ecg", ("hea", "mat"))}


@pytest.fixture(scope="module")
def small_config():
    from clef_core.experiment import load_experiment

    return load_experiment(overrides=SMALL)


# ----------------------------------------------------------------------------- several folders, one cohort


def test_several_folders_are_one_cohort_with_prefixed_ids(folders, small_config, tmp_path):
    from clef_core.multi_cohort import prepare_folders
    from clef_core.task import make_dataset

    dirs = [folders["mitdb"], folders["ecg"], folders["ecg2"]]
    site = prepare_folders(dirs, tmp_path / "work", small_config, progress=False)
    index = site.store.index
    records = {"mitdb/101", "mitdb/203", "ecg/E07500", "ecg/HR06000", "ecg/JS20000", "ecg-2/E07501"}
    assert set(index["record_id"]) == records and set(index["subject_id"]) == records  # one patient per record
    per_record = index.groupby("record_id").size()
    assert per_record["mitdb/101"] == 180 and per_record["ecg/E07500"] == 1  # 30 min vs 10 s
    clinical = site.clinical.set_index("record_id")
    assert set(clinical.index) == records
    # age and sex only (MIT-BIH "# 75 F ...", twelve-lead "# Age: 78"): SCORE2 unknown by the missing-metadata policy
    assert clinical.at["mitdb/101", "age"] == 75 and clinical.at["ecg/E07500", "age"] == 78
    assert clinical["risk"].isna().all()
    assert site.summary()["risk_known"] == 0.0
    dataset = make_dataset(small_config.views, site, seed=0)
    assert len(dataset) == 6 and dataset.n_without_metadata == 0
    item = dataset[0]
    assert item["view1"].shape[0] == 1 and item["view1"].shape == item["view2"].shape and math.isnan(item["risk"])
    again = prepare_folders(dirs, tmp_path / "work", small_config, progress=False)
    assert again.build_report.cached
    fewer = prepare_folders(dirs[:2], tmp_path / "work", small_config, progress=False)  # another folder list: rebuilt
    assert not fewer.build_report.cached and set(fewer.store.index["record_id"]) == records - {"ecg-2/E07501"}


def test_bad_folder_lists_are_errors_naming_the_folder(folders, small_config, tmp_path):
    from clef_core.multi_cohort import prepare_folders

    with pytest.raises(ValueError, match="given twice"):
        prepare_folders([folders["mitdb"], folders["mitdb"]], tmp_path / "w", small_config, progress=False)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        prepare_folders([folders["mitdb"], tmp_path / "nowhere"], tmp_path / "w", small_config, progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty"):
        prepare_folders([folders["mitdb"], tmp_path / "empty"], tmp_path / "w", small_config, progress=False)


@pytest.fixture(scope="module")
def pretrained(folders, tmp_path_factory) -> tuple[Path, str]:
    """``clef pretrain --cohort`` on two real folders (2 steps of the tiny encoder at 100 Hz): the model
    file and what the command printed."""
    from clef.cli import main

    out = tmp_path_factory.mktemp("pretrain") / "run"
    argv = ["pretrain", "--cohort", str(folders["mitdb"]), str(folders["ecg"]), "--out", str(out), "--quiet"]
    for s in SMALL:
        argv += ["--set", s]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(argv) == 0
    return out / "final_model.pt", printed.getvalue()


@pytest.fixture(scope="module")
def real_checkpoint(pretrained) -> Path:
    return pretrained[0]


def test_cli_pretrain_on_several_folders(pretrained, folders):
    from clef_core.checkpoint import load_model

    path, printed = pretrained
    model = load_model(path)
    assert model.preprocess["sample_rate"] == 100 and model.provenance["kind"] == "central-pretrain"
    metrics = [json.loads(line) for line in (path.parent / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["step"] == 2
    assert f"cohort       {folders['mitdb']}, {folders['ecg']} (wfdb)" in printed
    assert "records      5 used, 0 skipped" in printed and "patients     5, risk known for 0 %" in printed


# ----------------------------------------------------------------------------- MIT-BIH-format folders


def test_annotated_records_and_folders_as_record_lists(shared_data, tmp_path):
    from clef_core.evaluation.mitdb import annotated_records, check_disjoint, resolve_records

    folder = link(shared_data / "mitdb", ["106", "101"], tmp_path / "db")
    link(shared_data / "ecg", ["E07500"], folder, ("hea", "mat"))  # a record without annotations
    assert [p.name for p in annotated_records(folder)] == ["101", "106"]
    assert resolve_records(str(folder), tmp_path) == annotated_records(folder)
    assert [p.name for p in resolve_records("106", folder)] == ["106"]
    (tmp_path / "none").mkdir()
    with pytest.raises(FileNotFoundError, match="none"):
        resolve_records(str(tmp_path / "none"), tmp_path)
    with pytest.raises(ValueError, match="101"):
        check_disjoint(annotated_records(folder), [shared_data / "mitdb" / "101"])


def test_record_cv_scores_subsamples_are_paired_and_cover_every_window():
    from clef_core.evaluation.mitdb_windows import fit_and_score, record_cv_auroc, record_cv_scores

    rng = np.random.default_rng(0)
    groups = np.repeat([f"r{i}" for i in range(10)], 30)
    y = (rng.random((300, 3)) < 0.3).astype(np.float64)
    signal = np.c_[y[:, 0] * 2 + rng.normal(size=300), rng.normal(size=(300, 4))]
    full = record_cv_scores(signal, y, groups, l2=1.0, folds=5)
    assert np.isfinite(full).all() and full.shape == (300, 3)
    assert record_cv_auroc(signal, y, groups, l2=1.0, folds=5)["any_pvc"] > 0.8
    part = record_cv_scores(signal, y, groups, 1.0, 5, 0, fraction=0.2, subsample=1)
    np.testing.assert_array_equal(part, record_cv_scores(signal, y, groups, 1.0, 5, 0, fraction=0.2, subsample=1))
    assert not np.allclose(part, full) and not np.allclose(part, record_cv_scores(signal, y, groups, 1.0, 5, 0, 0.2, 2))
    # the same draw of labelled windows for two encoders: a shifted copy of the features scores identically
    np.testing.assert_allclose(record_cv_scores(signal + 5.0, y, groups, 1.0, 5, 0, 0.2, 1), part, atol=1e-6)
    with pytest.raises(ValueError, match="fraction"):
        record_cv_scores(signal, y, groups, 1.0, fraction=0.0)
    assert fit_and_score(signal[:150], y[:150], signal[150:], 1.0).shape == (150, 3)


def test_select_l2_picks_from_the_grid_by_inner_record_cv_and_falls_back():
    from clef_core.evaluation.mitdb_windows import fit_and_score, record_cv_scores, select_l2

    grid = [1.0, 10.0, 100.0, 1000.0, 10000.0]
    rng = np.random.default_rng(0)
    # a suppressor pair: x1 - x2 recovers the signal only with weights a strong L2 would shrink
    z, nuisance = rng.normal(size=400), 3 * rng.normal(size=400)
    y = np.repeat((z + 0.3 * rng.normal(size=400) > 0).astype(np.float64)[:, None], 3, axis=1)
    x = np.c_[z + nuisance, nuisance, rng.normal(size=(400, 3))]
    groups = np.repeat([f"r{i}" for i in range(10)], 40)
    np.testing.assert_array_equal(select_l2(x, y, groups, grid, 100.0), [1.0, 1.0, 1.0])
    # few windows, a weak signal among 100 noise features: a strong L2 wins; a one-class label falls back
    yb = (rng.random((60, 3)) < 0.4).astype(np.float64)
    yb[:, 1] = 0.0
    xb = np.c_[yb[:, 0] * 0.8 + rng.normal(size=60), rng.normal(size=(60, 100))]
    chosen = select_l2(xb, yb, np.repeat([f"r{i}" for i in range(10)], 6), grid, 7.0)
    assert chosen[0] >= 1000.0 and chosen[1] == 7.0 and chosen[2] in grid
    assert (select_l2(xb, yb, np.array(["r0"] * 60), grid, 7.0) == 7.0).all()  # one record: no inner folds
    # one L2 per label is each label's own fit; a one-value grid is the fixed path
    per_label = fit_and_score(x[:200], y[:200], x[200:], np.array([1.0, 100.0, 1.0]))
    np.testing.assert_allclose(per_label[:, 1], fit_and_score(x[:200], y[:200], x[200:], 100.0)[:, 1])
    np.testing.assert_allclose(per_label[:, 0], fit_and_score(x[:200], y[:200], x[200:], 1.0)[:, 0])
    fixed = record_cv_scores(x, y, groups, 1000.0, 5, 0, 0.5, 1)
    np.testing.assert_array_equal(record_cv_scores(x, y, groups, 1000.0, 5, 0, 0.5, 1, l2_grid=[1000.0]), fixed)
    assert not np.allclose(record_cv_scores(x, y, groups, 1000.0, 5, 0, 0.5, 1, l2_grid=grid), fixed)


def _evaluate(*argv: str) -> int:
    from clef.cli import main

    return main(["evaluate", *argv])


@pytest.fixture(scope="module")
def af_folders(shared_data, tmp_path_factory) -> dict[str, Path]:
    """Two MIT-BIH-format folders, each with an AF record (201, 203) and one without."""
    root = tmp_path_factory.mktemp("mitdb_folders")
    return {"a": link(shared_data / "mitdb", ["101", "201"], root / "a"),
            "b": link(shared_data / "mitdb", ["106", "203"], root / "b"),
            "all": link(shared_data / "mitdb", ["101", "201", "203"], root / "all")}


FAST = ("--no-baseline", "--quiet", "--heads", "none", "--set", "evaluate.mitdb_af_windows_per_class=8",
        "--set", "evaluate.mitdb_window_stride_s=120", "--set", "evaluate.min_per_class=3")


def test_cli_evaluate_fits_on_one_folder_and_scores_another(real_checkpoint, af_folders, tmp_path):
    out = tmp_path / "ev"
    assert _evaluate(str(real_checkpoint), "--task", "mitdb_af,mitdb_windows", "--data", str(af_folders["a"]),
                     "--test-data", str(af_folders["b"]), "--out", str(out), *FAST) == 0
    results = json.loads((out / "results.json").read_text())
    for name in ("mitdb_af", "mitdb_windows"):
        data = results[f"{name}_data"]
        assert data["train"]["records"] == ["101", "201"] and data["test"]["records"] == ["106", "203"]
        assert results["tasks"][f"{name}_II"]["metrics"]["protocol"].startswith("fit on")
    windows = results["tasks"]["mitdb_windows_II"]
    assert "any_pvc" in windows["head_labels"] and set(windows["head_labels"]) <= {"any_pvc", "any_sveb", "af"}
    assert results["mitdb_windows_data"]["train"]["windows"] == 2 * 15  # 30 min every 120 s
    # --test as record names (looked up in --data): the training records are the others of the folder
    out2 = tmp_path / "ev2"
    assert _evaluate(str(real_checkpoint), "--task", "mitdb_af", "--data", str(af_folders["all"]), "--test", "203",
                     "--out", str(out2), *FAST) == 0
    data = json.loads((out2 / "results.json").read_text())["mitdb_af_data"]
    assert data["train"]["records"] == ["101", "201"] and data["test"]["records"] == ["203"]
    # --test as a folder is --test-data
    out3 = tmp_path / "ev3"
    assert _evaluate(str(real_checkpoint), "--task", "mitdb_af", "--data", str(af_folders["a"]), "--test",
                     str(af_folders["b"]), "--out", str(out3), *FAST) == 0
    assert json.loads((out3 / "results.json").read_text())["mitdb_af_data"]["test"]["records"] == ["106", "203"]


def test_cli_evaluate_without_test_records_cross_validates_by_record(real_checkpoint, af_folders, tmp_path):
    out = tmp_path / "cv"
    assert _evaluate(str(real_checkpoint), "--task", "mitdb_windows", "--data", str(af_folders["all"]),
                     "--out", str(out), *FAST, "--set", "evaluate.folds=3") == 0
    results = json.loads((out / "results.json").read_text())
    assert results["mitdb_windows_data"]["test"] is None
    assert "grouped 3-fold" in results["tasks"]["mitdb_windows_II"]["metrics"]["protocol"]


@pytest.mark.parametrize("extra, message", [
    (("--data", "{tmp}/nowhere"), "--data: folder not found"),
    (("--data", "{a}", "--test-data", "{tmp}/nowhere"), "--test-data: folder not found"),
    (("--data", "{a}", "--test-data", "{tmp}"), "no record with a .hea and an .atr"),
    (("--data", "{a}", "--test-data", "{all}"), "both training and test records"),
])
def test_cli_evaluate_bad_folders_are_one_line_errors(real_checkpoint, af_folders, tmp_path, capsys, extra, message):
    argv = [a.format(tmp=tmp_path, a=af_folders["a"], all=af_folders["all"]) for a in extra]
    assert _evaluate(str(real_checkpoint), "--task", "mitdb_af", *argv, "--out", str(tmp_path / "o"), *FAST) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("clef evaluate:") and message in err and len(err.splitlines()) == 1


# ----------------------------------------------------------------------------- the benchmark


def test_bench_real_pretrain_end_to_end(folders, af_folders, tmp_path):
    """The benchmark on small folders: every arm scored on the same windows, paired differences, its report."""
    bench = load_benchmark("bench_real_pretrain")
    out = tmp_path / "bench"
    argv = ["--out", str(out), "--cohort", str(folders["mitdb"]), str(folders["ecg"]), "--eval", str(af_folders["a"]),
            "--test-data", str(af_folders["b"]), "--seeds", "0", "--steps", "1", "2", "--subsamples", "2",
            "--stride", "120", "--bootstrap", "50", "--set", "train.batch_size=8"]
    summary = bench.run(bench.parse_args(argv))
    assert summary["fit_records"] == ["101", "201"] and summary["test_records"] == ["106", "203"]
    assert summary["info"]["ntxent@2"][0]["steps"] == 2
    report = (out / "real_pretrain.md").read_text()
    for row in ("| untrained |", "| features |", "| ntxent@1 |", "| ntxent@2 |", "| ntxent@2 - untrained | 10 % | 2 |",
                "| untrained - features | 100 % | 1 |", "| comparison | labels | units | headline | any_pvc |"):
        assert row in report
    first = (out / "scores.csv").read_text()
    bench.run(bench.parse_args(argv))  # resumed from the cached embeddings: the same scores
    assert (out / "scores.csv").read_text() == first
    pvc = bench.run(bench.parse_args([*argv, "--headline", "any_pvc"]))  # a chosen headline, every label still shown
    scores = pd.read_csv(out / "scores.csv")
    assert pvc["headline_labels"] == ["any_pvc"] and np.allclose(scores["headline"], scores["any_pvc"])
    assert set(pd.read_csv(out / "differences.csv")["label"]) == {"headline", *summary["headline_labels"]}
    assert "logistic probe (L2 100)" in (out / "real_pretrain.md").read_text()
    cv = bench.run(bench.parse_args([*argv, "--l2", "cv"]))  # L2 by inner CV by record: the same cached embeddings
    assert cv["l2_grid"] == [1.0, 10.0, 100.0, 1000.0, 10000.0] and "by inner 5-fold CV by record" in (
        out / "real_pretrain.md").read_text()
    assert len(pd.read_csv(out / "scores.csv")) == len(scores)
    with pytest.raises(SystemExit, match="af"):  # AF sits in one scored record (203): it cannot be a headline
        bench.chosen_headline(["af"], bench.headline_columns(*bench.scored(bench.eval_windows(
            bench.parse_args(argv), bench.experiment(bench.parse_args(argv))))))
    # a step count must be whole epochs (each is the one run stopped there): 5 patients in batches of 2
    from clef_core.multi_cohort import prepare_folders

    uneven = bench.parse_args([*argv, "--set", "train.batch_size=2"])
    cfg = bench.experiment(uneven)
    from clef_core.experiment import Experiment

    site = prepare_folders(uneven.cohort, out / "data" / "pretrain", Experiment.from_dict(cfg), progress=False)
    with pytest.raises(SystemExit, match="not whole epochs of 3 steps"):
        bench.batches_per_epoch(site, cfg, uneven)
