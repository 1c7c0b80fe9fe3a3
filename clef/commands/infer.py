"""`clef infer`: run an exported model on one lead of a record, one JSON line per 10 s window."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

NAME = "infer"
HELP = "run an exported edge model (.tflite/.onnx + preprocess.json) on a record; one JSON object per 10 s window"

ARRAY_SUFFIXES = (".npy", ".csv")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="model_int8.tflite, model.onnx or model_int8.onnx (preprocess.json beside it)")
    parser.add_argument("record", help="a WFDB record (path with or without .hea), or a .npy/.csv array (--fs)")
    parser.add_argument("--lead", help="lead to use (default: the first lead the model was gated on that the "
                                       "record has, else the record's first lead); names a single-lead array. "
                                       "A task head runs only on windows of the lead it was fitted on")
    parser.add_argument("--fs", type=float, help="sample rate in Hz of a .npy/.csv array (required for those)")
    parser.add_argument("--runtime", choices=["tflite-runtime", "ai-edge-litert"],
                        help="TFLite interpreter (default: the first installed)")


def read_lead(record: str, lead: str | None, fs: float | None, preferred: tuple[str, ...]):
    """``(signal (N,), fs, lead)`` in mV. WFDB through clef_core's reader where wfdb is installed
    (canonical lead names, unit checks), else edge/runtime/wfdb_lite.py (formats 16/61/80/212);
    or a numpy array file."""
    from edge.runtime.arrays import RecordError, read_array

    path = Path(record)
    if path.suffix.lower() == ".hea":
        path = path.with_suffix("")
    if path.suffix.lower() in ARRAY_SUFFIXES:
        if fs is None:
            raise RecordError(f"{record}: --fs is required for a {path.suffix} array")
        signal, name = read_array(path, lead)
        return signal, fs, name
    try:
        from clef_core.data.records import read_record
    except ImportError:  # a numpy-only environment (device, .venv-edge): the runtime's own reader
        from edge.runtime.wfdb_lite import read_wfdb_lead

        return read_wfdb_lead(path, lead, preferred)
    rec = read_record(path)
    if lead is None:
        lead = next((name for name in preferred if name in rec.leads), rec.leads[0])
    if lead not in rec.leads:
        raise RecordError(f"{record}: no lead {lead!r} (has {', '.join(rec.leads)})")
    return rec.signal[rec.leads.index(lead)].astype("float64"), rec.fs, lead


def run(args: argparse.Namespace) -> int:
    from edge.runtime import EdgePipeline, ModelError, SpecError
    from edge.runtime.arrays import RecordError

    try:
        pipe = EdgePipeline(args.model, runtime=args.runtime)
    except (ModelError, SpecError) as exc:
        print(f"clef infer: {exc}", file=sys.stderr)
        return 2
    from edge.runtime.quality import reason_code, summary

    skipped: Counter[str] = Counter()
    n = 0
    try:
        signal, fs, lead = read_lead(args.record, args.lead, args.fs, pipe.spec.leads)
        for line in pipe.describe_heads(lead):
            print(f"clef infer: {line}", file=sys.stderr)
        for res in pipe.run(signal, fs, lead):
            print(json.dumps(res), flush=True)
            n += 1
            if "skipped" in res:
                skipped[reason_code(res["skipped"])] += 1
    except (RecordError, ValueError, OSError) as exc:  # BadRecordError is a ValueError
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if args.record not in msg:
            msg = f"{args.record}: {msg}"
        print(f"clef infer: {msg}", file=sys.stderr)
        return 1
    print(f"clef infer: {args.record}: {summary(skipped, n)}", file=sys.stderr)
    return 0
