"""benchmarks/bench_study.py counts the CPU of the study's worker processes, not only its own."""

from __future__ import annotations

import multiprocessing
import sys
import time

from tests.conftest import REPO_ROOT


def _burn(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_cpu_seconds_include_finished_children():
    sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
    try:
        from bench_study import cpu_seconds
    finally:
        sys.path.remove(str(REPO_ROOT / "benchmarks"))
    before = cpu_seconds()
    child = multiprocessing.get_context("fork").Process(target=_burn, args=(0.6,))
    child.start()
    child.join()
    assert cpu_seconds() - before >= 0.5  # the parent only waited


def test_study_estimate_counts_the_configs_steps():
    sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
    try:
        from bench_study_estimate import plan
    finally:
        sys.path.remove(str(REPO_ROOT / "benchmarks"))
    from clef_core.config import load_config

    cfg = load_config("study-gpu")
    ones = {"synth_per_patient": 1.0, "store_per_patient": 1.0, "ecgs_per_patient": 1.0, "load_batch": 1.0,
            "train_step": 1.0, "finetune_step": 1.0, "embed_window": 1.0, "bootstrap": 1.0,
            **{f"probe_{f:g}": 1.0 for f in cfg["study"]["label_fractions"]}}
    rows = {name: (cpu, wall) for name, cpu, wall, _ in plan(cfg, ones, gpu_speedup=10.0)}
    assert rows["pretraining steps (encoder)"] == (27 * 8 * 188, 27 * 8 * 188 / 10)  # 9 trained arms x 3 seeds x 8 epochs
    # pretraining cohort twice (the signal-off control's own) + evaluation cohort
    assert rows["prepare stores"] == (27_000, 27_000 / 8)
    capped = load_config("study-gpu", ["train.max_steps=100"])
    assert dict((r[0], r[1]) for r in plan(capped, ones, 10.0))["pretraining steps (encoder)"] == 27 * 100
    # fine-tune: 30 encoders x 2 subsamples; pool of 1,500 rows: 15 rows (1 step x 256 epochs), 150 (5 x 52), 1,500 (47 x 6)
    assert rows["fine-tune steps (encoder)"][0] == 30 * 2 * (256 + 260 + 282)
    # bootstraps: 12 comparisons x 5 fractions, 10 without the features arm x 3 fine-tune fractions
    assert rows["bootstraps"][0] == 12 * 5 + 10 * 3
    tuned = load_config("study-gpu", ['study.finetune_arms=["untrained","ntxent"]'])
    rows_tuned = {r[0]: r[1] for r in plan(tuned, ones, 10.0)}
    assert rows_tuned["fine-tune steps (encoder)"] == 2 * 3 * 2 * (256 + 260 + 282)  # 2 arms x 3 seeds x 2 subsamples
    assert rows_tuned["bootstraps"] == 12 * 5 + 1 * 3  # one fine-tune comparison left: ntxent - untrained
    few = load_config("study-gpu", ['study.arms=["untrained","ntxent"]'])
    assert dict((r[0], r[1]) for r in plan(few, ones, 10.0))["prepare stores"] == 15_000  # no second cohort
