"""Pretraining on real records: does it beat random init on MIT-BIH windows of unseen records? (issue 18, item 5)

Pretraining cohort: the real folders given by ``--cohort`` (default: MIT-BIH DS1 ``mitdb``, the
twelve-lead hospital records ``ecg`` and the PTB record ``wfdb`` of the shared data), one cohort of
all their records as ``clef pretrain --cohort DIR DIR DIR`` builds it (:mod:`clef_core.multi_cohort`):
every record a patient, every lead a single-lead view, one window per patient per step; no record
carries a computable SCORE2 risk, so the loss is NT-Xent (``loss.kind = "ntxent"``; CLEF's weights
would all be the unknown-unknown weight). The [model], [preprocess] and [train] settings are the
``--config`` experiment's (default study-cpu: the tiny Net1D at 100 Hz); one run per seed of the
largest ``--steps`` (its learning-rate schedule spans them), the smaller step counts being that run
stopped there and continued.

Evaluation: the MIT-BIH records of ``--eval`` (default: the ``mitdb`` folder) as 10 s MLII windows
every ``--stride`` seconds with the window labels any_pvc, any_sveb and af
(:mod:`clef_core.evaluation.mitdb_windows`, the study's MIT-BIH tasks). A frozen logistic probe
(L2 = evaluate.probe_l2 on standardised features; with ``--l2 cv`` chosen per label from study.l2_grid by
inner 5-fold CV by record on each probe's own labelled windows, the fixed L2 the fallback) is scored on
records it never saw: fitted on the
records of ``--eval`` and scored on those of ``--test-data`` when given (e.g. DS2), otherwise by
5-fold cross-validation by record (pooled out-of-fold scores). At a label fraction f < 1 each
probe is fitted on a share f of its training windows (``--subsamples`` draws, the same windows for
every encoder). The pretraining encoder saw the evaluation records' unlabelled windows when they
are in ``--cohort`` (the default: the probe did not see their labels; an encoder that never saw
them: leave mitdb out of ``--cohort``).

Arms: ``untrained`` (the seed's random init, the pretraining run's own starting weights),
``features`` (the 46 hand-made features of :mod:`clef_core.evaluation.handmade`, no training),
``ntxent@S`` (the pretrained encoder after S steps). Headline: the mean AUROC over the labels of
``--headline`` (default: all three), less any whose positives sit in fewer than two scored records;
every such scorable label is also reported alone. Paired differences with a 95 %
bootstrap CI over units (seed x label subsample) and evaluation records
(:func:`clef_core.evaluation.label_efficiency.paired_bootstrap`, the bootstrap of ``clef study``).

Each arm, seed and step count caches its embeddings (OUT/arms/...npz) and its run folder, so an
interrupted benchmark resumes. Writes OUT/real_pretrain.md (printed) and OUT/scores.csv.

    nice -n 5 python benchmarks/bench_real_pretrain.py --out runs/bench-real [--seeds 0 1 2]
        [--steps 300 1000] [--fractions 0.1 1.0] [--subsamples 5] [--set k=v ...]
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SHARED = Path(os.environ.get("CLEF_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--config", default="study-cpu")
    ap.add_argument("--cohort", type=Path, nargs="+", default=[SHARED / "mitdb", SHARED / "ecg", SHARED / "wfdb"])
    ap.add_argument("--eval", type=Path, default=SHARED / "mitdb", help="MIT-BIH-format folder the probe is fitted on")
    ap.add_argument("--test-data", type=Path, help="MIT-BIH-format folder it is scored on (default: CV by record)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--steps", type=int, nargs="+", default=[300, 1000])
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.1, 1.0])
    ap.add_argument("--subsamples", type=int, default=5, help="label draws at each fraction < 1")
    ap.add_argument("--stride", type=float, default=30.0, help="seconds between evaluation windows")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--l2", choices=["fixed", "cv"], default="fixed",
                    help="probe L2: evaluate.probe_l2, or chosen per label from study.l2_grid by inner CV by record "
                         "on each probe's labelled windows (select_l2)")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--headline", nargs="+", default=None,
                    help="labels the headline averages (default: every label with positives in >= 2 scored records)")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    return ap.parse_args(argv)


def experiment(args: argparse.Namespace) -> dict[str, Any]:
    """The --config experiment with NT-Xent and a run of the largest --steps (its learning-rate schedule spans
    them; a warm-restart schedule gets one period of that many epochs)."""
    from clef_core.config import load_config

    steps = max(args.steps)
    return load_config(args.config, ['loss.kind="ntxent"', f"train.max_steps={steps}", f"train.epochs={steps}",
                                     f"train.warm_restart_t0={steps}", "train.warm_restart_tmult=1", *args.overrides])


def batches_per_epoch(site: Any, cfg: dict[str, Any], args: argparse.Namespace) -> int:
    """Optimizer steps per epoch (one window per patient per epoch); every --steps must be a whole number of
    epochs, so that each step count is a checkpoint of the one run (stopped there by train.epochs)."""
    patients = int(site.store.index["subject_id"].nunique())
    per_epoch = math.ceil(patients / int(cfg["train"]["batch_size"]))
    bad = [s for s in args.steps if s % per_epoch]
    if bad:
        raise SystemExit(f"--steps {bad}: not whole epochs of {per_epoch} steps ({patients} patients, batch "
                         f"{cfg['train']['batch_size']}); choose multiples of {per_epoch} or another train.batch_size")
    return per_epoch


def eval_windows(args: argparse.Namespace, cfg: dict[str, Any]) -> dict[str, Any]:
    """The evaluation windows (fit folder, then the test folder when given) at the model's rate."""
    from clef_core.data.preprocess import PreprocessConfig
    from clef_core.evaluation.mitdb import annotated_records, check_disjoint
    from clef_core.evaluation.mitdb_windows import load_windows

    pre = PreprocessConfig(**cfg["preprocess"])
    fit = annotated_records(args.eval)
    if not fit:
        raise SystemExit(f"--eval {args.eval}: no MIT-BIH-format record (.hea + .atr)")
    test = annotated_records(args.test_data) if args.test_data else []
    if args.test_data and not test:
        raise SystemExit(f"--test-data {args.test_data}: no MIT-BIH-format record (.hea + .atr)")
    check_disjoint(fit, test)
    x, y, groups = load_windows(fit + test, pre, args.stride)
    is_test = np.isin(groups, [p.name for p in test])
    return {"x": x, "y": y.astype(np.float64), "groups": groups, "is_test": is_test, "fs": float(pre.sample_rate),
            "fit_records": [p.name for p in fit], "test_records": [p.name for p in test]}


