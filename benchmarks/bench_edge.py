"""Edge benchmark: size, latency per 10 s window (one thread), peak RAM of the device process,
TFLM arena and fidelity of every exported form of one encoder, side by side.

    python benchmarks/bench_edge.py [--checkpoint final_model.pt] [--out benchmarks/results/edge.md] [--auroc]

Without ``--checkpoint`` a small encoder with random weights (seed 0) is used: sizes, latencies
and the arena do not depend on training, but fidelity does, so pass a trained checkpoint for
the fidelity columns. Runtimes live in three environments (docs/edge.md): PyTorch and
onnxruntime here, tflite-runtime 2.14 in .venv-edge, ai-edge-litert and TFLite Micro in
.venv-export; a missing environment leaves its rows out with a note.
Windows: held-out real lead I/II windows of ../shared/data/ecg through the device preprocessing.
``--auroc`` adds the downstream AUROC change of model_int8.tflite against the float encoder
(benchmarks/edge_auroc.py: MIT-BIH AAMI beats, the ``clef evaluate`` probe on both embedding
sets; ``--auroc-synthetic`` also the synthetic-labels task), in every TFLite runtime present.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edge.export.exporter import ExportOptions, export_model, torch_embed  # noqa: E402
from edge.export.gate import fidelity  # noqa: E402

EDGE_PY = REPO / ".venv-edge" / "bin" / "python"
EXPORT_PY = REPO / ".venv-export" / "bin" / "python"


def random_checkpoint(path: Path) -> Path:
    from clef_core.checkpoint import save_model
    from clef_core.data.preprocess import PreprocessConfig
    from clef_core.encoders import build_encoder

    torch.manual_seed(0)
    save_model(path, build_encoder("small"), preprocess=PreprocessConfig().to_dict(), heads=None,
               provenance={"note": "random weights (bench_edge.py)"})
    return path


def latencies(python: Path, models: list[str], windows: Path, work: Path, runtime: str | None, repeats: int):
    """[(result, embeddings)] of ``models`` (paths, ``@builtin`` suffix allowed), timed round-robin in one
    process of ``python`` (edge_latency.py); (None, error) for all when the process fails."""
    out = work / f"lat_{runtime or 'default'}"
    out.mkdir(exist_ok=True)
    cmd = [str(python), str(REPO / "benchmarks" / "edge_latency.py"), str(windows), str(out), *models,
           "--repeats", str(repeats)] + (["--runtime", runtime] if runtime else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if proc.returncode != 0:
        err = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"
        return [(None, err) for _ in models]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    return [(r, np.load(out / f"emb_{i}.npy").astype(np.float64)) for i, r in enumerate(res)]


def device_peak_rss(model: Path, record: Path) -> tuple[float, float, int]:
    """Peak RSS (MiB) and wall time of the copied-alone runtime streaming ``record`` in .venv-edge."""
    with tempfile.TemporaryDirectory() as tmp:
        dev = Path(tmp)
        import shutil

        shutil.copytree(REPO / "edge" / "runtime", dev / "clef_edge", ignore=shutil.ignore_patterns("__pycache__"))
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        # VmHWM of the process's own address space, read by itself at exit (ru_maxrss of a
        # forked child would also count the parent's pages from before exec)
        code = ("import atexit, runpy, sys\n"
                "atexit.register(lambda: sys.stderr.write('VmHWM ' + open('/proc/self/status').read()"
                ".split('VmHWM:')[1].split()[0] + '\\n'))\n"
                f"sys.argv = ['clef_edge', {str(model)!r}, {str(record)!r}]\n"
                "runpy.run_module('clef_edge', run_name='__main__')\n")
        t = time.time()
        proc = subprocess.run([str(EDGE_PY), "-c", code], cwd=dev, env=env, capture_output=True, text=True)
        wall = time.time() - t
        hwm_kb = int(proc.stderr.split("VmHWM ")[-1].split()[0])
        return hwm_kb / 1024, wall, len(proc.stdout.splitlines())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint")
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    p.add_argument("--repeats", type=int, default=100)
    p.add_argument("--split-parts", type=int, default=1,
                   help="clef export --split-parts: stem/first-block conv + Swish in N slices (TFLM arena)")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "edge.md"))
    p.add_argument("--auroc", action="store_true", help="also the downstream AUROC change int8 vs float (edge_auroc.py)")
    p.add_argument("--auroc-synthetic", action="store_true", help="with --auroc: also the synthetic-labels task")
    a = p.parse_args()
    torch.set_num_threads(1)
    data = Path(a.data)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        ckpt = Path(a.checkpoint) if a.checkpoint else random_checkpoint(work / "random_small.pt")
        out = work / "export"
        t = time.time()
        report = export_model(ckpt, out, ExportOptions(calibration=data / "ecg", float_tflite=True,
                                                                    split_parts=a.split_parts), log=lambda m: None)
        export_s = time.time() - t
        tfl = next((out / n for n in ("model_int8.tflite", "model_int8.rejected.tflite") if (out / n).exists()), None)
        q_onnx = next(out / n for n in ("model_int8.onnx", "model_int8.rejected.onnx") if (out / n).exists())

        from clef_core.checkpoint import load_model
        from edge.export.calibration import real_windows
        from edge.runtime import load_spec

        spec = load_spec(out / "preprocess.json")
        held = real_windows(data / "ecg", spec).heldout
        np.save(work / "held.npy", held)
        enc = load_model(ckpt).encoder.eval()
        ref = torch_embed(enc, held)
        times = []
        with torch.no_grad():
            for i in range(a.repeats):
                x = torch.from_numpy(held[i % len(held)][None, None])
                t = time.perf_counter()
                enc(x)
                times.append((time.perf_counter() - t) * 1e3)
        rows = [("PyTorch eager fp32 (final_model.pt)", ckpt.stat().st_size / 1024, float(np.median(times)), None)]
        # (python, runtime, [(model spec, label)]): each group timed round-robin in one process
        groups = [(Path(sys.executable), None, [(str(out / "model.onnx"), "onnxruntime fp32 (model.onnx)"),
                                                (str(q_onnx), f"onnxruntime int8 QDQ ({q_onnx.name})")])]
        notes = []
        for py, name in ((EDGE_PY, "tflite-runtime"), (EXPORT_PY, "ai-edge-litert")):
            if not py.exists():
                notes.append(f"{name}: environment {py.parent.parent} absent")
                continue
            specs = []
            if (out / "model_fp32.tflite").exists():
                specs.append((str(out / "model_fp32.tflite"), f"{name} fp32 (model_fp32.tflite)"))
            if tfl and name == "tflite-runtime":
                specs += [(str(tfl), f"{name} int8 ({tfl.name}), XNNPACK int8 kernels (the runtime's default)"),
                          (f"{tfl}@builtin", f"{name} int8 ({tfl.name}), builtin int8 kernels")]
            elif tfl:
                specs.append((str(tfl), f"{name} int8 ({tfl.name})"))
            groups.append((py, name, specs))
        ms: dict[str, float] = {}
        for py, runtime, specs in groups:
            for (spec, label), (res, emb) in zip(specs, latencies(py, [s for s, _ in specs], work / "held.npy", work,
                                                                  runtime, a.repeats)):
                if res is None:
                    notes.append(f"{label}: {emb}")
                    continue
                ms[label] = res["median_ms"]
                rows.append((label, Path(spec.partition("@")[0]).stat().st_size / 1024, res["median_ms"],
                             fidelity(ref, emb)))
        ratios = []
        for name in ("tflite-runtime", "ai-edge-litert", "onnxruntime"):
            fp32 = next((v for k, v in ms.items() if k.startswith(name) and " fp32 " in k), None)
            for k, v in ms.items():
                if fp32 and k.startswith(name) and " int8 " in k:
                    ratios.append(f"{k}: **{v / fp32:.2f}x** its fp32")
        arena = None
        if tfl and EXPORT_PY.exists():
            np.save(work / "w0.npy", held[0])
            proc = subprocess.run([str(EXPORT_PY), str(REPO / "benchmarks" / "tflm_arena.py"), str(tfl), str(work / "w0.npy")],
                                  capture_output=True, text=True)
            arena = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 else None
        rss = device_peak_rss(tfl, data / "mitdb" / "101") if tfl and EDGE_PY.exists() else None
        auroc_lines = []
        if a.auroc:
            sys.path.insert(0, str(REPO / "benchmarks"))
            from edge_auroc import RUNTIME_PY, markdown, measure

            present = [rt for rt, py in RUNTIME_PY.items() if py.exists()]
            if tfl and present:
                res = measure(ckpt, out, data=data, runtimes=present, synthetic=a.auroc_synthetic, work=work,
                              log=lambda m: None)
                auroc_lines = ["", *markdown(res)]
            else:
                notes.append("downstream AUROC: no int8 TFLite model or no TFLite runtime environment")

    lines = [
        "# Edge benchmark (benchmarks/bench_edge.py)", "",
        f"Checkpoint: `{a.checkpoint or 'random weights, seed 0 (fidelity not meaningful for a trained model)'}`; "
        f"host: {os.cpu_count()} cores (shared with other jobs: absolute times are noisy, ratios within one "
        f"process are not), one thread per runtime, batch 1, median of {a.repeats} windows; "
        f"fidelity on {len(held)} held-out real lead I/II windows against PyTorch fp32.", "",
        "| model / runtime | size KiB | ms per 10 s window | centred cos min | rel L2 | cos min |",
        "|---|---|---|---|---|---|",
    ]
    for label, kib, ms, fid in rows:
        f = f"{fid.centred_cosine_min:.4f} | {fid.rel_l2_error:.4f} | {fid.cosine_min:.4f}" if fid else "(reference) | | "
        lines.append(f"| {label} | {kib:.1f} | {ms:.2f} | {f} |")
    lines += ["", "int8 latency against the same runtime's fp32, timed round-robin in one process per runtime "
              "(target for tflite-runtime: <= 2x):", *[f"- {r}" for r in ratios]]
    lines += ["", f"Gate (model_int8.tflite): **{report['gate']}** (centred cos >= 0.97, rel L2 <= 0.05); "
              f"export took {export_s:.0f} s."]
    rd = report.get("report_data")
    if rd:
        fids = {name: m["report_data_fidelity"] for name, m in report["models"].items() if "report_data_fidelity" in m}
        lines.append(f"Report-only fidelity on {rd['windows']} MIT-BIH lead II windows ({len(rd['records'])} records, "
                     f"Holter 360 Hz, not the gate's 12-lead set; worse runtime): " + "; ".join(
                         f"{n} centred cos min {f['centred_cosine_min']:.4f}, rel L2 {f['rel_l2_error']:.4f}"
                         for n, f in fids.items()) + ".")
    if arena:
        lines.append(f"TFLite Micro arena: **{arena['arena_kib']} KiB** ({arena['arena_bytes']} B); "
                     f"reference kernels {arena['tflm_reference_ms']} ms/window on this x86 (not MCU-representative).")
    if rss:
        lines.append(f"Device process (runtime copied alone, tflite-runtime 2.14, numpy<2) streaming MIT-BIH 101 "
                     f"(30 min, 360 Hz, {rss[2]} windows): peak RSS {rss[0]:.1f} MiB, {rss[1]:.1f} s wall.")
    lines += [f"- {n}" for n in notes]
    lines += auroc_lines
    text = "\n".join(lines) + "\n"
    print(text)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
