"""`clef metadata`: extract the clinical table (risk-model inputs, risk, completeness) of a cohort."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from clef.cli import add_config_arguments, experiment_from_args

NAME = "metadata"
HELP = "extract the clinical table (risk-model inputs, risk, completeness) of a MIMIC layout or WFDB folder"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="cohort folder: MIMIC-IV-ECG layout (record_list.csv) or any folder of WFDB records")
    parser.add_argument("--out", required=True, metavar="FILE.csv", help="table CSV; <stem>.problems.csv and <stem>.json are written beside it")
    parser.add_argument("--kind", choices=("auto", "mimic", "wfdb"), default="auto", help="source layout (default: auto-detect)")
    parser.add_argument("--risk", choices=("score2", "prevent", "pce", "score2_diabetes"),
                        help="risk model (overrides risk.model; its options stay in [risk])")
    add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from clef_core.metadata import extract_clinical_table, save_clinical_table
    from clef_core.metadata.table import sidecar_paths

    exp = experiment_from_args(args)
    try:
        settings = exp.metadata
        if args.risk:
            settings = settings.replace(risk_model=args.risk)
        ct = extract_clinical_table(Path(args.source), settings, kind=args.kind,
                                    progress=lambda m: print(f"clef metadata: {m}", file=sys.stderr, flush=True))
    except (FileNotFoundError, ValueError) as exc:
        print(f"clef metadata: {exc}", file=sys.stderr)
        return 2
    out = save_clinical_table(ct, args.out)
    s = ct.summary()
    print(f"records {s['records']} (subjects {s['subjects']}), risk model {settings.risk.describe()}")
    print(f"completeness (fraction of the {s['risk_model']} inputs present): " + ", ".join(f"{k}: {v}" for k, v in s["completeness"].items()))
    print("inputs present: " + ", ".join(f"{k} {v}" for k, v in s["present"].items()))
    print(f"risk defined {s['risk_defined']} of {s['records']}; problems {s['problems']}")
    problems_path, json_path = sidecar_paths(out)
    print(f"wrote {out}, {problems_path.name}, {json_path.name}")
    return 0
