"""Downstream AUROC of the int8 TFLite encoder against the float PyTorch encoder (issue 8).

    python benchmarks/edge_auroc.py [--checkpoint final_model.pt] [--export DIR] [--runtime ai-edge-litert]
                                    [--synthetic] [--out FILE]

The same windows are embedded twice: (a) by the float encoder of the checkpoint
(clef_core.evaluation.embed, as ``clef evaluate`` does) and (b) by ``model_int8.tflite`` through
the device runtime's ``EdgeModel.embed`` (int8 input quantisation ``q = clip(round(x / s) + zp)``
and output dequantisation exactly as on the device), run by benchmarks/edge_latency.py in the
environment that has the interpreter (ai-edge-litert: .venv-export; tflite-runtime: .venv-edge).
Both embedding sets are then scored by the identical ``clef evaluate`` probe protocol
(clef_core.evaluation.protocol: same record-grouped folds, seed, L2 and class weights):

* ``mitdb``: MIT-BIH AAMI beat windows (MLII) centred on the annotated beats, at most
  ``evaluate.mitdb_beats_per_class`` per record and class, cross-validated by record; macro
  one-vs-rest AUROC and per class;
* ``synthetic`` (``--synthetic``): the built-in evaluation cohort's labels (lead I), mean AUROC.

Target: |AUROC(int8) - AUROC(float)| <= 0.01. Without ``--checkpoint`` a small encoder is
pretrained here (``--pretrain-steps`` on the MIT-BIH records, unlabelled) as for docs/edge.md;
without ``--export`` the checkpoint is exported (int8 TFLite included) into a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TARGET = 0.01
RUNTIME_PY = {"ai-edge-litert": REPO / ".venv-export" / "bin" / "python",
              "tflite-runtime": REPO / ".venv-edge" / "bin" / "python"}


def int8_embeddings(model: Path, windows: np.ndarray, runtime: str, work: Path) -> np.ndarray:
    """Embeddings of ``windows`` (N, T) by ``model`` through edge.runtime.EdgeModel in ``runtime``'s venv."""
    py = RUNTIME_PY[runtime]
    if not py.exists():
        raise FileNotFoundError(f"{runtime}: environment {py.parent.parent} absent (docs/edge.md, section 1)")
    src, out = work / "auroc_windows.npy", work / f"auroc_emb_{runtime}"
    out.mkdir(parents=True, exist_ok=True)
    np.save(src, np.ascontiguousarray(windows, np.float32))
    proc = subprocess.run([str(py), str(REPO / "benchmarks" / "edge_latency.py"), str(src), str(out), str(model),
                           "--runtime", runtime, "--repeats", "1"],
                          capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if proc.returncode != 0:
        raise RuntimeError(f"{runtime} on {model}: {proc.stderr.strip()[-2000:]}")
    return np.load(out / "emb_0.npy")


def probe_metrics(features: np.ndarray, task: Any, settings: Any) -> dict[str, Any]:
    """The probe branch of clef_core.evaluation.run.evaluate_task (cross-validated) on given features."""
    from clef_core.evaluation.protocol import oof_decisions, score
    from clef_core.evaluation.run import _subset, usable_labels

    cols, _ = usable_labels(task, settings.min_per_class)
    task = _subset(task, cols)
    class_weight = "balanced" if task.kind == "multiclass" else None
    decision = oof_decisions(np.asarray(features, np.float64), task.y, task.kind, task.labels, task.groups,
                             folds=settings.folds, seed=settings.seed, l2=settings.probe_l2, class_weight=class_weight)
    return score(task.kind, task.labels, task.y, decision, min_per_class=settings.min_per_class)


def per_label(kind: str, metrics: dict[str, Any]) -> tuple[float, dict[str, float]]:
    if kind == "multiclass":
        return metrics["macro_auroc"], dict(metrics["auroc"])
    return metrics["mean_auroc"], {k: v.get("auroc", math.nan) for k, v in metrics["labels"].items()}


def pretrain_small(work: Path, data: Path, steps: int) -> Path:
    """A small encoder pretrained ``steps`` steps on the MIT-BIH records (unlabelled, batch 16, lr 1e-3)."""
    from clef_core.experiment import load_experiment
    from clef_core.prepared_site import prepare_site
    from clef_core.train import pretrain

    cfg = load_experiment(overrides=["train.batch_size=16", "train.lr=1e-3", "train.epochs=100000",
                                 f"train.max_steps={steps}"])
    site = prepare_site(data / "mitdb", work / "pretrain", cfg, progress=False)
    return Path(pretrain(cfg, run_dir=work / "pretrain_run", site=site, progress=False).final_model)


def measure(checkpoint: Path, export_dir: Path, *, data: Path, runtimes: list[str], synthetic: bool,
            work: Path, log=print) -> dict[str, Any]:
    """Float vs int8 probe AUROC per task and runtime; see the module docstring."""
    from clef_core.checkpoint import load_model
    from clef_core.data.preprocess import PreprocessConfig, zscore
    from clef_core.evaluation.embed import embed
    from clef_core.evaluation.mitdb import DS1, resolve_records
    from clef_core.evaluation.labelled_data import synthetic_site, with_model_preprocess
    from clef_core.experiment import load_experiment
    from clef_core.evaluation.tasks import mitdb_task, synthetic_task
    from edge.export.gate import fidelity

    tfl = export_dir / "model_int8.tflite"
    if not tfl.exists():
        rejected = export_dir / "model_int8.rejected.tflite"
        if not rejected.exists():
            raise FileNotFoundError(f"{export_dir}: no model_int8.tflite")
        tfl = rejected
    model = load_model(checkpoint)
    cfg = with_model_preprocess(load_experiment(), model.preprocess)
    settings = cfg.evaluate
    tasks = []
    mitdb = data / "mitdb"
    present = [r for r in DS1 if (mitdb / f"{r}.hea").exists()]
    if present:
        tasks.append(mitdb_task(resolve_records(present, mitdb), None, PreprocessConfig.from_dict(model.preprocess),
                                settings.mitdb_beats_per_class, settings.seed))
    if synthetic:
        site = synthetic_site(cfg, settings, work / "eval", None)
        tasks.append(synthetic_task(site, settings.lead))
    out: dict[str, Any] = {"checkpoint": str(checkpoint), "model": str(tfl), "settings": {
        "folds": settings.folds, "seed": settings.seed, "probe_l2": settings.probe_l2,
        "mitdb_beats_per_class": settings.mitdb_beats_per_class, "synthetic_lead": settings.lead}, "tasks": {}}
    for task in tasks:
        t0 = time.time()
        emb_f = embed(model.encoder, task.x, settings.batch_size)
        # exactly what embed() fed the float encoder: the z-scored window
        x_dev = zscore(np.asarray(task.x, np.float32)).astype(np.float32)
        res_f = probe_metrics(emb_f, task, settings)
        f_val, f_per = per_label(task.kind, res_f)
        entry = {"kind": task.kind, "n": int(len(task)), "groups": int(len(np.unique(task.groups))),
                 "float": {"auroc": f_val, "per_label": f_per}, "int8": {}}
        if task.kind == "multiclass":
            entry["class_counts"] = task.info.get("class_counts")
        for rt in runtimes:
            emb_q = int8_embeddings(tfl, x_dev, rt, work)
            q_val, q_per = per_label(task.kind, probe_metrics(emb_q, task, settings))
            fid = fidelity(emb_f.astype(np.float64), emb_q.astype(np.float64))
            entry["int8"][rt] = {"auroc": q_val, "per_label": q_per, "change": q_val - f_val,
                                 "change_per_label": {k: q_per[k] - f_per[k] for k in f_per},
                                 "ratio_to_target": abs(q_val - f_val) / TARGET,
                                 "centred_cosine_min": fid.centred_cosine_min, "rel_l2_error": fid.rel_l2_error}
        entry["seconds"] = round(time.time() - t0, 1)
        out["tasks"][task.name] = entry
        log(f"{task.name}: {json.dumps({k: entry[k] for k in ('n', 'seconds')})}")
    return out


def markdown(res: dict[str, Any]) -> list[str]:
    s = res["settings"]
    lines = ["## Downstream AUROC, int8 TFLite vs float (benchmarks/edge_auroc.py)", "",
             f"Model `{Path(res['model']).name}` of checkpoint `{res['checkpoint']}`, run through the device runtime's "
             f"EdgeModel (int8 input quantisation as on the device). Same windows and the `clef evaluate` linear probe "
             f"on both embedding sets: {s['folds']}-fold grouped CV, seed {s['seed']}, L2 {s['probe_l2']:g}. "
             f"Target |change| <= {TARGET}.", "",
             "| task | runtime | windows (groups) | AUROC float | AUROC int8 | change | abs(change) / 0.01 | per class / label: float -> int8 (change) | centred cos min | rel L2 |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, e in res["tasks"].items():
        metric = "macro" if e["kind"] == "multiclass" else "mean"
        for rt, q in e["int8"].items():
            per = ", ".join(f"{k} {e['float']['per_label'][k]:.3f} -> {q['per_label'][k]:.3f} ({q['change_per_label'][k]:+.4f})"
                            for k in e["float"]["per_label"])
            lines.append(f"| {name} ({metric}) | {rt} | {e['n']} ({e['groups']}) | {e['float']['auroc']:.4f} | "
                         f"{q['auroc']:.4f} | **{q['change']:+.4f}** | {q['ratio_to_target']:.2f} | {per} | "
                         f"{q['centred_cosine_min']:.4f} | {q['rel_l2_error']:.4f} |")
    worst = max((abs(q["change"]) for e in res["tasks"].values() for q in e["int8"].values()), default=math.nan)
    worst_label = max((abs(c) for e in res["tasks"].values() for q in e["int8"].values()
                       for c in q["change_per_label"].values() if not math.isnan(c)), default=math.nan)
    lines += ["", f"Largest |change| of a headline AUROC: **{worst:.4f}** "
              f"({'within' if worst <= TARGET else 'OUTSIDE'} the {TARGET} target); largest |change| of a single "
              f"class / label: {worst_label:.4f}. Centred cosine / rel L2: int8 vs float embeddings of these windows "
              f"(the export gate measures them on other windows)."]
    if "mitdb" in res["tasks"]:
        lines.append(f"MIT-BIH: DS1 records present, MLII beat-centred windows, at most {s['mitdb_beats_per_class']} "
                     f"per record and class, CV by record; class counts {res['tasks']['mitdb'].get('class_counts')}.")
    return lines


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", type=Path, help="default: pretrain a small encoder here")
    p.add_argument("--pretrain-steps", type=int, default=300)
    p.add_argument("--export", type=Path, help="an existing `clef export` folder of this checkpoint (default: export now)")
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    p.add_argument("--runtime", default="ai-edge-litert", help="comma list of: " + ", ".join(RUNTIME_PY))
    p.add_argument("--synthetic", action="store_true", help="also the synthetic-labels task (generates its cohort)")
    p.add_argument("--json", type=Path, help="write the full results here")
    p.add_argument("--out", type=Path, help="write the markdown section here")
    a = p.parse_args()
    torch.set_num_threads(1)
    runtimes = [r.strip() for r in a.runtime.split(",") if r.strip()]
    for r in runtimes:
        if r not in RUNTIME_PY:
            p.error(f"unknown runtime {r!r}")
    with tempfile.TemporaryDirectory(prefix="edge_auroc_") as tmp:
        work = Path(tmp)
        ckpt = a.checkpoint or pretrain_small(work, a.data, a.pretrain_steps)
        export_dir = a.export
        if export_dir is None:
            from edge.export.exporter import ExportOptions, export_model

            export_dir = work / "export"
            export_model(ckpt, export_dir, ExportOptions(calibration=a.data / "ecg"), log=lambda m: None)
        res = measure(ckpt, export_dir, data=a.data, runtimes=runtimes, synthetic=a.synthetic, work=work,
                      log=lambda m: print(m, file=sys.stderr))
    text = "\n".join(markdown(res)) + "\n"
    print(text)
    if a.out:
        a.out.write_text(text)
    if a.json:
        a.json.write_text(json.dumps(res, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
