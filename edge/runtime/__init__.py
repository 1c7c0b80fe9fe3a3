"""Device-side CLEF runtime: numpy + a TFLite interpreter (or onnxruntime for ``.onnx``).

Self-contained on purpose: it imports nothing from clef_core, torch, scipy or wfdb and uses
only relative imports, so the folder can be copied alone onto a device under any package
name (``cp -r edge/runtime /device/clef_edge``; ``python -m clef_edge MODEL RECORD.npy --fs 250``).
"""

from .model import EdgeModel, ModelError, tflite_interpreter_class
from .inference import PREPROCESS_FILE, EdgePipeline
from .quality import SignalError
from .spec import PreprocessSpec, SpecError, load_spec, spec_from_dict
from .stream import Preprocessor, Window, iter_windows, windows_of

__all__ = [
    "PREPROCESS_FILE",
    "EdgeModel",
    "EdgePipeline",
    "ModelError",
    "PreprocessSpec",
    "Preprocessor",
    "SignalError",
    "SpecError",
    "Window",
    "iter_windows",
    "load_spec",
    "spec_from_dict",
    "tflite_interpreter_class",
    "windows_of",
]