def arm_embeddings(cfg: dict[str, Any], site: Any, seed: int, args: argparse.Namespace, x: np.ndarray,
                   per_epoch: int) -> dict[int, tuple[np.ndarray, dict[str, Any]]]:
    """{steps: (embeddings of ``x``, run info)} of the seed's encoder at 0 (untrained) and every --steps
    (one run of max(--steps), stopped and continued at each step count; cached)."""
    import torch

    from clef_core.checkpoint import load_model
    from clef_core.evaluation.embed import embed
    from clef_core.experiment import Experiment
    from clef_core.train import pretrain
    from clef_core.task import build_model
    from clef_core.train.trainer import seed_everything

    run_cfg = copy.deepcopy(cfg)
    run_cfg["train"]["seed"] = seed
    key = json.dumps({k: v for k, v in run_cfg.items() if k not in ("study", "evaluate")}, sort_keys=True, default=str)
    folder = args.out / "arms" / f"ntxent_s{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    batch = int(cfg["evaluate"]["batch_size"])
    out = {}
    for steps in [0, *sorted(args.steps)]:
        cache = folder / f"embeddings_{steps}.npz"
        if cache.is_file():
            saved = np.load(cache, allow_pickle=False)
            if str(saved["config"]) != key or len(saved["emb"]) != len(x):
                raise SystemExit(f"{cache} was made with other settings or windows than this run's: use another --out")
            out[steps] = (saved["emb"], json.loads(str(saved["info"])))
            continue
        if steps == 0:  # the pretraining run's own starting weights
            seed_everything(seed)
            encoder, info = build_model(Experiment.from_dict(run_cfg).model.encoder_config()).eval(), {"steps": 0, "seconds": 0.0, "final_loss": math.nan}
        else:
            step_cfg = copy.deepcopy(run_cfg)
            step_cfg["train"]["epochs"] = steps // per_epoch  # resumable: the run goes on from the smaller count
            result = pretrain(Experiment.from_dict(step_cfg), run_dir=folder / "run", site=site, progress=False)
            encoder = load_model(result.final_model).encoder
            # a resumed run's seconds count only its own part: add the run up to the previous step count
            info = {"steps": int(result.steps), "seconds": out[max(out)][1]["seconds"] + float(result.seconds),
                    "final_loss": float(result.final_loss)}
        with torch.inference_mode():
            emb = embed(encoder, x, batch_size=batch)
        tmp = folder / f"embeddings_{steps}.tmp.npz"
        np.savez(tmp, emb=emb, info=json.dumps(info), config=key)
        tmp.replace(cache)
        out[steps] = (emb, info)
    return out


