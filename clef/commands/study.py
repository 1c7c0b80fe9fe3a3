"""`clef study`: the label-efficiency study of CLEF against its controls (clef_core.evaluation.study)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from clef.cli import add_config_arguments, experiment_from_args

NAME = "study"
HELP = "CLEF vs NT-Xent, a placebo and other controls at equal compute, over label fractions, with bootstrap CIs"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--out", metavar="DIR", type=Path, required=True,
                        help="study folder: table.md, differences.md, label_efficiency.png, study.csv (resumable)")
    parser.add_argument("--progress", action="store_true", help="progress bars for data preparation and training")


def run(args: argparse.Namespace) -> int:
    exp = experiment_from_args(args)
    from clef_core.checkpoint import CheckpointError
    from clef_core.evaluation.study import run_study

    try:
        run_study(exp, args.out, progress=args.progress)
    except (FileNotFoundError, ValueError, KeyError, CheckpointError) as exc:
        print(f"clef study: {exc}", file=sys.stderr)
        return 1
    print((args.out / "table.md").read_text(encoding="utf-8"))
    print((args.out / "differences.md").read_text(encoding="utf-8"))
    return 0
