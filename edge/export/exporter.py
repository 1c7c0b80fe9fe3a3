"""``clef export``: a clef model checkpoint -> float ONNX, int8 ONNX, int8 TFLite, preprocess.json
and export_report.json, with the int8 models gated on held-out real windows.

Flow (files in ``out_dir``):

1. ``preprocess.json`` from the checkpoint's preprocess section (edge/export/preprocess_json.py);
2. real windows from the calibration source, through the *device's* numpy preprocessing,
   split by record into calibration and held-out sets (edge/export/calibration.py);
3. ``model.onnx`` (legacy exporter) and ``model_int8.onnx`` (ORT static QDQ), in this process;
4. ``model_int8.tflite`` in the export venv (litert-torch PT2E; edge/export/litert/convert.py),
   run there by ai-edge-litert on the held-out windows, and, where the edge venv exists, by
   tflite-runtime 2.14 too;
5. the gate (edge/export/gate.py) against the float PyTorch encoder on the held-out windows.

A model that fails its gate is not left under its normal name: it is renamed
``model_int8.rejected.tflite`` (or ``.rejected.onnx``), the report says ``"gate": "fail"``
and ``clef export`` exits non-zero. The report's top-level ``size_kb``,
``centred_cosine_min``, ``rel_l2_error`` and ``gate`` describe ``model_int8.tflite``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clef_core.paths import shared_data_dir
from edge.export.calibration import real_windows, report_windows
from edge.export.gate import MAX_REL_L2, MIN_CENTRED_COSINE, fidelity
from edge.export.onnx_models import export_float_onnx, quantize_onnx_int8
from edge.export.preprocess_json import build_preprocess_json
from edge.runtime import EdgeModel, spec_from_dict

REPO = Path(__file__).resolve().parents[2]
REPORT_VERSION = 1
# what to run when an edge environment is missing: the Makefile's target (the README's setup), sizes as measured
EXPORT_VENV_CMD = (f"cd {REPO} && make setup-edge  (.venv-export, 2.2 GB: torch 2.13 CPU, litert-torch 0.10, "
                   f"tflite-micro; and .venv-edge, 0.1 GB)")
EDGE_VENV_CMD = f"cd {REPO} && make setup-edge  (.venv-edge, 0.1 GB: numpy<2, tflite-runtime 2.14)"


class ExportError(RuntimeError):
    """The export cannot proceed (missing environment, unreadable input); names the cause."""


def default_venv(name: str, env_var: str) -> Path:
    return Path(os.environ.get(env_var, REPO / name))


def default_calibration() -> Path:
    return shared_data_dir("ecg")


def default_report_data() -> Path | None:
    """MIT-BIH (../shared/data/mitdb) when present: Holter MLII at 360 Hz, unlike the 12-lead gate set."""
    path = shared_data_dir("mitdb")
    return path if path.is_dir() else None


@dataclass
class ExportOptions:
    calibration: Path | list[Path] | None = None  # one folder of WFDB records, or several
    leads: tuple[str, ...] = ("I", "II")
    per_tensor: bool = True  # 505 vs 607 KiB measured for the small encoder, same fidelity
    tflite: bool = True
    export_venv: Path = field(default_factory=lambda: default_venv(".venv-export", "CLEF_EXPORT_VENV"))
    edge_venv: Path = field(default_factory=lambda: default_venv(".venv-edge", "CLEF_EDGE_VENV"))
    seed: int = 0
    windows_per_record: int = 3
    cuts: int = 2
    float_tflite: bool = False  # also model_fp32.tflite (benchmarks)
    heads: tuple[str, ...] | None = None  # heads to ship (clef export --heads); None: all but synthetic-label ones
    force_heads: bool = False  # ship near-chance heads too, labelled as such (clef export --force-heads)
    split_parts: int = 1  # > 1: stem and first block's conv + Swish in channel slices (TFLM arena; exact)
    # report-only fidelity on other data (default MIT-BIH lead II), beside the gate; None skips it
    report_data: Path | None = field(default_factory=default_report_data)
    report_windows_per_record: int = 2
    timeout_s: float = 1800.0


SIGNAL_KEYS = ("sample_rate", "window_s", "bandpass_low", "bandpass_high", "filter_order")  # what a head's input depends on


def preprocess_mismatch(head_pre: dict | None, model_pre: dict) -> str | None:
    """Why a head fitted on windows made with ``head_pre`` (its meta ``preprocess``) cannot run on
    the device's windows (``model_pre``), or None (also when the head does not say)."""
    if not head_pre:
        return None
    diff = [f"{k} {head_pre[k]} (the model's {model_pre.get(k)})" for k in SIGNAL_KEYS
            if k in head_pre and head_pre[k] != model_pre.get(k)]
    return f"fitted on other preprocessing: {', '.join(diff)}" if diff else None


