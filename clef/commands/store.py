"""`clef store`: preprocess a cohort (MIMIC-IV-ECG layout or a WFDB folder) into an ECG store."""

from __future__ import annotations

import argparse
import sys

from clef.cli import add_config_arguments, experiment_from_args

NAME = "store"
HELP = "build the preprocessed ECG store of a cohort (MIMIC-IV-ECG layout or a folder of WFDB records)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="SOURCE",
                        help="cohort root: has record_list.csv (MIMIC layout) or WFDB records")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="store directory (resumed if a build was interrupted)")
    parser.add_argument("--workers", type=int, default=1, help="preprocessing processes (default 1)")
    parser.add_argument("--chunk-records", type=int, default=256, help="records per committed chunk")
    parser.add_argument("--overwrite", action="store_true", help="replace a store built another way in DIR")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from clef_core.data.errors import StoreError
    from clef_core.data.store import build_store

    pre = experiment_from_args(args).preprocess  # a bad [preprocess] value: a config error (exit 2)
    if not Path(args.source).is_dir():
        print(f"clef store: source {args.source} is not a directory", file=sys.stderr)
        return 1
    try:
        report = build_store(args.source, args.out, pre, progress=not args.no_progress,
                             workers=args.workers, chunk_records=args.chunk_records, overwrite=args.overwrite)
    except (StoreError, FileNotFoundError, ValueError) as exc:
        print(f"clef store: {exc}", file=sys.stderr)
        return 1
    state = "up to date (cached)" if report.cached else f"built in {report.seconds:.1f} s"
    if report.resumed_chunks:
        state += f", resumed after {report.resumed_chunks} committed chunk(s)"
    print(f"store at {report.path}: {state}")
    print(f"records {report.n_records}: ok {report.n_ok}, skipped {report.n_skipped}; windows {report.n_windows}")
    for reason, count in sorted(report.skipped.items()):
        print(f"  skipped {reason}: {count}")
    if report.skipped_windows:
        print("  windows left out of kept records: "
              + ", ".join(f"{reason} {count}" for reason, count in sorted(report.skipped_windows.items())))
    if report.n_skipped:
        print(f"  details: {Path(report.path) / 'skipped.csv'}")
    if report.n_windows:
        return 0
    print(f"clef store: {_no_windows_reason(args.source, report)}", file=sys.stderr)
    return 1


def _no_windows_reason(source: str, report) -> str:
    """Why a build gave no window: no records at all, or the first refused records' lines."""
    if not report.n_records:
        return (f"{source}: no records found (expected record_list.csv, the MIMIC-IV-ECG layout, "
                f"or WFDB .hea files)")
    import csv
    from pathlib import Path

    with open(Path(report.path) / "skipped.csv") as fh:
        lines = [row["message"] for row in csv.DictReader(fh)]
    more = f" (and {len(lines) - 3} more)" if len(lines) > 3 else ""
    return f"{source}: no record gave a usable window: " + "; ".join(lines[:3]) + more
