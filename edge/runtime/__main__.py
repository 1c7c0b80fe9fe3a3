"""Device command line: ``python -m <runtime package> MODEL RECORD [--fs HZ] [--lead NAME]``.

RECORD is a WFDB record path without extension (numpy reader, formats 16/61/80/212) or a
``.npy``/``.csv`` array, which needs ``--fs``.

Prints one JSON object per 10 s window (the keys of ``clef infer``: lead, start_s, embedding and,
with task heads, predictions; or ``skipped`` with the reason, edge/runtime/quality.py) and, on
stderr, the share of windows skipped and why. An unreadable record, one shorter than a window,
or one none of whose windows survives the quality rule (all NaN, flat, out of range: mis-scaled,
random noise) gets a one-line error naming the record and exit 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter

from .arrays import RecordError, read_array
from .model import ModelError
from .inference import EdgePipeline
from .quality import reason_code, summary
from .spec import SpecError
from .wfdb_lite import open_wfdb_lead


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="edge-runtime", description=__doc__.splitlines()[0])
    p.add_argument("model", help="model_int8.tflite / model.onnx (preprocess.json beside it)")
    p.add_argument("record", help="WFDB record (no extension), or .npy (leads x samples or 1-D) / .csv (a column per lead)")
    p.add_argument("--fs", type=float, help="sample rate of a .npy/.csv record, Hz")
    p.add_argument("--lead", help="lead name (CSV header) to use, or the name of a single-lead array; default the "
                                  "first. A task head runs only on windows of the lead it was fitted on")
    p.add_argument("--runtime", choices=["tflite-runtime", "ai-edge-litert"], help="TFLite interpreter to use")
    args = p.parse_args(argv)
    try:
        pipe = EdgePipeline(args.model, runtime=args.runtime)
        if args.record.lower().endswith((".npy", ".csv")):
            if args.fs is None:
                raise RecordError(f"{args.record}: --fs is required for an array file")
            signal, lead = read_array(args.record, args.lead)
            results = pipe.run(signal, args.fs, lead)
        else:  # streamed from the file a minute at a time: constant memory for any record length
            chunks, fs, lead = open_wfdb_lead(args.record, args.lead, pipe.spec.leads)
            results = pipe.run_stream(chunks, fs, lead)
        for line in pipe.describe_heads(lead):
            print(f"edge-runtime: {line}", file=sys.stderr)
        skipped: Counter[str] = Counter()
        n = 0
        for rec in results:
            print(json.dumps(rec), flush=True)
            n += 1
            if "skipped" in rec:
                skipped[reason_code(rec["skipped"])] += 1
    except (RecordError, ModelError, SpecError, ValueError) as exc:
        msg = str(exc)
        if args.record not in msg:  # signal refusals do not know the record's name
            msg = f"{args.record}: {msg}"
        print(f"edge-runtime: {msg}", file=sys.stderr)
        return 1
    print(f"edge-runtime: {args.record}: {summary(skipped, n)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