NEAR_CHANCE_AUROC = 0.6  # a head validated below this AUROC is near chance (refused unless forced)


def near_chance(meta: dict) -> str | None:
    """Why a head is near chance, or None: its validation AUROC (meta ``metric`` naming an AUROC,
    ``value``: for ``clef evaluate``'s cross-validated probes the pooled out-of-fold, record-grouped
    AUROC) is below ``NEAR_CHANCE_AUROC``. A head that records no AUROC is not judged."""
    metric, value = str(meta.get("metric") or ""), meta.get("value")
    if "auroc" in metric and isinstance(value, (int, float)) and value < NEAR_CHANCE_AUROC:
        return f"near chance: validation {metric} {value:.3f} < {NEAR_CHANCE_AUROC:g}"
    return None


def select_heads(heads: dict, leads: tuple[str, ...], names: tuple[str, ...] | None,
                 preprocess: dict | None = None, force: bool = False) -> tuple[dict, dict[str, str]]:
    """``(heads that ship, {dropped head: why})``. ``names`` (``clef export --heads``) chooses; by
    default every head ships except those fitted on synthetic labels. A head fitted on one lead
    (its meta ``lead``) ships only when that lead is exported: the device runs it on that lead only;
    a head whose meta ``preprocess`` differs from the model's ``preprocess`` does not ship; a head
    near chance (``near_chance``) ships only with ``force`` (``--force-heads``), labelled as such."""
    unknown = sorted(set(names or ()) - set(heads))
    if unknown:
        raise ExportError(f"--heads: no head {', '.join(unknown)} in the checkpoint (it has: "
                          f"{', '.join(heads) or 'none'})")
    kept, dropped = {}, {}
    for name, h in heads.items():
        lead = h.meta.get("lead")
        if names is not None and name not in names:
            dropped[name] = "not named in --heads"
        elif names is None and h.meta.get("task") == "synthetic":
            dropped[name] = "fitted on synthetic labels (name it in --heads to ship it)"
        elif lead and lead not in leads:
            dropped[name] = f"fitted on lead {lead}, which is not exported (--leads {','.join(leads)})"
        elif why := preprocess_mismatch(h.meta.get("preprocess"), preprocess or {}):
            dropped[name] = why
        elif (why := near_chance(h.meta)) and not force:
            dropped[name] = f"{why} (--force-heads ships it, labelled near chance)"
        else:
            kept[name] = h
    return kept, dropped


def heads_json(heads: dict) -> dict[str, dict[str, Any]]:
    """Linear heads as plain numbers for the device (activation from the head's meta, default
    sigmoid), with the lead and task they were fitted on, their validation metric and, for
    binary heads from ``clef evaluate``, their operating point (clef_core/evaluation/operating_point.py)."""
    out = {}
    for name, h in heads.items():
        lin = h.module
        entry = {"labels": list(h.labels), "weight": lin.weight.detach().double().tolist(),
                 "bias": lin.bias.detach().double().tolist(),
                 "activation": str(h.meta.get("activation", "sigmoid")), "lead": h.meta.get("lead")}
        for key in ("task", "metric", "value", "protocol", "operating_points", "preprocess"):
            if h.meta.get(key) is not None:
                entry[key] = h.meta[key]
        if why := near_chance(h.meta):
            entry["near_chance"] = why
        out[name] = entry
    return out


def torch_embed(encoder: torch.nn.Module, windows: np.ndarray, batch: int = 16) -> np.ndarray:
    encoder.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(windows), batch):
            out.append(encoder(torch.from_numpy(windows[i : i + batch, None, :].astype(np.float32))).numpy())
    return np.concatenate(out).astype(np.float64)


def model_embed(path: Path, windows: np.ndarray) -> np.ndarray:
    m = EdgeModel(path)
    return np.stack([m.embed(w) for w in windows]).astype(np.float64)


def kib(path: Path) -> float:
    return round(path.stat().st_size / 1024, 1)


def reject(path: Path) -> Path:
    """Move a model that failed its gate out of the way: ``x.tflite`` -> ``x.rejected.tflite``."""
    target = path.with_name(f"{path.stem}.rejected{path.suffix}")
    os.replace(path, target)
    return target


