"""`clef study` at a size (default the CPU config): wall and CPU time against the 15-minute target of
issue 12 (CPU of this process and of the study's worker processes), the machine's load average while
it ran (before, lowest, highest, after; sampled every 15 s), and the study's own figures (the
headline and fine-tune tables and the paired differences with their bootstrap CIs).

    python benchmarks/bench_study.py [--config study-cpu] [--out runs/bench-study] [--set k=v ...]

A finished study folder is resumed (cached embeddings), which is then not a timing: use a new --out.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import threading
import time
from pathlib import Path

TARGET_S = 15 * 60


def cpu_seconds() -> float:
    """User + system CPU of this process and of its finished children (the study's worker processes
    and store builders, which have exited by the time the study returns)."""
    return sum(u.ru_utime + u.ru_stime for u in (resource.getrusage(resource.RUSAGE_SELF),
                                                 resource.getrusage(resource.RUSAGE_CHILDREN)))


def sample_load(loads: list[float], stop: threading.Event, every_s: float) -> None:
    """Append the 1-minute load average to ``loads`` every ``every_s`` seconds until ``stop`` is set."""
    while not stop.wait(every_s):
        loads.append(os.getloadavg()[0])


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
    from clef_core.experiment import Experiment

    cfg = load_config(args.config, args.overrides)
    load_before = os.getloadavg()
    loads, stop = [load_before[0]], threading.Event()
    sampler = threading.Thread(target=sample_load, args=(loads, stop, 15.0), daemon=True)
    sampler.start()
    wall, cpu0 = time.perf_counter(), cpu_seconds()
    try:
        run_study(Experiment.from_dict(cfg), args.out)
    finally:
        stop.set()
    wall = time.perf_counter() - wall
    cpu = cpu_seconds() - cpu0
    load_after = os.getloadavg()
    print((args.out / "table.md").read_text(encoding="utf-8"))
    print((args.out / "differences.md").read_text(encoding="utf-8"))
    print(f"clef study --config {args.config} (study.workers = {cfg['study']['workers']}): wall {wall / 60:.1f} min, "
          f"CPU {cpu / 60:.1f} min of this process and its workers "
          f"(wall / 15-min target = {wall / TARGET_S:.2f}x; CPU / target = {cpu / TARGET_S:.2f}x); "
          f"load average {load_before[0]:.1f} before, {min(loads):.1f}-{max(loads):.1f} during, {load_after[0]:.1f} after, "
          f"on {os.cpu_count()} cores (shared)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
