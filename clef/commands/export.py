"""`clef export`: checkpoint -> model.onnx, model_int8.onnx, model_int8.tflite, preprocess.json, export_report.json."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

NAME = "export"
HELP = "export a model checkpoint for edge devices (float/int8 ONNX, int8 TFLite) with a fidelity gate"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="a clef model checkpoint (final_model.pt)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--calibration", metavar="DATA[,DATA]",
                        help="folder(s) of WFDB records for calibration and the held-out gate windows, "
                             "e.g. the reference set plus the deployment's own records (default: ../shared/data/ecg)")
    parser.add_argument("--report-data", metavar="DATA",
                        help="folder of WFDB records for a report-only fidelity check on lead II "
                             "(default: ../shared/data/mitdb when present; 'none' skips it)")
    parser.add_argument("--leads", default="I,II", help="leads to calibrate and gate on (default I,II)")
    parser.add_argument("--heads", metavar="NAME[,NAME]",
                        help="task heads to ship (default: every head of an exported lead except those fitted on "
                             "synthetic labels; 'none' ships none)")
    parser.add_argument("--force-heads", action="store_true",
                        help="also ship heads whose validation AUROC is near chance (< 0.6), labelled "
                             "'near chance' in export_report.json and on the device")
    parser.add_argument("--per-channel", action="store_true",
                        help="per-channel int8 weights in the .tflite (default per-tensor: ~100 KiB smaller, "
                             "same measured fidelity)")
    parser.add_argument("--split-parts", type=int, default=1, metavar="N",
                        help="compute the stem's and first block's conv + Swish in N channel slices: exact, "
                             "lowers the TFLite Micro arena (the 250 Hz small encoder: see docs/edge.md)")
    parser.add_argument("--no-tflite", action="store_true",
                        help="skip model_int8.tflite (no export venv); the report's gate is then 'fail'")


def _head_names(text: str | None) -> tuple[str, ...] | None:
    if text is None:
        return None
    return () if text.strip().lower() == "none" else tuple(x.strip() for x in text.split(",") if x.strip())


def run(args: argparse.Namespace) -> int:
    from clef_core.checkpoint import CheckpointError
    from edge.export.exporter import ExportError, ExportOptions, export_model

    cal = [Path(x) for x in args.calibration.split(",") if x] if args.calibration else None
    extra: dict[str, Any] = {} if args.report_data is None else \
        {"report_data": None if args.report_data.lower() == "none" else Path(args.report_data)}
    opts = ExportOptions(calibration=cal[0] if cal and len(cal) == 1 else cal, **extra,
                         leads=tuple(x.strip() for x in args.leads.split(",") if x.strip()),
                         heads=_head_names(args.heads), force_heads=args.force_heads, per_tensor=not args.per_channel, tflite=not args.no_tflite, split_parts=args.split_parts)
    try:
        report = export_model(args.checkpoint, args.out, opts)
    except (CheckpointError, ExportError, ValueError, OSError) as exc:
        print(f"clef export: {exc}", file=sys.stderr)
        return 2
    summary = {k: report.get(k) for k in ("size_kb", "centred_cosine_min", "rel_l2_error", "gate")}
    print(json.dumps({"out": str(args.out), **summary}))
    if report["gate"] != "pass":
        print(f"clef export: model_int8.tflite did not pass the fidelity gate; see {Path(args.out) / 'export_report.json'}",
              file=sys.stderr)
        return 3
    return 0
