"""`clef pretrain`: central CLEF pretraining on one cohort (default: the built-in synthetic one)."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from clef.cli import add_config_arguments, config_from_args
from clef.commands._site import prepare_cohort_site

NAME = "pretrain"
HELP = "pretrain an encoder centrally with the CLEF loss; resumes when RUN_DIR holds a training state"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--cohort", metavar="DIR", type=Path, nargs="+",
                        help="MIMIC-IV-ECG layout root(s) or folder(s) of WFDB records; several folders are pretrained on "
                             "as one cohort, ids prefixed by folder name (default: synthesise [synth] into the work folder)")
    parser.add_argument("--out", metavar="RUN_DIR", type=Path, required=True,
                        help="run folder: metrics.jsonl, train_state.pt, final_model.pt, status.json")
    parser.add_argument("--work", metavar="DIR", type=Path,
                        help="where the cohort's clinical table and store are cached (default: RUN_DIR/data)")
    parser.add_argument("--no-resume", action="store_true", help="start over even if RUN_DIR holds a training state")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    from clef_core.checkpoint import CheckpointError
    from clef_core.train import pretrain
    from clef_core.train.loop import refuse_privacy

    work = args.work or args.out / "data"
    try:
        refuse_privacy(cfg)  # before any cohort is built or read
        site = prepare_cohort_site(NAME, args.cohort, work, cfg, progress=True)
        result = pretrain(cfg, run_dir=args.out, site=site, resume=not args.no_resume, progress=not args.quiet)
    except (FileNotFoundError, ValueError, KeyError, CheckpointError) as exc:
        print(f"clef pretrain: {exc}", file=sys.stderr)
        return 1

    summary = site.summary()
    loss = "n/a" if math.isnan(result.final_loss) else f"{result.final_loss:.4f}"
    resumed = f" (resumed at epoch {result.resumed_from_epoch})" if result.resumed_from_epoch is not None else ""
    skipped = summary.get("skipped")
    folders = args.cohort if args.cohort and len(args.cohort) > 1 else [site.root]
    print(f"cohort       {', '.join(str(f) for f in folders)} ({site.layout})")
    print(f"records      {summary.get('records')} used, {'?' if skipped is None else skipped} skipped"
          + (f" (see {site.skip_report})" if site.skip_report else ""))
    print(f"patients     {summary.get('subjects')}, risk known for {_pct(summary.get('risk_known'))} of records")
    print(f"training     {result.epochs} epoch(s), {result.steps} steps{resumed}")
    print(f"final loss   {loss}")
    print(f"time         {result.seconds:.1f} s")
    print(f"model        {result.final_model}")
    return 0


def _pct(value: float | None) -> str:
    return "?" if value is None else f"{100 * value:.0f} %"
