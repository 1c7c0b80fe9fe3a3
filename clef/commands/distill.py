"""`clef distill`: a wearable student distilled from a CLEF encoder, exported for TFLite Micro."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from clef.cli import add_config_arguments, config_from_args
from clef.commands._site import prepare_cohort_site

NAME = "distill"
HELP = ("distil a checkpoint into the tiny wearable student (student.pt) and export student_int8.tflite "
        "with its TFLite Micro arena; resumes when DIR holds a distillation state")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", metavar="CHECKPOINT", type=Path, help="the teacher: a clef model file (final_model.pt)")
    add_config_arguments(parser)
    parser.add_argument("--out", metavar="DIR", type=Path, required=True,
                        help="student.pt, metrics.jsonl, status.json, distill_state.pt and the export "
                             "(student_int8.tflite, preprocess.json, export_report.json)")
    parser.add_argument("--cohort", metavar="DIR", type=Path,
                        help="unlabelled ECG: MIMIC-IV-ECG layout root or a folder of WFDB records, e.g. "
                             "../shared/data/mitdb (default: synthesise [synth] into the work folder)")
    parser.add_argument("--work", metavar="DIR", type=Path, help="where the cohort's store is cached (default: DIR/data)")
    parser.add_argument("--calibration", metavar="DATA", type=Path,
                        help="WFDB records for int8 calibration and the gate (default distill.calibration, "
                             "else ../shared/data/ecg)")
    parser.add_argument("--no-export", action="store_true", help="only distil (no ONNX/TFLite, no arena)")
    parser.add_argument("--no-resume", action="store_true", help="start over even if DIR holds a distillation state")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    from clef_core.checkpoint import CheckpointError, load_model
    from clef_core.distill import DistillConfig, distill
    from clef_core.evaluation.sites import with_model_preprocess

    work = args.work or args.out / "data"
    try:
        dcfg = DistillConfig(**cfg["distill"])
        teacher = load_model(args.checkpoint)
        cfg = with_model_preprocess(cfg, teacher.preprocess)  # the store at the teacher's rate
        site = prepare_cohort_site(NAME, args.cohort, work, cfg, progress=not args.quiet)
        result = distill(cfg, teacher_path=args.checkpoint, run_dir=args.out, site=site,
                         resume=not args.no_resume, progress=not args.quiet)
    except (FileNotFoundError, ValueError, KeyError, CheckpointError) as exc:
        print(f"clef distill: {exc}", file=sys.stderr)
        return 1
    loss = "n/a" if math.isnan(result.final_loss) else f"{result.final_loss:.4f}"
    resumed = f" (resumed at step {result.resumed_from_step})" if result.resumed_from_step is not None else ""
    print(f"cohort       {site.root} ({site.layout}), {site.summary().get('subjects')} patients")
    print(f"distillation {result.steps} steps{resumed}, final loss {loss}, {result.seconds:.1f} s")
    print(f"agreement    centred cosine {result.agreement['centred_cosine']:.3f}, "
          f"R^2 {result.agreement['r2']:.3f} (unseen augmentations)")
    print(f"student      {result.student}")
    if args.no_export or not dcfg.export:
        return 0

    from edge.export.exporter import ExportError, ExportOptions
    from edge.student import export_student

    calibration = args.calibration or (Path(dcfg.calibration) if dcfg.calibration else None)
    try:
        report = export_student(result.student, args.out, ExportOptions(calibration=calibration))
    except (ExportError, ValueError, OSError) as exc:
        print(f"clef distill: export: {exc}", file=sys.stderr)
        return 2
    s = report["student"]
    print(json.dumps({"out": str(args.out), "file": s.get("file"), "size_kb": s.get("size_kb"),
                      "arena_kib": s.get("arena_kib"), "gate": report["gate"],
                      "centred_cosine_min": report.get("centred_cosine_min"), "rel_l2_error": report.get("rel_l2_error"),
                      "within_budget": s.get("within_budget")}))
    if report["gate"] != "pass":
        print(f"clef distill: the int8 student did not pass the fidelity gate; see {args.out / 'export_report.json'}",
              file=sys.stderr)
        return 3
    if not s.get("within_budget"):
        print(f"clef distill: the student exceeds the TFLM budget (arena {s.get('arena_kib')} KiB / "
              f"{s['budget']['arena_kib']:g}, model {s.get('size_kb')} KiB / {s['budget']['size_kb']:g})", file=sys.stderr)
        return 4
    return 0
