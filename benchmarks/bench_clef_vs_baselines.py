"""CLEF against its controls at equal compute, on the synthetic cohort (issue 4, "Benchmark").

Methods (each trained with the same [train] settings: batch, optimizer, schedule, epochs, step cap):
  clef          the CLEF loss at the defaults (risk.missing_policy = unknown: only patients with
                all seven SCORE2 inputs on file have a risk, ~9 % of the synthetic cohort)
  clef_impute   CLEF with risk.missing_policy = impute_reference (missing inputs filled from a
                published reference population; that table is flagged unverified in
                docs/clinical-metadata.md), so most patients have a risk
  ntxent        loss.kind = ntxent, the SimCLR control (all negatives weighted 1)
  supervised    the encoder trained on the labels themselves (clef_core.evaluation.supervised)
  random        the randomly initialised encoder (no training)
Pretraining cohort: [synth] with --patients (seed 0). Evaluation cohort: a separate synthetic
cohort (--eval-patients, seed 1000), so the supervised control never sees an evaluated patient.
Scores on the evaluation cohort: linear-probe AUROC (patient-grouped 5-fold CV) on each
label of labels.csv (af, lvh, high_risk, conduction, st_dep; all risk-linked in the generator)
and their mean, and the Spearman rho between embedding cosine distance and |true SCORE2
difference| over patient pairs. Over --seeds training seeds: mean +- sample SD.

Each (method, seed) writes OUT/runs/<method>_s<seed>/result.json and is skipped when that
exists, so an interrupted benchmark resumes. Results: OUT/results.csv and OUT/table.md.

    python benchmarks/bench_clef_vs_baselines.py --out OUT [--patients 2000] [--eval-patients 600]
        [--epochs 2] [--max-steps 0] [--batch 64] [--lr 1e-3] [--seeds 0,1,2] [--threads 2] [--methods ...]
"""

from __future__ import annotations

import argparse
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

METHODS = ("clef", "clef_impute", "ntxent", "supervised", "random")
LABELS = ("af", "lvh", "high_risk", "conduction", "st_dep")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--patients", type=int, default=2000, help="pretraining cohort size")
    p.add_argument("--eval-patients", type=int, default=600, help="evaluation cohort size")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--max-steps", type=int, default=0, help="cap on optimizer steps per run (0: epochs decide)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3,
                   help="AdamW lr of every trained method (1e-3: the paper's 1e-4 barely moves the weights in a short budget)")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--lead", default="I")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quiet", action="store_true")
    return p.parse_args(argv)


def base_config(args: argparse.Namespace) -> Experiment:
    from clef_core.experiment import load_experiment

    return load_experiment(overrides=[f"synth.patients={args.patients}", f"train.batch_size={args.batch}",
                                  f"train.epochs={args.epochs}", f"train.max_steps={args.max_steps}", f"train.lr={args.lr}",
                                  f"evaluate.synth_patients={args.eval_patients}", "evaluate.synth_seed=1000",
                                  f"evaluate.lead=\"{args.lead}\""])


