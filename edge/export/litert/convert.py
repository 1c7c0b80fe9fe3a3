"""Convert a clef checkpoint's encoder to a full-integer int8 ``.tflite`` (run in the export venv).

    python -m edge.export.litert.convert --checkpoint final_model.pt --calibration cal.npy \
        --heldout held.npy --out model_int8.tflite --embeddings held_emb.npy --report conv.json [--per-tensor]

Recipe (edge-net1d-notes.md): the exact 2-D rewrite of the encoder (edge/export/litert/to2d.py,
SE as FULLY_CONNECTED), ``torch.export`` at batch 1, PT2E with :class:`FullIntegerQuantizer`
(residual ADDs, zero pads, own observer on the final MEAN; HistogramObserver activations,
symmetric int8 weights, per-tensor by default), calibration one window at a time, the
embedding's quantisation shift folded into the pooling conv's bias (bias_correction.py), the
NHWC pad layout rule, ``litert_torch.convert``. Then it checks the file (int8 input and output, no
float tensor between ops, no DEQUANTIZE) and runs it with ai-edge-litert on the held-out
windows, writing their embeddings for the gate computed by the caller.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch


def quantise_graph(m2: torch.nn.Module, calibration: np.ndarray, per_tensor: bool):
    """``torch.export`` at batch 1, PT2E prepare, calibration one window at a time, convert:
    the fake-quant graph litert-torch converts (and that matches the .tflite), and its quantizer."""
    from litert_torch.quantize.pt2e_quantizer import get_symmetric_quantization_config
    from torchao.quantization.pt2e import move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    from edge.export.litert.quant_patch import FullIntegerQuantizer

    t = calibration.shape[1]
    gm = torch.export.export(m2, (torch.zeros(1, 1, 1, t),)).module()
    quantizer = FullIntegerQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=not per_tensor))
    pm = prepare_pt2e(gm, quantizer)
    with torch.no_grad():
        for w in calibration:  # the exported graph is specialised to batch 1
            pm(torch.from_numpy(w.reshape(1, 1, 1, t).astype(np.float32)))
    cm = convert_pt2e(pm, fold_quantize=False)
    move_exported_model_to_eval(cm)
    return cm, quantizer


def build_int8(encoder: torch.nn.Module, calibration: np.ndarray, per_tensor: bool, out: Path,
               split_parts: int = 1, bias_correction: bool = True) -> dict:
    """Write the int8 .tflite; with ``bias_correction`` the embedding's quantisation shift, as
    measured on the calibration windows, is folded into the pooling conv's bias (a second
    calibration pass; edge/export/litert/bias_correction.py). Returns what was corrected."""
    import litert_torch
    from litert_torch.quantize.quant_config import QuantConfig

    from edge.export.litert import layout_patch
    from edge.export.litert.bias_correction import embed_windows, output_bias
    from edge.export.litert.to2d import to_2d

    layout_patch.install()
    t = calibration.shape[1]
    m2 = to_2d(encoder.eval(), split_parts, window_samples=t)
    cm, quantizer = quantise_graph(m2, calibration, per_tensor)
    info: dict = {"output_bias_correction": None}
    if bias_correction:
        shift = output_bias(cm, embed_windows(m2, calibration), calibration)
        m2.pool.set_bias(torch.from_numpy(-shift).float())
        cm, quantizer = quantise_graph(m2, calibration, per_tensor)
        info["output_bias_correction"] = {"windows": len(calibration), "max_abs": float(np.abs(shift).max()),
                                          "rms": float(np.sqrt(np.mean(shift ** 2)))}
    litert_torch.convert(cm, (torch.zeros(1, 1, 1, t),), quant_config=QuantConfig(pt2e_quantizer=quantizer)).export(str(out))
    return info


def build_float(encoder: torch.nn.Module, window_samples: int, out: Path) -> None:
    import litert_torch

    from edge.export.litert import layout_patch
    from edge.export.litert.to2d import to_2d

    layout_patch.install()
    litert_torch.convert(to_2d(encoder.eval()), (torch.zeros(1, 1, 1, window_samples),)).export(str(out))


def inspect_tflite(path: Path) -> dict:
    """Op counts, I/O types and quantisation, and any float tensor flowing between ops."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    # without the default (XNNPACK) delegate, so the op list is the file's, not the delegate's
    it = Interpreter(model_path=str(path), experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    it.allocate_tensors()
    tensors = {t["index"]: t for t in it.get_tensor_details()}
    ops = it._get_ops_details()
    counts = collections.Counter(op["op_name"] for op in ops)
    float_ops = sorted({op["op_name"] for op in ops
                        for i in list(op["inputs"]) + list(op["outputs"])
                        if i >= 0 and np.dtype(tensors[i]["dtype"]) == np.float32})
    inp, outp = it.get_input_details()[0], it.get_output_details()[0]
    return {
        "ops": dict(sorted(counts.items())), "n_ops": len(ops),
        "input": {"shape": [int(s) for s in inp["shape"]], "dtype": np.dtype(inp["dtype"]).name,
                  "scale": float(inp["quantization"][0]), "zero_point": int(inp["quantization"][1])},
        "output": {"shape": [int(s) for s in outp["shape"]], "dtype": np.dtype(outp["dtype"]).name,
                   "scale": float(outp["quantization"][0]), "zero_point": int(outp["quantization"][1])},
        "float_ops": float_ops,
        "full_integer": (not float_ops and "DEQUANTIZE" not in counts
                         and np.dtype(inp["dtype"]) == np.int8 and np.dtype(outp["dtype"]) == np.int8),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="edge.export.litert.convert")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--calibration", required=True, help=".npy (n, T) preprocessed calibration windows")
    p.add_argument("--heldout", required=True, help=".npy (m, T) held-out windows to embed")
    p.add_argument("--out", required=True)
    p.add_argument("--embeddings", required=True, help="where to write the held-out int8 embeddings (.npy)")
    p.add_argument("--report", required=True)
    p.add_argument("--per-tensor", action="store_true", help="per-tensor weights (default per-channel)")
    p.add_argument("--float-out", help="also write the float32 .tflite of the same 2-D graph (benchmarks)")
    p.add_argument("--no-bias-correction", action="store_true",
                   help="leave the embedding's int8 quantisation shift uncorrected (for measurements)")
    p.add_argument("--split-parts", type=int, default=1,
                   help="stem's and first block's conv + Swish in N channel slices (lower TFLM arena; exact)")
    args = p.parse_args(argv)

    from clef_core.checkpoint import load_model
    from edge.runtime.model import EdgeModel

    torch.set_num_threads(1)
    t0 = time.time()
    encoder = load_model(args.checkpoint).encoder
    out = Path(args.out)
    calibration = np.load(args.calibration)
    corrected = build_int8(encoder, calibration, args.per_tensor, out, args.split_parts,
                           bias_correction=not args.no_bias_correction)
    if args.float_out:
        build_float(encoder, calibration.shape[1], Path(args.float_out))
    info = inspect_tflite(out)
    if not info["full_integer"]:
        print(f"{out}: not full-integer: float ops {info['float_ops']}, ops {info['ops']}", file=sys.stderr)
        return 3
    m = EdgeModel(out, runtime="ai-edge-litert")
    held = np.load(args.heldout)
    np.save(args.embeddings, np.stack([m.embed(w) for w in held]))
    import ai_edge_litert
    import litert_torch

    info.update({"runtime": "ai-edge-litert", "weights": "per-tensor" if args.per_tensor else "per-channel",
                 "split_parts": args.split_parts, **corrected,
                 "litert_torch": getattr(litert_torch, "__version__", "?"),
                 "ai_edge_litert": getattr(ai_edge_litert, "__version__", "?"),
                 "torch": torch.__version__, "seconds": round(time.time() - t0, 1)})
    Path(args.report).write_text(json.dumps(info, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