def run_litert_convert(checkpoint: Path, calibration: np.ndarray, heldout: np.ndarray, out: Path, opts: ExportOptions,
                       work: Path) -> dict:
    python = opts.export_venv / "bin" / "python"  # checked to exist by export_model
    np.save(work / "calibration.npy", calibration)
    np.save(work / "heldout.npy", heldout)
    cmd = [str(python), "-m", "edge.export.litert.convert", "--checkpoint", str(checkpoint),
           "--calibration", str(work / "calibration.npy"), "--heldout", str(work / "heldout.npy"),
           "--out", str(out), "--embeddings", str(work / "tflite_heldout.npy"), "--report", str(work / "tflite.json")]
    if opts.per_tensor:
        cmd.append("--per-tensor")
    if opts.split_parts > 1:
        cmd += ["--split-parts", str(opts.split_parts)]
    if opts.float_tflite:
        cmd += ["--float-out", str(out.with_name("model_fp32.tflite"))]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=opts.timeout_s)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        raise ExportError(f"litert conversion failed (exit {proc.returncode}):\n{tail}")
    info = json.loads((work / "tflite.json").read_text())
    info["heldout_embeddings"] = np.load(work / "tflite_heldout.npy")
    return info


def run_tflite_runtime(model: Path, windows: np.ndarray, opts: ExportOptions, work: Path) -> np.ndarray | None:
    """Embeddings of ``windows`` by tflite-runtime 2.14 in the edge venv (None if that venv is absent)."""
    python = opts.edge_venv / "bin" / "python"
    if not python.exists():
        return None
    np.save(work / "rt_windows.npy", windows)
    code = ("import sys, numpy as np; sys.path.insert(0, sys.argv[1]); from edge.runtime.model import EdgeModel; "
            "m = EdgeModel(sys.argv[2], runtime='tflite-runtime'); w = np.load(sys.argv[3]); "
            "np.save(sys.argv[4], np.stack([m.embed(x) for x in w]))")
    proc = subprocess.run([str(python), "-c", code, str(REPO), str(model), str(work / "rt_windows.npy"),
                           str(work / "rt_emb.npy")], capture_output=True, text=True, timeout=opts.timeout_s)
    if proc.returncode != 0:
        raise ExportError(f"tflite-runtime 2.14 cannot run {model.name}: {proc.stderr.strip().splitlines()[-1]}")
    return np.load(work / "rt_emb.npy").astype(np.float64)


