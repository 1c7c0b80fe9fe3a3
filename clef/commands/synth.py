"""`clef synth`: write the built-in synthetic multi-site cohort (MIMIC-IV-ECG + hosp layout)."""

from __future__ import annotations

import argparse
import sys

from clef.cli import add_config_arguments, experiment_from_args

NAME = "synth"
HELP = "generate a synthetic multi-site ECG cohort in the MIMIC-IV-ECG layout (defaults: [synth])"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, metavar="DIR", help="cohort folder to create")
    parser.add_argument("--patients", type=int, help="number of patients (default synth.patients)")
    parser.add_argument("--sites", type=int, help="number of sites (default synth.sites)")
    parser.add_argument("--seed", type=int, help="random seed (default synth.seed)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing synthetic cohort in DIR")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    import dataclasses

    from clef_core.synth import generate_cohort

    exp = experiment_from_args(args)
    given = {key: getattr(args, key) for key in ("patients", "sites", "seed") if getattr(args, key) is not None}
    try:
        synth = dataclasses.replace(exp.synth, **given)
        summary = generate_cohort(
            args.out,
            **synth.as_kwargs(),
            window_days=exp.metadata.window_days,
            diagnosis_window_days=exp.metadata.diagnosis_window_days,
            overwrite=args.overwrite,
            progress=not args.no_progress,
        )
    except (TypeError, ValueError, FileExistsError) as exc:
        print(f"clef synth: {exc}", file=sys.stderr)
        return 1
    print(
        f"cohort {summary.out_dir}: {summary.patients} patients, {summary.records} records, "
        f"{len(summary.sites)} sites in {summary.seconds:.1f} s ({summary.records_per_s:.0f} records/s)"
    )
    for site in summary.sites:
        prev = ", ".join(f"{k} {v:.2f}" for k, v in site["prevalence"].items() if v is not None)
        print(f"  {site['name']}: {site['patients']} patients, {site['records']} records, carts {site['cart_ids']}, {prev}")
    return 0