def probe_scores(emb: np.ndarray, data: dict[str, Any], l2: float, args: argparse.Namespace,
                 l2_grid: list[float] | None = None) -> dict[tuple[float, int], np.ndarray]:
    """{(fraction, subsample): scores (n_scored, 3)} on the records the probe never saw; with ``l2_grid``
    each probe's L2 per label is chosen by inner CV by record on its own labelled windows (``l2`` the fallback)."""
    from clef_core.evaluation.mitdb_windows import fit_and_score, record_cv_scores, select_l2

    out = {}
    for frac in args.fractions:
        for j in range(args.subsamples if frac < 1 else 1):
            if data["test_records"]:
                fit_rows = np.flatnonzero(~data["is_test"])
                if frac < 1:
                    rng = np.random.default_rng([0, j, 0x3D8])
                    fit_rows = np.sort(rng.choice(fit_rows, max(int(np.ceil(frac * len(fit_rows))), 2), replace=False))
                x_fit, y_fit = np.asarray(emb[fit_rows], np.float64), data["y"][fit_rows]
                fit_l2 = l2 if l2_grid is None else select_l2(x_fit, y_fit, data["groups"][fit_rows], l2_grid, l2,
                                                               args.folds, 0)
                out[(frac, j)] = fit_and_score(x_fit, y_fit, emb[data["is_test"]], fit_l2)
            else:
                out[(frac, j)] = record_cv_scores(emb, data["y"], data["groups"], l2, args.folds, 0, frac, j, l2_grid)
    return out


