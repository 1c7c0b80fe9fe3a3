"""`clef sweep`: pretrain + linear probe per point of a small hyper-parameter grid (resumable)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clef.cli import add_config_arguments, experiment_from_args

if TYPE_CHECKING:
    from clef_core.experiment import Experiment

NAME = "sweep"
HELP = "pretrain and probe every point of a grid (e.g. loss.alpha x loss.tau); tabulates sweep.csv / sweep.md"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--grid", metavar="KEY=V1,V2", action="append", default=[],
                        help="one swept key and its values, e.g. --grid loss.alpha=0.1,0.2,0.5 (repeatable; "
                             "replaces the [sweep] grid of the config)")
    parser.add_argument("--cohort", metavar="DIR", type=Path, help="pretraining cohort (default: the built-in [synth] cohort)")
    parser.add_argument("--eval-cohort", metavar="DIR", type=Path,
                        help="labelled cohort for the probe (default: [synth] with evaluate.synth_seed)")
    parser.add_argument("--out", metavar="DIR", type=Path, required=True, help="sweep folder (points/, sweep.csv, sweep.md)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    exp = experiment_from_args(args)
    from clef_core.checkpoint import CheckpointError, load_model
    from clef_core.config import ConfigError
    from clef_core.evaluation.evidence import distance_risk_spearman
    from clef_core.evaluation.embed import embed
    from clef_core.evaluation.run import evaluate_task
    from clef_core.evaluation.labelled_data import synthetic_site
    from clef_core.evaluation.sweep import parse_grid, run_sweep
    from clef_core.evaluation.tasks import evidence_inputs, synthetic_task
    from clef_core.prepared_site import default_cohort, prepare_site
    from clef_core.train import pretrain

    progress = not args.quiet
    work = args.out / "data"
    try:
        grid = parse_grid(args.grid or exp.sweep.grid)
        settings = exp.evaluate
        lead = settings.lead.split(",")[0].strip()
        cohort = args.cohort or default_cohort(work / "pretrain", exp)
        eval_site = synthetic_site(exp, settings, work, args.eval_cohort, progress=progress)
        task = synthetic_task(eval_site, lead)
        evidence = evidence_inputs(eval_site, lead)
    except (ConfigError, FileNotFoundError, ValueError, KeyError) as exc:
        print(f"clef sweep: {exc}", file=sys.stderr)
        return 1

    def evaluate_point(point: Experiment, folder: Path) -> dict[str, Any]:
        started = time.perf_counter()
        site = prepare_site(cohort, work / "pretrain", point, progress=progress)
        result = pretrain(point, run_dir=folder, site=site, progress=progress)
        encoder = load_model(result.final_model).encoder
        say = (lambda m: print(f"clef sweep: {folder.name}: {m}", file=sys.stderr, flush=True)) if progress else None
        probe = evaluate_task(encoder, task, settings, mode="probe", say=say).metrics
        if say is not None:
            say(f"distance-risk Spearman over {len(evidence.x)} patients")
        emb = embed(encoder, evidence.x, settings.batch_size)
        out = {"final_loss": result.final_loss, "steps": result.steps, "mean_auroc": probe["mean_auroc"]}
        out.update({f"auroc_{k}": v.get("auroc") for k, v in probe["labels"].items()})
        risks = {"clinical": evidence.risk_clinical, "truth": evidence.risk_truth}
        for name, risk in risks.items():
            if risk is not None:
                s = distance_risk_spearman(emb, risk, max_patients=settings.evidence_max_patients,
                                           permutations=settings.evidence_permutations, seed=settings.seed)
                out[f"rho_{name}"], out[f"p_{name}"] = s["rho"], s["p_mantel"]
        out["seconds"] = round(time.perf_counter() - started, 1)
        return out

    def report(name: str, metrics: dict[str, Any], skipped: bool) -> None:
        print(f"{name:40s} {'(done before) ' if skipped else ''}mean AUROC {metrics.get('mean_auroc')}, "
              f"rho truth {metrics.get('rho_truth')}", file=sys.stderr)

    try:
        table = run_sweep(exp, grid, args.out, evaluate_point, on_point=report)
    except (ConfigError, ValueError, CheckpointError) as exc:
        print(f"clef sweep: {exc}", file=sys.stderr)
        return 1
    print((args.out / "sweep.md").read_text(encoding="utf-8"))
    print(f"table        {args.out / 'sweep.csv'} ({len(table)} points)")
    return 0
