"""Smallest TensorFlow Lite Micro tensor arena for a .tflite (run in an env with tflite-micro).

    python benchmarks/tflm_arena.py MODEL WINDOW.npy

Binary search over ``arena_size`` with the real TFLM interpreter (reference kernels): the
smallest size at which the model allocates and runs one window; also one run's latency
(reference kernels on x86: not representative of an MCU). Prints one JSON line.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
from tflite_micro.python.tflite_micro import runtime


def runs(path: str, size: int, x: np.ndarray) -> bool:
    try:
        it = runtime.Interpreter.from_file(path, arena_size=size)
        it.set_input(x, 0)
        it.invoke()
        return True
    except (RuntimeError, ValueError):
        return False


def main() -> int:
    path, window = sys.argv[1], np.load(sys.argv[2])
    probe = runtime.Interpreter.from_file(path, arena_size=8 << 20)
    d = probe.get_input_details(0)
    scale, zp = d["quantization_parameters"]["scales"][0], d["quantization_parameters"]["zero_points"][0]
    x = np.clip(np.round(window / scale) + zp, -128, 127).astype(np.int8).reshape(d["shape"])
    lo, hi = 1 << 14, 8 << 20
    if not runs(path, hi, x):
        print(json.dumps({"error": "does not run in TFLM with an 8 MiB arena"}))
        return 1
    while hi - lo > 256:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if runs(path, mid, x) else (mid, hi)
    it = runtime.Interpreter.from_file(path, arena_size=hi)
    it.set_input(x, 0)
    t = time.perf_counter()
    it.invoke()
    ms = (time.perf_counter() - t) * 1e3
    out = it.get_output(0).astype(np.float32).reshape(-1)
    np.save(sys.argv[3], out) if len(sys.argv) > 3 else None
    print(json.dumps({"arena_bytes": hi, "arena_kib": round(hi / 1024, 1), "tflm_reference_ms": round(ms, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
