"""clef study in worker processes: the same outputs for any worker count; the units' parts
(equal fine-tune compute per fraction, one probe fit per distinct labelled set)."""

from __future__ import annotations

import os
import types

import numpy as np
import pytest


def _pid_and_threads(context, item):
    import torch

    return context["offset"] + item, os.getpid(), torch.get_num_threads()


def test_map_units_keeps_the_order_and_uses_other_processes():
    from clef_core.evaluation.study_workers import map_units

    serial = map_units(_pid_and_threads, {"offset": 10}, list(range(6)), workers=1, threads=1)
    parallel = map_units(_pid_and_threads, {"offset": 10}, list(range(6)), workers=2, threads=1)
    assert [r[0] for r in parallel] == [r[0] for r in serial] == list(range(10, 16))
    assert {r[1] for r in serial} == {os.getpid()}
    assert os.getpid() not in {r[1] for r in parallel} and len({r[1] for r in parallel}) <= 2
    assert {r[2] for r in parallel} == {1}


def test_finetune_epochs_give_every_fraction_the_same_steps():
    from clef_core.evaluation.study_finetune import finetune_epochs

    assert finetune_epochs(46, 48, 32) == 24  # 2 steps an epoch
    assert finetune_epochs(465, 48, 32) == 4  # 15 steps an epoch: 60 >= 48
    assert finetune_epochs(0, 48, 32) == 48 and finetune_epochs(1000, 1, 32) == 1


def test_probe_reuses_a_fit_only_for_the_same_labelled_patients():
    from clef_core.evaluation.label_efficiency import three_way_split
    from clef_core.evaluation.study import StudyConfig, probe_all, probe_unit

    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(60), 2).astype(str)
    y = (rng.random((120, 2)) < 0.4).astype(float)
    emb = rng.normal(size=(120, 5)) + y[:, :1]
    task = types.SimpleNamespace(groups=groups, y=y, labels=["a", "b"])
    study = StudyConfig(label_fractions=(0.2, 1.0), subsamples=3, min_patients=4, l2_grid=(1.0, 100.0))
    pool, val, test = three_way_split(groups, 0.2, 0.3, 0)
    rows, scores = probe_all(emb, task, pool, val, test, study, "arm", 0)
    for frac in study.label_fractions:
        for j in range(study.subsamples):
            ref_scores, ref_rows = probe_unit(emb, task, pool, val, test, frac, j, study)
            assert np.array_equal(scores[("arm", 0, frac, j)], ref_scores)
            got = [r for r in rows if r["fraction"] == frac and r["subsample"] == j]
            assert got == [{"arm": "arm", "seed": 0, **r} for r in ref_rows]
    assert not np.array_equal(scores[("arm", 0, 0.2, 0)], scores[("arm", 0, 0.2, 1)])


@pytest.mark.parametrize("workers", [2])
def test_study_outputs_do_not_depend_on_the_worker_count(tmp_path, workers):
    from clef.cli import main

    args = ["study", "--set", "synth.patients=24", "--set", "study.eval_patients=40", "--set", 'model.scale="tiny"',
            "--set", "preprocess.sample_rate=100", "--set", "train.max_steps=2", "--set", "train.batch_size=8",
            "--set", "study.seeds=[0,1]", "--set", "study.subsamples=2", "--set", "study.label_fractions=[0.5,1.0]",
            "--set", "study.bootstrap=20", "--set", "study.min_patients=4", "--set", "study.diagnose_batches=1",
            "--set", 'study.arms=["untrained","features","ntxent","clef","supervised"]', "--set", "study.finetune_steps=2",
            "--set", "synth.risk_labels=true"]
    assert main(args + ["--out", str(tmp_path / "one"), "--set", "study.workers=1"]) == 0
    assert main(args + ["--out", str(tmp_path / "many"), "--set", f"study.workers={workers}"]) == 0
    for name in ("study.csv", "table.csv", "differences.csv", "finetune.csv", "finetune_table.csv",
                 "finetune_differences.csv", "diagnostics.json"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "many" / name).read_bytes(), name
