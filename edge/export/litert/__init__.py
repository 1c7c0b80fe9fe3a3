"""int8 ``.tflite`` conversion with litert-torch 0.10 PT2E (no TensorFlow).

Runs only in the separate export environment (litert-torch pulls numpy 2, jax, transformers:
``python3 -m venv .venv-export && .venv-export/bin/pip install "torch==2.13.0+cpu" litert-torch==0.10.0``);
``clef export`` calls :mod:`edge.export.litert.convert` there through a subprocess.
"""