def export_model(checkpoint: str | Path, out_dir: str | Path, opts: ExportOptions | None = None,
                 log=lambda msg: print(msg, file=sys.stderr)) -> dict[str, Any]:
    """Run the whole export; returns the report (also written as export_report.json)."""
    from clef_core.checkpoint import load_model

    opts = opts or ExportOptions()
    if opts.tflite and not (opts.export_venv / "bin" / "python").exists():  # fail before any work
        raise ExportError(f"no export venv at {opts.export_venv} (needed for model_int8.tflite); create it with: "
                          f"{EXPORT_VENV_CMD}  (or pass --no-tflite)")
    checkpoint, out_dir = Path(checkpoint), Path(out_dir)
    cal = opts.calibration or default_calibration()
    sources = [Path(x) for x in cal] if isinstance(cal, (list, tuple)) else [Path(cal)]
    for folder in sources:
        if not folder.is_dir():
            raise ExportError(f"{folder}: no such folder of WFDB records (--calibration)")
    source = sources[0] if len(sources) == 1 else sources
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    lm = load_model(checkpoint)
    encoder = lm.encoder.eval()
    shipped, dropped = select_heads(lm.heads, opts.leads, opts.heads, lm.preprocess, opts.force_heads)
    for name, why in dropped.items():
        log(f"clef export: head {name} not shipped: {why}")
    heads = heads_json(shipped)
    spec_dict = build_preprocess_json(lm.preprocess, leads=opts.leads, heads=heads)
    (out_dir / "preprocess.json").write_text(json.dumps(spec_dict, indent=1))
    spec = spec_from_dict(spec_dict)
    for name, head in spec.heads.items():
        log(f"clef export: ships {head.describe(name)}")
    log(f"clef export: windows from {', '.join(map(str, sources))} (leads {', '.join(opts.leads)}) through the device preprocessing")
    sets = real_windows(source, spec, leads=opts.leads, seed=opts.seed,
                        windows_per_record=opts.windows_per_record, cuts=opts.cuts)
    ref = torch_embed(encoder, sets.heldout)
    extra, extra_records = (report_windows(opts.report_data, spec, windows_per_record=opts.report_windows_per_record)
                            if opts.report_data else (np.zeros((0, sets.heldout.shape[1]), np.float32), []))
    extra_ref = torch_embed(encoder, extra) if len(extra) else None
    n_held = len(sets.heldout)
    report: dict[str, Any] = {
        "format": "clef-edge-export-report", "format_version": REPORT_VERSION,
        "checkpoint": str(checkpoint), "encoder": lm.encoder_config,
        "gate_thresholds": {"centred_cosine_min": MIN_CENTRED_COSINE, "rel_l2_error": MAX_REL_L2},
        "windows": sets.summary(), "models": {},
        "heads": {"shipped": {name: {k: v for k, v in h.items() if k not in ("weight", "bias")}
                              for name, h in heads.items()}, "dropped": dropped},
        "report_data": {"source": str(opts.report_data), "lead": "II", "windows": len(extra),
                        "records": extra_records} if len(extra) else None,
    }

    onnx_path = export_float_onnx(encoder, spec.window_samples, out_dir / "model.onnx")
    f_onnx = model_embed(onnx_path, sets.heldout)
    report["models"]["model.onnx"] = {"size_kb": kib(onnx_path), "max_abs_diff": float(np.abs(f_onnx - ref).max())}
    log(f"clef export: model.onnx {kib(onnx_path)} KiB, max |diff| to PyTorch {np.abs(f_onnx - ref).max():.2e}")

    q_onnx = quantize_onnx_int8(onnx_path, out_dir / "model_int8.onnx", sets.calibration)
    emb = model_embed(q_onnx, np.concatenate([sets.heldout, extra]))
    fid = fidelity(ref, emb[:n_held], heads)
    entry = {"size_kb": kib(q_onnx), **fid.to_dict(), "runtime": "onnxruntime"}
    if extra_ref is not None:
        entry["report_data_fidelity"] = fidelity(extra_ref, emb[n_held:], heads).to_dict()
    if fid.gate == "fail":
        entry["file"] = reject(q_onnx).name
    report["models"]["model_int8.onnx"] = entry
    log(f"clef export: model_int8.onnx {entry['size_kb']} KiB, centred cos {fid.centred_cosine_min:.4f}, "
        f"rel L2 {fid.rel_l2_error:.4f}: {fid.gate}")

    gate = "fail"
    if opts.tflite:
        tfl = out_dir / "model_int8.tflite"
        with tempfile.TemporaryDirectory() as tmp:
            both = np.concatenate([sets.heldout, extra])
            info = run_litert_convert(checkpoint, sets.calibration, both, tfl, opts, Path(tmp))
            emb = info.pop("heldout_embeddings")
            fid = fidelity(ref, emb[:n_held], heads)
            entry = {"size_kb": kib(tfl), **fid.to_dict(), "runtime": info.get("runtime", "ai-edge-litert"),
                     "conversion": info}
            report_fids = [fidelity(extra_ref, emb[n_held:], heads)] if extra_ref is not None else []
            rt = run_tflite_runtime(tfl, both, opts, Path(tmp))
            if rt is not None and extra_ref is not None:
                report_fids.append(fidelity(extra_ref, rt[n_held:], heads))
            if report_fids:  # report only: the worse runtime
                entry["report_data_fidelity"] = min(report_fids, key=lambda f: f.centred_cosine_min).to_dict()
            if rt is not None:  # the gate must hold in every runtime we can check: keep the worst
                rt = rt[:n_held]
                fid_rt = fidelity(ref, rt, heads)
                entry["tflite_runtime_2_14"] = fid_rt.to_dict()
                entry["centred_cosine_min"] = min(fid.centred_cosine_min, fid_rt.centred_cosine_min)
                entry["rel_l2_error"] = max(fid.rel_l2_error, fid_rt.rel_l2_error)
                if fid_rt.gate == "fail":
                    fid = fid_rt
            else:
                entry["tflite_runtime_2_14"] = f"not checked: no edge venv at {opts.edge_venv} ({EDGE_VENV_CMD})"
        entry["gate"] = gate = fid.gate
        if gate == "fail":
            entry["file"] = reject(tfl).name
        report["models"]["model_int8.tflite"] = entry
        report.update({"size_kb": entry["size_kb"], "centred_cosine_min": entry["centred_cosine_min"],
                       "rel_l2_error": entry["rel_l2_error"], "gate": gate})
        log(f"clef export: model_int8.tflite {entry['size_kb']} KiB, centred cos {entry['centred_cosine_min']:.4f}, "
            f"rel L2 {entry['rel_l2_error']:.4f}: {gate}")
        if "report_data_fidelity" in entry:
            r = entry["report_data_fidelity"]
            report["report_data"].update(centred_cosine_min=r["centred_cosine_min"], rel_l2_error=r["rel_l2_error"])
            log(f"clef export: on {r['n_windows']} {(opts.report_data or Path()).name} lead II windows (report only, not gated): "
                f"centred cos {r['centred_cosine_min']:.4f}, rel L2 {r['rel_l2_error']:.4f}")
    else:
        report.update({"size_kb": None, "centred_cosine_min": None, "rel_l2_error": None, "gate": "fail",
                       "note": "model_int8.tflite not built (--no-tflite)"})
    report["seconds"] = round(time.time() - t0, 1)
    (out_dir / "export_report.json").write_text(json.dumps(report, indent=1))
    return report
