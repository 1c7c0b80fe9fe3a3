"""tflite-runtime 2.14's own XNNPACK delegate with its int8 (QS8) kernels switched on.

The 2.14 wheel applies XNNPACK by default with ``flags = 0``, i.e. float32 only, so an int8
model runs on the builtin kernels: grouped int8 convs in a reference loop, ~6x slower than the
same model in float (measured: docs/edge.md). The wheel's extension library exports the XNNPACK
C API (``TfLiteXNNPackDelegateOptionsDefault`` / ``Create`` / ``Delete``), so the runtime creates
the delegate itself with ``TFLITE_XNNPACK_DELEGATE_FLAG_QS8`` (xnnpack_delegate.h) and hands it
to the interpreter, through ctypes (standard library): no other package, the same file.

Only the first two option fields are set (``int32 num_threads``, ``uint32 flags``, stable
across TFLite versions); the rest keep the library's defaults. Where the symbols are missing
(another build), :func:`qs8_delegate` returns None and the builtin kernels run as before.
"""

from __future__ import annotations

import ctypes
from pathlib import Path
from typing import Any

FLAG_QS8 = 0x1  # TFLITE_XNNPACK_DELEGATE_FLAG_QS8


class _Options(ctypes.Structure):
    # num_threads, flags, then the rest of TfLiteXNNPackDelegateOptions, filled by the library's
    # defaults: room for more fields than any known version has (the callee writes its own size)
    _fields_ = [("num_threads", ctypes.c_int32), ("flags", ctypes.c_uint32), ("rest", ctypes.c_char * 120)]


class XNNPackDelegate:
    """Owns one native delegate; the interpreter holds it (``experimental_delegates``) and, being
    destroyed first (tflite-runtime's Interpreter.__del__), outlives its use."""

    def __init__(self, lib: ctypes.CDLL, num_threads: int, flags: int) -> None:
        self._lib = lib
        opts = lib.TfLiteXNNPackDelegateOptionsDefault()
        opts.num_threads, opts.flags = int(num_threads), opts.flags | flags
        self._ptr = lib.TfLiteXNNPackDelegateCreate(ctypes.byref(opts))
        if not self._ptr:
            raise OSError("TfLiteXNNPackDelegateCreate returned NULL")

    def _get_native_delegate_pointer(self) -> int:  # the interface tflite-runtime expects
        return self._ptr

    def __del__(self) -> None:
        if getattr(self, "_ptr", None):
            self._lib.TfLiteXNNPackDelegateDelete(ctypes.c_void_p(self._ptr))
            self._ptr = None


def _library(module: Any) -> ctypes.CDLL | None:
    """The extension library of a tflite_runtime.interpreter module, with the XNNPACK symbols typed."""
    found = sorted(Path(module.__file__).parent.glob("_pywrap_tensorflow_interpreter_wrapper*.so"))
    if not found:
        return None
    try:
        lib = ctypes.PyDLL(str(found[0]))
        lib.TfLiteXNNPackDelegateOptionsDefault.restype = _Options
        lib.TfLiteXNNPackDelegateCreate.restype = ctypes.c_void_p
        lib.TfLiteXNNPackDelegateCreate.argtypes = [ctypes.POINTER(_Options)]
        lib.TfLiteXNNPackDelegateDelete.argtypes = [ctypes.c_void_p]
    except (OSError, AttributeError):
        return None
    return lib


def qs8_delegate(module: Any, num_threads: int) -> XNNPackDelegate | None:
    """An XNNPACK delegate with int8 kernels from ``module``'s own library, or None if unavailable."""
    lib = _library(module)
    if lib is None:
        return None
    try:
        return XNNPackDelegate(lib, num_threads, FLAG_QS8)
    except OSError:
        return None
