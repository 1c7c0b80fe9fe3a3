"""`clef risk MODEL key=value ...`: one person's clinical risk as one JSON object."""

from __future__ import annotations

import argparse
import json
import sys

NAME = "risk"
HELP = "one person's 10-year (and PREVENT 30-year) risk under score2 | prevent | pce | score2_diabetes, as JSON"

EPILOG = """inputs: age sex sbp total_chol hdl [chol_unit=mmol/L|mg/dL] smoking diabetes, and per model
  prevent: bmi egfr bp_treated statin [hba1c (%) -> HbA1c variant | uacr (mg/g) -> UACR variant | variant=...]
  pce: bp_treated [race=white|african_american, only when given]
  score2 / score2_diabetes: [region=low|moderate|high|very high]; score2_diabetes: hba1c [hba1c_unit=%|mmol/mol] egfr diabetes_age
example: clef risk prevent age=50 sex=female sbp=160 bp_treated=1 total_chol=200 hdl=45 chol_unit=mg/dL statin=0 diabetes=1 smoker=0 egfr=90 bmi=35"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # no clef_core import here: the parser is built by every command, `clef infer` included,
    # which runs in the device's numpy-only environment; run() checks the model name
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("model", metavar="MODEL", help="risk model: score2 | prevent | pce | score2_diabetes")
    parser.add_argument("inputs", nargs="*", metavar="KEY=VALUE", help="the person's inputs and model options")


def run(args: argparse.Namespace) -> int:
    from clef_core.risk import risk_of_person

    pairs: dict[str, str] = {}
    for item in args.inputs:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            print(f"clef risk: {item!r} is not KEY=VALUE", file=sys.stderr)
            return 2
        if key.strip() in pairs:
            print(f"clef risk: {key.strip()} given twice", file=sys.stderr)
            return 2
        pairs[key.strip()] = value.strip()
    try:
        result = risk_of_person(args.model, pairs)
    except ValueError as exc:
        print(f"clef risk: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0
