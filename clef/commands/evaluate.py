"""`clef evaluate`: score a model checkpoint on downstream tasks and on evidence in its embedding.

The command parses its options, runs :func:`clef_core.evaluation.checkpoint_tasks.evaluate_checkpoint`
(the whole evaluation), writes results.json and prints the table and the files written."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from clef.cli import add_config_arguments, config_from_args
from clef_core.run_folder import dumps

NAME = "evaluate"
HELP = "linear-probe / fine-tune a checkpoint on the synthetic, SNOMED and MIT-BIH (beats, AF, window) tasks; embedding evidence"
# clef_core.evaluation.checkpoint_tasks.TASKS / HEAD_STORES, for the help (a test checks they agree): importing
# clef_core.evaluation here would import torch at every start of `clef`
TASKS = ("synthetic", "snomed", "mitdb", "mitdb_af", "mitdb_windows", "evidence")
HEAD_STORES = ("copy", "inplace", "none")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", metavar="CHECKPOINT", type=Path, help="a clef model file (e.g. RUN_DIR/final_model.pt)")
    add_config_arguments(parser)
    parser.add_argument("--task", default="all", help=f"one of {', '.join(TASKS)}, a comma list, or all (default)")
    parser.add_argument("--cohort", metavar="DIR", type=Path,
                        help="labelled synthetic cohort for the synthetic/evidence tasks (default: generate [synth] "
                             "with evaluate.synth_seed)")
    parser.add_argument("--data", metavar="DIR", type=Path,
                        help="MIT-BIH-format folder (.hea/.dat/.atr) for the mitdb* tasks (default evaluate.mitdb_dir, "
                             "else the shared MIT-BIH DS1 records)")
    parser.add_argument("--train", metavar="RECORDS",
                        help="MIT-BIH training records: names in --data (101,106), DS1, paths or a folder (default: every "
                             "annotated record of --data that is not a test record)")
    parser.add_argument("--test-data", metavar="DIR", type=Path,
                        help="fit the probe on the training records and score it on this folder's annotated records "
                             "(or on the --test names in it)")
    parser.add_argument("--test", metavar="RECORDS",
                        help="MIT-BIH test records: names (in --test-data, else --data), DS2, paths or a folder (default: "
                             "cross-validate the training records by record)")
    parser.add_argument("--lead", help="I | II | I,II (default evaluate.lead); MIT-BIH always uses MLII")
    parser.add_argument("--mode", choices=("probe", "finetune"), help="default evaluate.mode")
    parser.add_argument("--out", metavar="DIR", type=Path, required=True, help="results.json, PNGs, model with heads")
    parser.add_argument("--work", metavar="DIR", type=Path, help="where evaluation data is cached (default: OUT/data)")
    parser.add_argument("--heads", choices=HEAD_STORES, default="copy",
                        help="store the trained heads in OUT/model.pt (copy, default), in CHECKPOINT itself, or nowhere")
    parser.add_argument("--quiet", action="store_true", help="no progress lines or bars")
    parser.add_argument("--no-baseline", action="store_true",
                        help="skip the baseline row (the same encoder untrained, scored the same way; it repeats "
                             "every embedding and probe)")


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    from clef_core.evaluation.checkpoint_tasks import EvaluationError, EvaluationOptions, evaluate_checkpoint, parse_tasks
    from clef_core.evaluation.run import EvalSettings

    try:
        tasks = parse_tasks(args.task)
        overrides = {k: v for k, v in (("lead", args.lead), ("mode", args.mode)) if v}
        settings = EvalSettings(**{**cfg["evaluate"], **overrides})
    except ValueError as exc:
        print(f"clef evaluate: {exc}", file=sys.stderr)
        return 1
    options = EvaluationOptions(out=args.out, work=args.work, cohort=args.cohort, data=args.data, train=args.train,
                                test_data=args.test_data, test=args.test, heads=args.heads,
                                baseline=not args.no_baseline, skip_missing=args.task == "all", quiet=args.quiet)
    progress = Progress(quiet=args.quiet)
    try:
        evaluation = evaluate_checkpoint(args.checkpoint, cfg, settings, tasks, options, say=progress.say,
                                         warn=lambda m: print(f"clef evaluate: {m}", file=sys.stderr))
    except EvaluationError as exc:
        print(f"clef evaluate: {exc}", file=sys.stderr)
        return 1
    results = evaluation.results
    (args.out / "results.json").write_text(dumps(results, indent=2), encoding="utf-8")
    progress.say(f"done in {progress.elapsed():.0f} s")
    _print_table(results)
    print()
    print("outputs:")
    for label, path in [("results", args.out / "results.json"), *evaluation.outputs]:
        print(f"  {label:12s} {path}")
    return 0


class Progress:
    """``clef evaluate: [  12 s] message`` lines on stderr (the table stays alone on stdout)."""

    def __init__(self, quiet: bool) -> None:
        import time

        self.quiet, self.clock, self.started = quiet, time.perf_counter, time.perf_counter()

    def elapsed(self) -> float:
        return self.clock() - self.started

    def say(self, message: str) -> None:
        if not self.quiet:
            print(f"clef evaluate: [{self.elapsed():5.0f} s] {message}", file=sys.stderr, flush=True)


def _print_table(results: dict[str, Any]) -> None:
    """One row per task: the trained encoder's headline, the untrained baseline's, and the
    task's caveat (too few examples to mean anything) or its per-label details."""
    from clef_core.evaluation.checkpoint_tasks import metric_text as _fmt

    base = results.get("baseline", {})
    print(f"{'task':22s} {'metric':12s} {'value':>7s} {'untrained':>9s}  details")
    for key, res in results["tasks"].items():
        m = res["metrics"]
        b = base.get("tasks", {}).get(key, {}).get("metrics", {})
        if "mean_auroc" in m:
            name, value, other = "mean AUROC", m["mean_auroc"], b.get("mean_auroc")
            detail = ", ".join(f"{k} {_fmt(v.get('auroc'))}" for k, v in m["labels"].items())
        elif "macro_auroc" in m:
            name, value, other = "macro AUROC", m["macro_auroc"], b.get("macro_auroc")
            detail = ", ".join(f"{c}: Se {_fmt(v['sensitivity'])} +P {_fmt(v['ppv'])}" for c, v in m["classes"].items())
        elif "mean_mae" in m:
            name, value, other = "MAE", m["mean_mae"], b.get("mean_mae")
            detail = ", ".join(f"{k}: R2 {_fmt(v['r2'])}, mean-predictor MAE {_fmt(v['mae_mean_predictor'])}, n {v['n']}"
                               for k, v in m["labels"].items())
        else:
            print(f"{key:22s} {'skipped':12s} {'':>7s} {'':>9s}  {m.get('skipped')}")
            continue
        if "too_small" in m:
            detail = f"TOO SMALL TO MEAN MUCH: {m['too_small']}; {detail}"
        elif "chance_95" in m:
            detail = f"chance 0.5 +- {m['chance_95']:.2f}; {detail}"
        print(f"{key:22s} {name:12s} {_fmt(value):>7s} {_fmt(other) if base else '':>9s}  {detail}")
    for lead, ev in results.get("evidence", {}).items():
        bev = base.get("evidence", {}).get(lead, {})
        for src, s in ev["spearman"].items():
            other = bev.get("spearman", {}).get(src, {}).get("rho")
            print(f"{'evidence_' + lead:22s} {'rho ' + src:12s} {_fmt(s['rho']):>7s} {_fmt(other) if base else '':>9s}  "
                  f"distance vs |risk diff|, {s['n_patients']} patients, Mantel p {_fmt(s['p_mantel'])}")
        leak, bleak = ev["leakage"], bev.get("leakage", {})
        if "age" in leak:
            other = bleak.get("age", {}).get("mae")
            print(f"{'leakage_' + lead:22s} {'age MAE':12s} {_fmt(leak['age']['mae']):>7s} "
                  f"{_fmt(other) if base else '':>9s}  R2 {_fmt(leak['age']['r2'])}, "
                  f"mean-predictor MAE {_fmt(leak['age']['mae_mean_predictor'])}")
        if "sex" in leak:
            other = bleak.get("sex", {}).get("auroc")
            print(f"{'leakage_' + lead:22s} {'sex AUROC':12s} {_fmt(leak['sex'].get('auroc')):>7s} "
                  f"{_fmt(other) if base else '':>9s}")
    for name, why in results.get("skipped", {}).items():
        print(f"{name:22s} {'skipped':12s} {'':>7s} {'':>9s}  {why}")
    if base:
        print(f"untrained: {base['what']}")