def scored(data: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(labels, records) of the scored windows: the test folder's, or every window under CV."""
    rows = data["is_test"] if data["test_records"] else np.ones(len(data["y"]), bool)
    return data["y"][rows], data["groups"][rows]


def headline_columns(y: np.ndarray, groups: np.ndarray) -> list[int]:
    """Labels whose positives sit in at least two scored records (others cannot be scored by record)."""
    return [k for k in range(y.shape[1]) if len(np.unique(groups[y[:, k] == 1])) >= 2]


def chosen_headline(names: list[str] | None, scorable: list[int]) -> list[int]:
    """The columns of the --headline labels (all ``scorable`` ones when None); a label that is unknown or
    not scorable is an error naming it."""
    from clef_core.evaluation.mitdb_windows import WINDOW_LABELS

    if names is None:
        return scorable
    bad = [c for c in names if c not in WINDOW_LABELS or WINDOW_LABELS.index(c) not in scorable]
    if bad:
        raise SystemExit(f"--headline {bad}: not a window label with positives in >= 2 scored records "
                         f"(scorable: {[WINDOW_LABELS[k] for k in scorable]})")
    return [WINDOW_LABELS.index(c) for c in names]


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from clef_core.evaluation.handmade import features
    from clef_core.evaluation.label_efficiency import headline_auroc, paired_bootstrap, weighted_auroc
    from clef_core.evaluation.mitdb_windows import WINDOW_LABELS
    from clef_core.data.preprocess import zscore
    from clef_core.experiment import Experiment
    from clef_core.multi_cohort import prepare_folders

    torch.set_num_threads(1)
    started = time.perf_counter()
    cfg = experiment(args)
    l2 = float(cfg["evaluate"]["probe_l2"])
    l2_grid = [float(v) for v in cfg["study"]["l2_grid"]] if args.l2 == "cv" else None
    site = prepare_folders(args.cohort, args.out / "data" / "pretrain", Experiment.from_dict(cfg), progress=False)
    pre = site.summary()
    data = eval_windows(args, cfg)
    print(f"data ready in {time.perf_counter() - started:.0f} s: pretraining {pre['records']} records / "
          f"{pre['subjects']} patients / {pre['windows']} windows; evaluation {len(data['y'])} windows of "
          f"{len(np.unique(data['groups']))} records", file=sys.stderr, flush=True)
    per_epoch = batches_per_epoch(site, cfg, args)
    y, groups = scored(data)
    scorable = headline_columns(y, groups)
    cols = chosen_headline(args.headline, scorable)
    arms: dict[str, dict[int, dict[tuple[float, int], np.ndarray]]] = {}  # arm -> seed -> scores
    info: dict[str, Any] = {}
    t0 = time.perf_counter()
    feats = features(zscore(data["x"]), data["fs"])
    feature_scores = probe_scores(feats, data, l2, args, l2_grid)
    arms["features"] = {s: feature_scores for s in args.seeds}  # no seed: paired with every seed's arms
    info["features"] = {"seconds": round(time.perf_counter() - t0, 1)}
    for seed in args.seeds:
        for steps, (emb, run_info) in arm_embeddings(cfg, site, seed, args, data["x"], per_epoch).items():
            arm = "untrained" if steps == 0 else f"ntxent@{steps}"
            arms.setdefault(arm, {})[seed] = probe_scores(emb, data, l2, args, l2_grid)
            info.setdefault(arm, {})[seed] = run_info
            print(f"{arm} seed {seed}: {run_info}", file=sys.stderr, flush=True)
    rows = []
    for arm, by_seed in arms.items():
        for seed, by_unit in by_seed.items():
            if arm == "features" and seed != args.seeds[0]:
                continue
            for (frac, j), s in by_unit.items():
                per = {WINDOW_LABELS[k]: float(weighted_auroc(s[:, k], y[:, k])[0]) for k in range(y.shape[1])}
                rows.append({"arm": arm, "seed": seed, "fraction": frac, "subsample": j,
                             "headline": float(headline_auroc(s[:, cols], y[:, cols])[0]), **per})
    table = pd.DataFrame(rows)
    diffs = []
    trained = [a for a in arms if a.startswith("ntxent@")]
    label_sets = [("headline", cols), *((WINDOW_LABELS[k], [k]) for k in scorable)]
    for a, b in [*((t, "untrained") for t in trained), *((t, "features") for t in trained), ("untrained", "features")]:
        for frac in args.fractions:
            keys = sorted(k for k in arms[a][args.seeds[0]] if k[0] == frac)
            for label, ks in label_sets:
                sa = [arms[a][s][k][:, ks] for s in args.seeds for k in keys]
                sb = [arms[b][s][k][:, ks] for s in args.seeds for k in keys]
                diffs.append({"comparison": f"{a} - {b}", "fraction": frac, "label": label,
                              **paired_bootstrap(sa, sb, y[:, ks], groups, n_boot=args.bootstrap, seed=0)})
    diffs = pd.DataFrame(diffs)
    args.out.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out / "scores.csv", index=False)
    diffs.to_csv(args.out / "differences.csv", index=False)
    summary = {"seconds": round(time.perf_counter() - started, 1), "pretraining": pre, "info": info,
               "probe_l2": l2, "l2_grid": l2_grid,
               "headline_labels": [WINDOW_LABELS[k] for k in cols], "fit_records": data["fit_records"],
               "test_records": data["test_records"], "windows": int(len(data["y"])), "scored_windows": int(len(y)),
               "positive_windows": {c: int(y[:, k].sum()) for k, c in enumerate(WINDOW_LABELS)},
               "model": cfg["model"], "preprocess": cfg["preprocess"], "train": cfg["train"], "views": cfg["views"],
               "loss": cfg["loss"], "args": {k: str(v) for k, v in vars(args).items()}}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
    text = markdown(table, diffs, summary, args)
    (args.out / "real_pretrain.md").write_text(text, encoding="utf-8")
    print(text)
    return summary


