"""benchmarks/bench_learning_curve.py: each budget is a finished run of exactly that many steps, the
variants are valid experiments, and the comparisons pair every budget with random init and with the
previous budget (the full benchmark takes an hour: not in the tests)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench_loader import load_benchmark



@pytest.fixture(scope="module")
def bench():
    return load_benchmark("bench_learning_curve")


def test_budget_runs_exactly_that_many_steps_under_one_cosine(bench) -> None:
    from clef_core.config import load_config
    from clef_core.train.settings import TrainConfig

    cfg = load_config("study-cpu")
    for steps in (100, 300, 1000, 3000):
        tc = TrainConfig(**bench.budget_config(cfg, steps, patients=1200)["train"])
        assert tc.max_steps == steps and tc.epochs * 19 >= steps > (tc.epochs - 1) * 19  # 19 batches of 64
        assert tc.schedule == "cosine"  # the schedule's length is max_steps: a finished run per budget
    assert cfg["train"]["max_steps"] != 3000  # the experiment itself is not changed


def test_variants_and_comparisons(bench, tmp_path: Path) -> None:
    from clef_core.config import load_config, merge, overrides_to_dict
    from clef_core.data.augment import ViewConfig

    args = bench.parse_args(["--out", str(tmp_path), "--steps", "0", "100", "300", "--losses", "ntxent", "clef",
                             "--variant", 'paper=views.pairing="same_window";views.crop_s=0'])
    vsets = bench.variants(args)
    assert vsets == {"default": [], "paper": ['views.pairing="same_window"', "views.crop_s=0"]}
    paper = merge(load_config("study-cpu"), overrides_to_dict(vsets["paper"]), strict=True)
    assert ViewConfig(**paper["views"]).pairing == "same_window"
    names = {(v, loss, s): bench.arm_name(v, loss, s, 2) for v in vsets for loss in args.losses for s in args.steps}
    pairs = bench.comparisons(names, args, list(vsets))
    assert ("default:ntxent@100", "default:untrained") in pairs and ("default:clef@300", "default:clef@100") in pairs
    assert ("default:clef@300", "default:ntxent@300") in pairs and ("paper:ntxent@300", "default:ntxent@300") in pairs
    assert len(pairs) == len(set(pairs)) and all(a != b for a, b in pairs)
    assert bench.arm_name("default", "clef", 0, 1) == "untrained" and bench.arm_name("default", "clef", 300, 1) == "clef@300"
    with pytest.raises(SystemExit, match="NAME"):
        bench.variants(bench.parse_args(["--out", str(tmp_path), "--variant", "nameless"]))
