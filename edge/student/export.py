"""Export a distilled student (``student.pt``) and measure it in TensorFlow Lite Micro.

:func:`export_student` runs the normal export (edge/export/exporter.py: float and int8 ONNX,
full-integer int8 TFLite calibrated on real windows through the device preprocessing at the
student's rate, and the fidelity gate of the int8 student against the float student), renames
the models after the student (``student.onnx``, ``student_int8.onnx``, ``student_int8.tflite``;
a gate failure leaves ``student_int8.rejected.tflite``), then measures the smallest TFLM arena
with the real interpreter (benchmarks/tflm_arena.py: binary search over the arena size, one
window run) in the export venv, and adds a ``student`` section to ``export_report.json``:

    {"file", "size_kb", "arena_kib", "arena_bytes", "tflm_reference_ms", "gate",
     "budget": {"arena_kib": 160, "size_kb": 256}, "within_budget": bool}

Budgets (issue 8): a 256 KB-RAM wearable (e.g. nRF52840) keeps ~96 KiB for firmware and
buffers, so the arena may use 160 KiB; the model (flash) at most 256 KiB.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge.export.exporter import REPO, ExportError, ExportOptions, default_calibration, export_model

ARENA_BUDGET_KIB = 160.0
MODEL_BUDGET_KIB = 256.0
TFLM_SCRIPT = REPO / "benchmarks" / "tflm_arena.py"
RENAME = {"model.onnx": "student.onnx", "model_int8.onnx": "student_int8.onnx",
          "model_int8.tflite": "student_int8.tflite"}


def tflm_arena(model: Path, window: np.ndarray, export_venv: Path, timeout_s: float = 600.0) -> dict[str, Any]:
    """``{"arena_bytes", "arena_kib", "tflm_reference_ms"}`` of ``model`` run on ``window`` (float,
    preprocessed) by the TFLM interpreter of ``export_venv`` (its tflite-micro package)."""
    python = Path(export_venv) / "bin" / "python"
    if not python.exists():
        raise ExportError(f"no export venv at {export_venv}: the TFLM arena needs its tflite-micro package")
    with tempfile.TemporaryDirectory() as tmp:
        np.save(Path(tmp) / "window.npy", np.asarray(window, np.float32).reshape(-1))
        proc = subprocess.run([str(python), str(TFLM_SCRIPT), str(model), str(Path(tmp) / "window.npy")],
                              capture_output=True, text=True, timeout=timeout_s)
    lines = [line for line in proc.stdout.strip().splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines or "arena_bytes" not in json.loads(lines[-1]):
        detail = lines[-1] if lines else (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise ExportError(f"TFLM cannot run {model.name}: {detail}")
    return json.loads(lines[-1])


def rename_models(out_dir: Path, report: dict[str, Any]) -> None:
    """``model*.{onnx,tflite}`` -> ``student*.*`` (``.rejected`` forms too), in the folder and the report."""
    for old, new in RENAME.items():
        (stem_old, suffix), stem_new = old.rsplit(".", 1), new.rsplit(".", 1)[0]
        for a, b in ((old, new), (f"{stem_old}.rejected.{suffix}", f"{stem_new}.rejected.{suffix}")):
            if (out_dir / a).exists():
                os.replace(out_dir / a, out_dir / b)
        entry = report.get("models", {}).pop(old, None)
        if entry is not None:
            if "file" in entry:
                entry["file"] = entry["file"].replace(stem_old, stem_new, 1)
            report["models"][new] = entry


def heldout_window(spec_path: Path, source: Path | Sequence[Path]) -> np.ndarray:
    """One real window at the student's rate, through the device preprocessing of ``preprocess.json``."""
    from edge.export.calibration import real_windows
    from edge.runtime import spec_from_dict

    spec = spec_from_dict(json.loads(spec_path.read_text()))
    return real_windows(source, spec, windows_per_record=1, cuts=0).heldout[0]


def export_student(student: str | Path, out_dir: str | Path, opts: ExportOptions | None = None,
                   log=None) -> dict[str, Any]:
    """Export ``student`` into ``out_dir`` and measure its TFLM arena; returns (and writes) the report."""
    opts = opts or ExportOptions()
    out_dir = Path(out_dir)
    report = export_model(student, out_dir, opts, **({"log": log} if log else {}))
    rename_models(out_dir, report)
    tfl = out_dir / "student_int8.tflite"
    if not tfl.exists():
        tfl = out_dir / "student_int8.rejected.tflite"
    section: dict[str, Any] = {"file": tfl.name if tfl.exists() else None, "gate": report["gate"],
                               "budget": {"arena_kib": ARENA_BUDGET_KIB, "size_kb": MODEL_BUDGET_KIB}}
    if tfl.exists():
        window = heldout_window(out_dir / "preprocess.json", opts.calibration or default_calibration())
        tflm = tflm_arena(tfl, window, opts.export_venv)
        size = round(tfl.stat().st_size / 1024, 1)
        section.update(size_kb=size, **tflm,
                       within_budget=bool(tflm["arena_kib"] <= ARENA_BUDGET_KIB and size <= MODEL_BUDGET_KIB))
    else:
        section.update(within_budget=False, note="no int8 TFLite was built (--no-tflite)")
    report["student"] = section
    (out_dir / "export_report.json").write_text(json.dumps(report, indent=1))
    return report