def encoder_for(method: str, cfg: Experiment, sites: dict, run_dir: Path, progress: bool) -> tuple[torch.nn.Module, dict]:
    from clef_core.checkpoint import load_model
    from clef_core.evaluation.supervised import train_supervised
    from clef_core.train import pretrain
    from clef_core.task import build_model

    if method == "random":
        torch.manual_seed(cfg.train.seed)
        return build_model(cfg.model.encoder_config()).eval(), {"steps": 0, "examples": 0, "seconds": 0.0}
    if method == "supervised":
        return train_supervised(cfg, sites["default"], list(LABELS))
    site = sites["impute" if method == "clef_impute" else "default"]
    if method == "ntxent":
        cfg = cfg.replace(loss={"kind": "ntxent"})
    result = pretrain(cfg, run_dir=run_dir, site=site, progress=progress)
    return load_model(result.final_model).encoder, {"steps": result.steps, "final_loss": result.final_loss,
                                                     "seconds": result.seconds}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    from clef_core.evaluation.embed import embed
    from clef_core.evaluation.evidence import distance_risk_spearman
    from clef_core.evaluation.run import evaluate_task
    from clef_core.evaluation.labelled_data import synthetic_site
    from clef_core.evaluation.tasks import evidence_inputs, synthetic_task
    from clef_core.prepared_site import default_cohort, prepare_site

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    bad = [m for m in methods if m not in METHODS]
    if bad:
        print(f"unknown method(s) {bad}; choose from {METHODS}", file=sys.stderr)
        return 2
    seeds = [int(s) for s in args.seeds.split(",")]
    progress = not args.quiet
    cfg = base_config(args)
    settings = cfg.evaluate
    t0 = time.perf_counter()
    data = args.out / "data"
    cohort = default_cohort(data / "pretrain", cfg)
    sites = {"default": prepare_site(cohort, data / "pretrain", cfg, progress=progress)}
    impute_cfg = cfg.replace(risk={"missing_policy": "impute_reference"})
    if "clef_impute" in methods:
        sites["impute"] = prepare_site(cohort, data / "pretrain_impute", impute_cfg, progress=progress)
    eval_site = synthetic_site(cfg, settings, data, progress=progress)
    task = synthetic_task(eval_site, args.lead, LABELS)
    evidence = evidence_inputs(eval_site, args.lead)
    print(f"data ready in {time.perf_counter() - t0:.0f} s: pretraining {sites['default'].summary()['subjects']} patients "
          f"(risk known for {sites['default'].summary()['risk_known']:.0%} of records"
          + (f", {sites['impute'].summary()['risk_known']:.0%} with impute_reference" if "impute" in sites else "")
          + f"); evaluation {len(task)} records of {len(np.unique(task.groups))} patients", file=sys.stderr)

    rows = []
    for seed in seeds:
        for method in methods:
            run_dir = args.out / "runs" / f"{method}_s{seed}"
            result_file = run_dir / "result.json"
            if not result_file.is_file():
                mcfg = (impute_cfg if method == "clef_impute" else cfg).replace(train={"seed": seed})
                run_dir.mkdir(parents=True, exist_ok=True)
                encoder, train_info = encoder_for(method, mcfg, sites, run_dir, progress)
                started = time.perf_counter()
                probe = evaluate_task(encoder, task, settings, mode="probe").metrics
                emb = embed(encoder, evidence.x, settings.batch_size)
                rho = distance_risk_spearman(emb, evidence.risk_truth, max_patients=settings.evidence_max_patients,
                                             permutations=0, seed=settings.seed)["rho"]
                row = {"method": method, "seed": seed, "mean_auroc": probe["mean_auroc"],
                       **{f"auroc_{k}": v.get("auroc", math.nan) for k, v in probe["labels"].items()},
                       "rho_truth": rho, "train_steps": train_info.get("steps"),
                       "train_seconds": round(float(train_info.get("seconds", 0.0)), 1),
                       "eval_seconds": round(time.perf_counter() - started, 1)}
                result_file.write_text(json.dumps(row, indent=2), encoding="utf-8")
            row = json.loads(result_file.read_text(encoding="utf-8"))
            print(f"{method:12s} seed {seed}: mean AUROC {row['mean_auroc']:.3f}, rho {row['rho_truth']:.3f}, "
                  f"{row['train_steps']} steps in {row['train_seconds']} s", file=sys.stderr)
            rows.append(row)

    table = pd.DataFrame(rows)
    table.to_csv(args.out / "results.csv", index=False)
    md = markdown_table(table, methods, args, time.perf_counter() - t0)
    (args.out / "table.md").write_text(md, encoding="utf-8")
    print(md)
    return 0


def markdown_table(table: pd.DataFrame, methods: list[str], args: argparse.Namespace, seconds: float) -> str:
    from clef_core.evaluation.metrics import mean_sd

    metrics = ["mean_auroc"] + [f"auroc_{k}" for k in LABELS] + ["rho_truth"]
    head = ["method"] + [m.replace("auroc_", "") if m.startswith("auroc_") else m for m in metrics] + ["steps", "train s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for method in methods:
        sub = table[table["method"] == method]
        cells = [method]
        for m in metrics:
            v = sub[m].astype(float).dropna() if m in sub else pd.Series(dtype=float)
            cells.append("-" if v.empty else mean_sd(v))
        cells += [f"{sub['train_steps'].mean():.0f}", f"{sub['train_seconds'].mean():.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    note = (f"\nSynthetic cohort: pretraining {args.patients} patients, evaluation {args.eval_patients} other patients; "
            f"{args.epochs} epoch(s), batch {args.batch}, lr {args.lr}, step cap {args.max_steps or 'none'}; lead {args.lead}; "
            f"seeds {args.seeds}; linear probe AUROC (patient-grouped 5-fold CV) and Spearman rho of embedding "
            f"cosine distance vs |true SCORE2 difference|; mean ± SD over seeds; total {seconds / 60:.1f} min.\n")
    return "\n".join(lines) + "\n" + note


if __name__ == "__main__":
    sys.exit(main())
