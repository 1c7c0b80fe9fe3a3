"""Edge export (``clef export``): float/int8 ONNX and full-integer int8 TFLite of a clef model,
``preprocess.json`` for the device, and a fidelity gate on held-out real windows (docs/edge.md).

Knows clef_core (encoders, checkpoints, records); the int8 TFLite step runs in the separate
export environment (edge/export/litert). The device side is edge/runtime, which knows only numpy.
"""
