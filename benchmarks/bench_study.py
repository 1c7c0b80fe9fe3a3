"""`clef study` at a size (default the CPU config): wall and CPU time against the 15-minute target of
issue 12, the machine load while it ran, and the study's own figures (the headline table and the
paired differences against NT-Xent, the baseline, with their bootstrap CIs).

    python benchmarks/bench_study.py [--config study-cpu] [--out runs/bench-study] [--set k=v ...]

A finished study folder is resumed (cached embeddings), which is then not a timing: use a new --out.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

TARGET_S = 15 * 60


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="study-cpu")
    ap.add_argument("--out", type=Path, default=Path("runs/bench-study"))
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    args = ap.parse_args(argv)
    if (args.out / "summary.json").is_file():
        print(f"{args.out} holds a finished study: its time would not be a measurement; use another --out",
              file=sys.stderr)
        return 2
    from clef_core.config import load_config
    from clef_core.evaluation.study import run_study

    cfg = load_config(args.config, args.overrides)
    load_before = os.getloadavg()
    wall, cpu0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
    run_study(cfg, args.out)
    wall = time.perf_counter() - wall
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    load_after = os.getloadavg()
    print((args.out / "table.md").read_text(encoding="utf-8"))
    print((args.out / "differences.md").read_text(encoding="utf-8"))
    print(f"clef study --config {args.config}: wall {wall / 60:.1f} min, CPU {cpu / 60:.1f} min "
          f"(wall / 15-min target = {wall / TARGET_S:.2f}x; CPU / target = {cpu / TARGET_S:.2f}x); "
          f"load average {load_before[0]:.1f} before, {load_after[0]:.1f} after, on {os.cpu_count()} cores (shared)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
