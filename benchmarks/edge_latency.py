"""Per-window latency of one edge model in the current environment (a helper of bench_edge.py).

    python benchmarks/edge_latency.py MODEL WINDOWS.npy OUT_EMB.npy [--runtime NAME] [--repeats N]

Batch 1, one thread, ``set input -> invoke -> get output`` including input quantisation (the
runtime's EdgeModel.embed); prints one JSON line {runtime, median_ms, p90_ms}. Also writes the
embeddings of all windows for the fidelity columns.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from edge.runtime.model import EdgeModel  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("windows")
    p.add_argument("out")
    p.add_argument("--runtime")
    p.add_argument("--repeats", type=int, default=100)
    a = p.parse_args()
    m = EdgeModel(a.model, runtime=a.runtime, num_threads=1)
    w = np.load(a.windows)
    np.save(a.out, np.stack([m.embed(x) for x in w]))
    times = []
    for i in range(a.repeats):
        x = w[i % len(w)]
        t = time.perf_counter()
        m.embed(x)
        times.append((time.perf_counter() - t) * 1e3)
    print(json.dumps({"runtime": m.runtime, "median_ms": float(np.median(times)), "p90_ms": float(np.percentile(times, 90))}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
