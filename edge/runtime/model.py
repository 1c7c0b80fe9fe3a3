"""Run an exported encoder: ``.tflite`` through a TFLite interpreter, ``.onnx`` through onnxruntime.

Interpreter choice for ``.tflite`` (first that imports): ``tflite_runtime.interpreter``
(tflite-runtime 2.14: numpy < 2, Python <= 3.11) then ``ai_edge_litert.interpreter`` (its
successor). An int8 model in tflite-runtime runs on its XNNPACK delegate with the int8 kernels
switched on (edge/runtime/xnnpack.py; measured ~6x faster than the builtin int8 kernels and
faster than float, docs/edge.md); ``xnnpack_int8=False`` keeps the builtin kernels. For an int8-input model the float window is quantised with the input tensor's
own parameters, ``q = clip(round(x / scale) + zero_point, -128, 127)``, and an int8 output is
dequantised, ``e = scale * (q - zero_point)``: the caller always sees float32 embeddings.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np

from .xnnpack import qs8_delegate

TFLITE_MODULES = {"tflite-runtime": "tflite_runtime.interpreter", "ai-edge-litert": "ai_edge_litert.interpreter"}


class ModelError(RuntimeError):
    """The model file cannot be loaded or run; the message names the file."""


def tflite_interpreter_class(runtime: str | None = None) -> tuple[str, type]:
    """``(name, Interpreter)`` for ``runtime`` (a key of TFLITE_MODULES), or the first available."""
    names = [runtime] if runtime else list(TFLITE_MODULES)
    errors = []
    for name in names:
        if name not in TFLITE_MODULES:
            raise ModelError(f"unknown TFLite runtime {name!r} (choose from {', '.join(TFLITE_MODULES)})")
        try:
            return name, importlib.import_module(TFLITE_MODULES[name]).Interpreter
        except ImportError as exc:
            errors.append(f"{name}: {exc}")
    raise ModelError("no TFLite interpreter: pip install tflite-runtime==2.14.0 'numpy<2' (Python <= 3.11) "
                     f"or ai-edge-litert ({'; '.join(errors)})")


def quantize(x: np.ndarray, scale: float, zero_point: int, dtype: type) -> np.ndarray:
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale) + zero_point, info.min, info.max).astype(dtype)


class EdgeModel:
    """One encoder file; ``embed(window)`` maps a (T,) float window to a (D,) float32 embedding."""

    def __init__(self, path: str | Path, *, runtime: str | None = None, num_threads: int = 1,
                 xnnpack_int8: bool = True) -> None:
        self.path = Path(path)
        self.kernels = "default"  # or "xnnpack-int8": tflite-runtime's XNNPACK with int8 kernels on
        if not self.path.is_file():
            raise ModelError(f"{self.path}: no such model file")
        suffix = self.path.suffix.lower()
        if suffix == ".tflite":
            self._init_tflite(runtime, num_threads, xnnpack_int8)
        elif suffix == ".onnx":
            self._init_onnx(num_threads)
        else:
            raise ModelError(f"{self.path}: unknown model type {suffix!r} (expected .tflite or .onnx)")

    def _init_tflite(self, runtime: str | None, num_threads: int, xnnpack_int8: bool) -> None:
        self.runtime, interpreter_cls = tflite_interpreter_class(runtime)
        try:
            self._interp = interpreter_cls(model_path=str(self.path), num_threads=num_threads)
            if xnnpack_int8 and self.runtime == "tflite-runtime" and \
                    np.dtype(self._interp.get_input_details()[0]["dtype"]) == np.int8:
                self._interp = self._xnnpack_int8_interpreter(interpreter_cls, num_threads) or self._interp
            self._interp.allocate_tensors()
        except (RuntimeError, ValueError) as exc:
            raise ModelError(f"{self.path}: {self.runtime} cannot load it: {str(exc).strip().splitlines()[0]}") from exc
        inp = self._interp.get_input_details()[0]
        out = self._interp.get_output_details()[0]
        self._in_index, self._out_index = inp["index"], out["index"]
        self.input_shape = tuple(int(s) for s in inp["shape"])
        self.input_dtype = np.dtype(inp["dtype"])
        self.output_dtype = np.dtype(out["dtype"])
        self.input_quant = tuple(inp["quantization"]) if self.input_dtype.kind == "i" else None
        self.output_quant = tuple(out["quantization"]) if self.output_dtype.kind == "i" else None

    def _xnnpack_int8_interpreter(self, interpreter_cls: type, num_threads: int):
        """The interpreter with tflite-runtime's XNNPACK int8 kernels, or None where unavailable."""
        module = importlib.import_module(TFLITE_MODULES["tflite-runtime"])
        delegate = qs8_delegate(module, num_threads)
        if delegate is None:
            return None
        interp = interpreter_cls(model_path=str(self.path), num_threads=num_threads, experimental_delegates=[delegate],
                                 experimental_op_resolver_type=module.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        self.kernels = "xnnpack-int8"
        return interp

    def _init_onnx(self, num_threads: int) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise ModelError(f"{self.path}: onnxruntime is not installed (pip install onnxruntime)") from exc
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = num_threads
        opts.inter_op_num_threads = 1
        try:
            self._sess = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelError(f"{self.path}: onnxruntime cannot load it: {str(exc).strip().splitlines()[0]}") from exc
        self.runtime = "onnxruntime"
        inp = self._sess.get_inputs()[0]
        self._in_name = inp.name
        self.input_shape = tuple(int(s) if isinstance(s, int) else 1 for s in inp.shape)
        self.input_dtype = np.dtype(np.float32)
        self.input_quant = self.output_quant = None

    @property
    def input_samples(self) -> int:
        return int(np.prod(self.input_shape))

    @property
    def is_int8(self) -> bool:
        return self.input_quant is not None

    def embed(self, window: np.ndarray) -> np.ndarray:
        x = np.asarray(window, dtype=np.float32).reshape(-1)
        if x.size != self.input_samples:
            raise ModelError(f"{self.path}: window has {x.size} samples, the model takes {self.input_samples}")
        x = x.reshape(self.input_shape)
        if self.runtime == "onnxruntime":
            return self._sess.run(None, {self._in_name: x})[0].reshape(-1).astype(np.float32)
        if self.input_quant is not None:
            scale, zp = self.input_quant
            x = quantize(x, scale, zp, self.input_dtype.type)
        self._interp.set_tensor(self._in_index, x)
        self._interp.invoke()
        y = self._interp.get_tensor(self._out_index).reshape(-1)
        if self.output_quant is not None:
            scale, zp = self.output_quant
            return (scale * (y.astype(np.float32) - zp)).astype(np.float32)
        return y.astype(np.float32)