def markdown(table: pd.DataFrame, diffs: pd.DataFrame, summary: dict[str, Any], args: argparse.Namespace) -> str:
    from clef_core.evaluation.metrics import mean_sd
    from clef_core.evaluation.mitdb_windows import WINDOW_LABELS

    pre = summary["pretraining"]
    arms = list(dict.fromkeys(table["arm"]))
    protocol = (f"fitted on {len(summary['fit_records'])} records of {args.eval}, scored on the "
                f"{len(summary['test_records'])} records of {args.test_data}" if summary["test_records"] else
                f"{args.folds}-fold cross-validation by record over the {len(summary['fit_records'])} records of "
                f"{args.eval} (pooled out-of-fold scores: every window scored by a probe that never saw its record)")
    seconds = {a: np.mean([v["seconds"] for v in summary["info"][a].values()]) for a in arms if a.startswith("ntxent@")}
    lines = [
        "# Pretraining on real records vs random init, MIT-BIH windows of unseen records",
        "",
        f"Printed by `python benchmarks/bench_real_pretrain.py {' '.join(sys.argv[1:])}` on "
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, this {os.cpu_count()}-core {platform.machine()} machine "
        f"(shared), one torch thread; {summary['seconds'] / 60:.1f} min for this invocation (arms cached in --out by an "
        "earlier one are read, not retrained).",
        "",
        f"Pretraining: {pre['records']} real records ({', '.join(str(c) for c in args.cohort)}), {pre['subjects']} "
        f"patients, {pre['windows']} stored 10 s windows, risk known for {100 * (pre['risk_known'] or 0):.0f} % "
        f"(so NT-Xent); {summary['model']['scale']} Net1D at {summary['preprocess']['sample_rate']} Hz, batch "
        f"{summary['train']['batch_size']} patients, lr {summary['train']['lr']:g}, schedule "
        f"{summary['train'].get('schedule', 'sgdr')} over {max(args.steps)} steps; {len(args.seeds)} seeds. "
        "Training time per seed (cumulative): "
        + ", ".join(f"{a} {s:.0f} s" for a, s in seconds.items()) + ".",
        "",
        f"Evaluation: {summary['windows']} MLII 10 s windows (one every {args.stride:g} s), labels "
        f"{', '.join(WINDOW_LABELS)} (positives {summary['positive_windows']}); logistic probe ("
        + (f"L2 per label from {summary['l2_grid']} by inner {args.folds}-fold CV by record on its labelled windows, "
           f"fallback {summary['probe_l2']:g}" if summary["l2_grid"] else f"L2 {summary['probe_l2']:g}")
        + f"), {protocol}. "
        f"Headline: mean AUROC over {', '.join(summary['headline_labels'])}; mean ± SD over seeds x label subsamples.",
        "",
        "| arm | " + " | ".join(f"{100 * f:g} % labels" for f in args.fractions) + " | "
        + " | ".join(f"{c} (100 %)" for c in WINDOW_LABELS) + " |",
        "|---|" + "---|" * (len(args.fractions) + len(WINDOW_LABELS)),
    ]
    for arm in arms:
        sub = table[table["arm"] == arm]
        cells = []
        for f in args.fractions:
            h = sub[sub["fraction"] == f]["headline"]
            cells.append(mean_sd(h))
        full = sub[sub["fraction"] == max(args.fractions)]
        cells += [f"{full[c].mean():.3f}" for c in WINDOW_LABELS]
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    labels = list(dict.fromkeys(diffs["label"]))
    lines += ["", "Paired differences, the headline and each label (same seed, same labelled windows, same scored "
              "windows; difference [95 % percentile CI] from resampling units and records; units = seeds x label "
              "subsamples):", "",
              "| comparison | labels | units | " + " | ".join(labels) + " |", "|---|---|---|" + "---|" * len(labels)]
    for (comparison, frac), sub in diffs.groupby(["comparison", "fraction"], sort=False):
        by = sub.set_index("label")
        cells = [f"{by.at[c, 'diff']:+.3f} [{by.at[c, 'ci_low']:+.3f}, {by.at[c, 'ci_high']:+.3f}]" for c in labels]
        lines.append(f"| {comparison} | {100 * frac:g} % | {int(sub['units'].iloc[0])} | " + " | ".join(cells) + " |")
    loss = {a: np.mean([v["final_loss"] for v in summary["info"][a].values()]) for a in arms if a.startswith("ntxent@")}
    lines += ["", "Final NT-Xent loss (mean over seeds): " + ", ".join(f"{a} {v:.3f}" for a, v in loss.items())
              + f". Views: {summary['views']}.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    run(parse_args(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
