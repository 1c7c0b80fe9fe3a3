"""benchmarks/bench_regimes.py builds its federated arms from settings clef simulate accepts, and its DP arm
spends the stated epsilon at the smallest site (the full benchmark runs Flower: not in the tests)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench_loader import load_benchmark



@pytest.fixture(scope="module")
def bench():
    return load_benchmark("bench_regimes")


def test_arms_share_cohort_batch_and_passes_and_are_valid_experiments(bench, tmp_path: Path) -> None:
    from clef_core.privacy.accounting import epsilon
    from clef_core.experiment import Experiment
    from clef_core.privacy.compat import check_privacy

    args = bench.parse_args(["--out", str(tmp_path), "--passes", "3", "--sites", "3", "--epsilon", "4"])
    cfg = bench.experiment(args)
    assert cfg["model"]["norm"] == "group" and cfg["train"]["epochs"] == 3 and cfg["train"]["max_steps"] == 0
    central = bench.central_config(cfg, args, seed=1)
    assert (central["train"]["warm_restart_t0"], central["train"]["warm_restart_tmult"]) == (3, 1)  # one cosine
    assert central["privacy"]["mode"] == "off" and central["train"]["seed"] == 1
    sigma, q, steps = bench.dp_noise(cfg, [401, 399, 400], args)
    assert q == pytest.approx(cfg["train"]["batch_size"] / 399) and steps == 3 * round(399 / cfg["train"]["batch_size"])
    assert 3.99 < epsilon([(sigma, q, steps)], bench.DELTA) <= 4.0
    for arm_sigma, budget in ((None, 0.0), (bench.CONTROL_SIGMA, 0.0), (sigma, 4.0)):
        fed = bench.federation_config(cfg, args, seed=1, sigma=arm_sigma, budget=budget)
        settings = Experiment.from_dict(fed).federation
        assert (settings.rounds, fed["federation"]["local_epochs"], fed["federation"]["holdout"]) == (3, 1, 0.0)
        assert fed["train"]["batch_size"] == cfg["train"]["batch_size"] and fed["train"]["seed"] == 1
        assert fed["synth"] == cfg["synth"] and fed["model"] == cfg["model"]
        priv = check_privacy(Experiment.from_dict(fed), 3) if arm_sigma is not None else None
        assert (priv.noise_multiplier, priv.budget_epsilon) == (arm_sigma, budget) if priv else fed["privacy"]["mode"] == "off"
