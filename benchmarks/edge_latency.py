"""Per-window latency of edge models in the current environment (a helper of bench_edge.py).

    python benchmarks/edge_latency.py WINDOWS.npy OUT_DIR MODEL[@builtin] [MODEL ...] [--runtime NAME] [--repeats N]

Batch 1, one thread, ``set input -> invoke -> get output`` including input quantisation (the
runtime's EdgeModel.embed). The models are timed round-robin, one window each in turn, so that
load from other jobs on a shared machine falls on all of them alike and their ratios hold.
``MODEL@builtin``: tflite-runtime's builtin int8 kernels instead of its XNNPACK int8 ones.
Prints one JSON line: a list of {model, runtime, kernels, median_ms, p90_ms}; writes the
embeddings of all windows as OUT_DIR/emb_<i>.npy for the fidelity columns.
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
    p.add_argument("windows")
    p.add_argument("out_dir")
    p.add_argument("models", nargs="+")
    p.add_argument("--runtime")
    p.add_argument("--repeats", type=int, default=100)
    a = p.parse_args()
    w = np.load(a.windows)
    models = []
    for i, spec in enumerate(a.models):
        path, _, option = spec.partition("@")
        m = EdgeModel(path, runtime=a.runtime, num_threads=1, xnnpack_int8=option != "builtin")
        np.save(Path(a.out_dir) / f"emb_{i}.npy", np.stack([m.embed(x) for x in w]))
        models.append((spec, m))
    times: list[list[float]] = [[] for _ in models]
    for r in range(a.repeats):
        x = w[r % len(w)]
        for k, (_, m) in enumerate(models):
            t = time.perf_counter()
            m.embed(x)
            times[k].append((time.perf_counter() - t) * 1e3)
    print(json.dumps([{"model": spec, "runtime": m.runtime, "kernels": m.kernels, "median_ms": float(np.median(t)),
                       "p90_ms": float(np.percentile(t, 90))} for (spec, m), t in zip(models, times)]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
