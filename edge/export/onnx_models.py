"""Float ONNX and int8 (QDQ) ONNX of an encoder, measured facts in edge-net1d-notes.md section 8.

* Float: the legacy TorchScript exporter (``dynamo=False``, opset 17) of the unmodified 1-D
  model; its graph carries shape arithmetic from the traced 'same' padding, which
  ``quant_pre_process`` folds before quantisation.
* Int8: ``onnxruntime.quantization.quantize_static`` in QDQ format, uint8 activations, int8
  per-channel weights, ``reduce_range=True`` (7-bit weights: mandatory on x86 CPUs without
  VNNI, where the fused u8s8 kernels saturate; without it the centred cosine collapsed to 0.15)
  and Percentile (99.999) calibration, which matched the int8 TFLite fidelity where MinMax was
  clearly worse.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

INPUT_NAME, OUTPUT_NAME = "ecg", "embedding"


def export_float_onnx(encoder: torch.nn.Module, window_samples: int, path: Path) -> Path:
    encoder = encoder.eval()
    x = torch.zeros(1, 1, window_samples)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # legacy-exporter deprecation and constant-folding notes
        torch.onnx.export(encoder, (x,), str(path), dynamo=False, opset_version=17,
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME])
    return path


class _Reader:
    """onnxruntime CalibrationDataReader over (n, T) windows, one (1, 1, T) batch at a time."""

    def __init__(self, windows: np.ndarray) -> None:
        self._it = iter(windows)

    def get_next(self):
        w = next(self._it, None)
        return None if w is None else {INPUT_NAME: w.reshape(1, 1, -1).astype(np.float32)}


def quantize_onnx_int8(float_path: Path, out_path: Path, calibration: np.ndarray) -> Path:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(float_path), str(pre), skip_symbolic_shape=True)
        quantize_static(
            str(pre), str(out_path), _Reader(calibration),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
            reduce_range=True,
            calibrate_method=CalibrationMethod.Percentile,
            extra_options={"CalibPercentile": 99.999},
        )
    return out_path
