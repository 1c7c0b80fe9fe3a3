"""Self-test of the device runtime against references computed elsewhere with scipy/PyTorch.

Runs with numpy and a TFLite interpreter only (no pytest, no scipy), so it can run in the
device environment (CI: ``.venv-edge``) or on a device::

    python -m <runtime package>.selftest REFERENCE.npz [--model MODEL --expect EMB.npy --windows WIN.npy]

``REFERENCE.npz`` (written by tests/test_edge_runtime.py) holds ``spec_json``, and for each
case ``<name>_x``/``<name>_fs``/``<name>_expect`` arrays: ``filt_*`` (scipy sosfiltfilt),
``res_*`` (scipy resample_poly, with ``res_fs_out``) and ``win_*`` (whole-record scipy
preprocessing cut into windows, with ``win_tol`` as the allowed max |difference|).
Prints one JSON summary; exit status 1 when any check fails.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from .filters import SOSFilter
from .model import EdgeModel
from .resample import resample
from .spec import spec_from_dict
from .stream import windows_of

FORBIDDEN = ("torch", "scipy", "wfdb", "clef_core", "pandas")


def check_reference(ref: dict[str, np.ndarray]) -> dict[str, float]:
    spec = spec_from_dict(json.loads(str(ref["spec_json"])))
    out: dict[str, float] = {}
    f = spec.filters[spec.sample_rate]
    flt = SOSFilter(f.sos, f.zi, f.padlen)
    out["filtfilt_max_abs_diff"] = float(np.abs(flt.filtfilt(ref["filt_x"]) - ref["filt_expect"]).max())
    y = resample(ref["res_x"], float(ref["res_fs"]), float(ref["res_fs_out"]))
    out["resample_max_abs_diff"] = float(np.abs(y - ref["res_expect"]).max()) if y.shape == ref["res_expect"].shape else np.inf
    wins = [w.x for w in windows_of(ref["win_x"], float(ref["win_fs"]), spec, chunk_s=7.3)]
    expect = ref["win_expect"]
    kept = [x for x in wins if x is not None]  # a skipped window (x None) fails the check, not the script
    if len(wins) != len(expect) or len(kept) != len(wins):
        out["windows_max_abs_diff"] = np.inf
    else:
        out["windows_max_abs_diff"] = float(np.abs(np.stack(kept) - expect).max())
    return out


def check_model(model_path: str, windows: np.ndarray, expect: np.ndarray, runtime: str | None) -> dict[str, float | str | bool]:
    m = EdgeModel(model_path, runtime=runtime)
    emb = np.stack([m.embed(w) for w in windows])
    mean = expect.mean(axis=0)
    a, b = emb - mean, expect - mean
    ccos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)
    return {
        "runtime": m.runtime,
        "int8_io": bool(m.is_int8 and m.output_quant is not None),
        "centred_cosine_min": float(ccos.min()),
        "rel_l2_error": float(np.linalg.norm(emb - expect) / np.linalg.norm(expect)),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="selftest")
    p.add_argument("reference")
    p.add_argument("--model")
    p.add_argument("--windows", help=".npy (n, T) preprocessed windows for --model")
    p.add_argument("--expect", help=".npy (n, D) embeddings the model should reproduce")
    p.add_argument("--runtime", choices=["tflite-runtime", "ai-edge-litert"])
    p.add_argument("--min-ccos", type=float, default=0.97)
    p.add_argument("--max-rel-l2", type=float, default=0.05)
    args = p.parse_args(argv)
    ref = dict(np.load(args.reference, allow_pickle=False))
    checks = check_reference(ref)
    res: dict[str, object] = dict(checks)
    tol = float(ref["win_tol"])
    ok = checks["filtfilt_max_abs_diff"] < 1e-9 and checks["resample_max_abs_diff"] < 1e-9 and checks["windows_max_abs_diff"] < tol
    if args.model:
        m = check_model(args.model, np.load(args.windows), np.load(args.expect), args.runtime)
        res["model"] = m
        ok = ok and float(m["centred_cosine_min"]) >= args.min_ccos and float(m["rel_l2_error"]) <= args.max_rel_l2
    res["numpy"] = np.__version__
    res["forbidden_imports"] = sorted(n for n in FORBIDDEN if n in sys.modules)
    ok = ok and not res["forbidden_imports"]
    res["ok"] = bool(ok)
    print(json.dumps(res))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
