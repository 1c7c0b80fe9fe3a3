"""CLEF with PREVENT against CLEF with SCORE2 (and PCE) on the synthetic cohort, beside the untrained encoder.

Arms (equal [train] settings; one preprocessed store, one clinical table per risk model):
  untrained     the randomly initialised encoder (no training): the baseline every arm must beat
  clef_score2   CLEF with risk.model = "score2"  (ESC 2021, region [risk] region)
  clef_prevent  CLEF with risk.model = "prevent" (AHA 2023, base model, 10-year total CVD)
  clef_pce      CLEF with risk.model = "pce"     (ACC/AHA 2013, white equations)
Pretraining cohort: [synth] with --patients and synth.risk_coverage = --coverage (share of patients
with every SCORE2 input on file at the first ECG; the generator then also writes their creatinine
and a pharmacy record, so PREVENT's inputs are on file too). Evaluation: a separate synthetic
cohort (--eval-patients, seed 1000): linear-probe AUROC (patient-grouped 5-fold CV) per label of
labels.csv and their mean, and the Spearman rho of embedding cosine distance against the true
|SCORE2| and |PREVENT| differences over patient pairs. Mean +- SD over --seeds.

Each (arm, seed) writes OUT/runs/<arm>_s<seed>/result.json and is skipped when that exists.

    python benchmarks/bench_risk_models.py --out OUT [--patients 400] [--eval-patients 300] [--coverage 1.0]
        [--max-steps 40] [--batch 32] [--seeds 0,1] [--arms untrained,clef_score2,clef_prevent]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

if TYPE_CHECKING:
    from clef_core.experiment import Experiment

ARMS = ("untrained", "clef_score2", "clef_prevent", "clef_pce")
LABELS = ("af", "lvh", "high_risk", "conduction", "st_dep")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--patients", type=int, default=400)
    p.add_argument("--eval-patients", type=int, default=300)
    p.add_argument("--coverage", type=float, default=1.0, help="synth.risk_coverage of the pretraining cohort (< 0: the sites' habits)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--max-steps", type=int, default=40)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--arms", default="untrained,clef_score2,clef_prevent")
    p.add_argument("--lead", default="I")
    p.add_argument("--threads", type=int, default=1)
    return p.parse_args(argv)


def base_config(args: argparse.Namespace) -> Experiment:
    from clef_core.experiment import load_experiment

    return load_experiment(overrides=[f"synth.patients={args.patients}", f"synth.risk_coverage={args.coverage}",
                                  f"train.batch_size={args.batch}", f"train.epochs={args.epochs}",
                                  f"train.max_steps={args.max_steps}", f"train.lr={args.lr}",
                                  f"evaluate.synth_patients={args.eval_patients}", "evaluate.synth_seed=1000",
                                  f"evaluate.lead=\"{args.lead}\""])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    from clef_core.checkpoint import load_model
    from clef_core.evaluation.embed import embed
    from clef_core.evaluation.evidence import distance_risk_spearman
    from clef_core.evaluation.run import evaluate_task
    from clef_core.evaluation.labelled_data import synthetic_site
    from clef_core.evaluation.tasks import evidence_inputs, synthetic_task
    from clef_core.prepared_site import clinical_table, default_cohort, prepare_site
    from clef_core.train import pretrain
    from clef_core.task import build_model

    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    if [a for a in arms if a not in ARMS]:
        print(f"unknown arm(s) in {arms}; choose from {ARMS}", file=sys.stderr)
        return 2
    seeds = [int(s) for s in args.seeds.split(",")]
    cfg = base_config(args)
    settings = cfg.evaluate
    t0 = time.perf_counter()
    data = args.out / "data"
    cohort = default_cohort(data / "pretrain", cfg)
    base_site = prepare_site(cohort, data / "pretrain", cfg, progress=False)
    sites, configs = {}, {}
    for arm in arms:
        if arm.startswith("clef_"):
            mcfg = cfg.replace(risk={"model": arm[len("clef_"):]})
            work = data / f"clinical_{mcfg.risk.model}"
            work.mkdir(parents=True, exist_ok=True)
            sites[arm] = dataclasses.replace(base_site, clinical=clinical_table(base_site.root, work, mcfg.metadata))
            configs[arm] = mcfg
    eval_site = synthetic_site(cfg, settings, data, progress=False)
    task = synthetic_task(eval_site, args.lead, LABELS)
    evidence = evidence_inputs(eval_site, args.lead)
    truth = pd.read_csv(eval_site.root / "truth.csv", dtype={"subject_id": str}).set_index("subject_id")
    prevent_truth = pd.Series(evidence.subjects).astype(str).map(truth["prevent"]).astype(float).to_numpy()
    known = {arm: float(s.clinical["risk"].notna().mean()) for arm, s in sites.items()}
    print(f"data ready in {time.perf_counter() - t0:.0f} s: pretraining {base_site.summary()['subjects']} patients, risk known for "
          + ", ".join(f"{a[5:]} {v:.0%}" for a, v in known.items()) + f" of records; evaluation {len(task)} records", file=sys.stderr)

    rows = []
    for seed in seeds:
        for arm in arms:
            run_dir = args.out / "runs" / f"{arm}_s{seed}"
            result_file = run_dir / "result.json"
            if not result_file.is_file():
                run_dir.mkdir(parents=True, exist_ok=True)
                mcfg = configs.get(arm, cfg).replace(train={"seed": seed})
                started = time.perf_counter()
                if arm == "untrained":
                    torch.manual_seed(seed)
                    encoder, steps = build_model(mcfg.model.encoder_config()).eval(), 0
                else:
                    result = pretrain(mcfg, run_dir=run_dir, site=sites[arm], progress=False)
                    encoder, steps = load_model(result.final_model).encoder, result.steps
                train_s = time.perf_counter() - started
                probe = evaluate_task(encoder, task, settings, mode="probe").metrics
                emb = embed(encoder, evidence.x, settings.batch_size)
                rho = {name: distance_risk_spearman(emb, values, max_patients=settings.evidence_max_patients, permutations=0,
                                                    seed=settings.seed)["rho"]
                       for name, values in (("score2", evidence.risk_truth), ("prevent", prevent_truth))}
                row = {"arm": arm, "seed": seed, "mean_auroc": probe["mean_auroc"],
                       **{f"auroc_{k}": v.get("auroc", math.nan) for k, v in probe["labels"].items()},
                       "rho_score2": rho["score2"], "rho_prevent": rho["prevent"], "risk_known": known.get(arm, math.nan),
                       "train_steps": steps, "train_seconds": round(train_s, 1)}
                result_file.write_text(json.dumps(row, indent=2), encoding="utf-8")
            row = json.loads(result_file.read_text(encoding="utf-8"))
            print(f"{arm:13s} seed {seed}: mean AUROC {row['mean_auroc']:.3f}, rho SCORE2 {row['rho_score2']:.3f}, "
                  f"rho PREVENT {row['rho_prevent']:.3f}, {row['train_steps']} steps in {row['train_seconds']} s", file=sys.stderr)
            rows.append(row)
    table = pd.DataFrame(rows)
    table.to_csv(args.out / "results.csv", index=False)
    md = markdown_table(table, arms, args, time.perf_counter() - t0)
    (args.out / "table.md").write_text(md, encoding="utf-8")
    print(md)
    return 0


def _cell(values: pd.Series) -> str:
    from clef_core.evaluation.metrics import mean_sd

    v = values.astype(float).dropna()
    return "-" if v.empty else mean_sd(v)


def _paired(d: pd.Series) -> str:
    """Mean of per-seed differences with its 95 % t-interval (over seeds) and the values."""
    from scipy import stats

    d = d.dropna()
    half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else math.nan
    return f"{d.mean():+.3f} [95 % CI {d.mean() - half:+.3f}, {d.mean() + half:+.3f}] (per seed {', '.join(f'{x:+.3f}' for x in d)})"


def markdown_table(table: pd.DataFrame, arms: list[str], args: argparse.Namespace, seconds: float) -> str:
    metrics = ["mean_auroc"] + [f"auroc_{k}" for k in LABELS] + ["rho_score2", "rho_prevent"]
    head = ["arm", "risk known"] + [m.replace("auroc_", "") for m in metrics] + ["steps"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for arm in arms:
        sub = table[table["arm"] == arm]
        known = sub["risk_known"].astype(float).dropna()
        cells = [arm, "-" if known.empty else f"{known.iloc[0]:.0%}"] + [_cell(sub[m]) for m in metrics]
        lines.append("| " + " | ".join(cells + [f"{sub['train_steps'].mean():.0f}"]) + " |")
    by_seed = {arm: table[table["arm"] == arm].set_index("seed")["mean_auroc"] for arm in arms}
    pairs = [(arm, "untrained") for arm in arms if arm != "untrained" and "untrained" in arms]
    pairs += [("clef_prevent", "clef_score2")] if {"clef_prevent", "clef_score2"} <= set(arms) else []
    diffs = [f"{a} - {b} {_paired(by_seed[a] - by_seed[b])}" for a, b in pairs]
    steps = table.loc[table["arm"] != "untrained", "train_steps"]
    note = (f"\nSynthetic cohort: pretraining {args.patients} patients (risk_coverage {args.coverage}), evaluation "
            f"{args.eval_patients} other patients; {steps.mean():.0f} steps ({args.epochs} epoch(s), cap {args.max_steps or 'none'}) "
            f"of batch {args.batch}, lr {args.lr}; lead {args.lead}; "
            f"seeds {args.seeds}; linear-probe AUROC (patient-grouped 5-fold CV); rho: Spearman of embedding cosine "
            f"distance vs the true |risk difference|; mean ± SD over seeds. Paired mean-AUROC differences: "
            + "; ".join(diffs) + f". Total {seconds / 60:.1f} min.\n")
    return "\n".join(lines) + "\n" + note


if __name__ == "__main__":
    sys.exit(main())
