"""Wearable student benchmark: TFLite Micro budget and downstream quality, student vs teacher.

    python benchmarks/bench_student.py [--teacher final_model.pt] [--teacher-steps 200]
        [--distill-cohort DIR] [--set distill.steps=600 ...] [--out benchmarks/results/student.md]

1. the teacher: ``--teacher``, else a small encoder pretrained here (``clef pretrain`` code) for
   ``--teacher-steps`` steps on the built-in synthetic cohort (seed 0);
2. the student: ``clef distill`` code ([distill], default tiny at 250 Hz) on ``--distill-cohort``
   (default: that same synthetic pretraining cohort; e.g. ../shared/data/mitdb for real ECG);
3. its export (edge/student: int8 TFLite, gate int8 vs float student) and the TFLM arena with the
   real interpreter (.venv-export); budgets arena <= 160 KiB, model <= 256 KiB;
4. quality with clef_core.evaluation (the ``clef evaluate`` protocol, each model on data prepared
   at its own rate): linear-probe mean AUROC over the synthetic labels (evaluation cohort, seed
   ``evaluate.synth_seed``, patient-grouped CV) and macro AUROC of the MIT-BIH AAMI beat task
   (MLII, records of DS1 present, cross-validated by record); target: student >= 90 % of teacher.

Prints the table and writes it (markdown) to ``--out``; the figures are whatever they are.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from clef_core.checkpoint import load_model  # noqa: E402
from clef_core.experiment import load_experiment  # noqa: E402
from clef_core.encoders import count_parameters  # noqa: E402

QUALITY_TARGET = 0.90


def conv_macs(encoder: torch.nn.Module, samples: int) -> int:
    """Multiply-accumulates of the convolutions and linear layers for one window (forward hooks)."""
    total = 0

    def hook(m, inp, out):
        nonlocal total
        if isinstance(m, torch.nn.Conv1d):
            total += out.numel() * (m.in_channels // m.groups) * m.kernel_size[0]
        elif isinstance(m, torch.nn.Linear):
            total += m.in_features * m.out_features

    hs = [m.register_forward_hook(hook) for m in encoder.modules() if isinstance(m, (torch.nn.Conv1d, torch.nn.Linear))]
    with torch.no_grad():
        encoder(torch.zeros(1, 1, samples))
    for h in hs:
        h.remove()
    return total


EDGE_RESULTS = Path(__file__).resolve().parent / "results" / "edge.md"


def small_encoder_figures(path: Path = EDGE_RESULTS) -> dict[str, str]:
    """The small (teacher-scale) encoder's int8 size, TFLM arena and gate as bench_edge.py last
    printed them (benchmarks/results/edge.md), cited with their source; "-" when absent."""
    text = path.read_text() if path.is_file() else ""
    src = f" ({path.parent.name}/{path.name})"
    size = re.search(r"\| tflite-runtime int8 \(model_int8\.tflite\)[^|]*\| ([\d.]+) \|[^|]*\| ([\d.]+) \| ([\d.]+) \|", text)
    arena = re.search(r"TFLite Micro arena: \*\*([\d.]+) KiB", text)
    return {"size_kb": size.group(1) + src if size else "-", "arena_kib": arena.group(1) + src if arena else "-",
            "gate": f"{float(size.group(2)):.3f} / {float(size.group(3)):.3f}{src}" if size else "-"}


def quality(model, cfg, settings, work: Path, eval_cohort: Path) -> dict:
    from clef_core.data.preprocess import PreprocessConfig
    from clef_core.evaluation.mitdb import DS1, resolve_records
    from clef_core.evaluation.run import evaluate_task
    from clef_core.paths import shared_data_dir
    from clef_core.evaluation.labelled_data import synthetic_site, with_model_preprocess
    from clef_core.evaluation.tasks import mitdb_task, synthetic_task

    cfg_m = with_model_preprocess(cfg, model.preprocess)
    rate = int(model.preprocess["sample_rate"])
    out: dict = {}
    site = synthetic_site(cfg_m, settings, work / f"eval_{rate}hz", eval_cohort)
    res = evaluate_task(model.encoder, synthetic_task(site, settings.lead), settings)
    out["synthetic"] = res.metrics.get("mean_auroc")
    out["synthetic_labels"] = {k: v.get("auroc") for k, v in res.metrics.get("labels", {}).items()}
    root = shared_data_dir("mitdb", settings.mitdb_dir)
    present = [n for n in DS1 if (root / f"{n}.hea").is_file()]
    if present:
        task = mitdb_task(resolve_records(present, root), None, PreprocessConfig.from_dict(model.preprocess),
                          settings.mitdb_beats_per_class, settings.seed)
        res = evaluate_task(model.encoder, task, settings)
        out["mitdb"] = res.metrics.get("macro_auroc")
        out["mitdb_classes"] = res.metrics.get("auroc")
        out["mitdb_beats"] = int(len(task))
    else:
        out["mitdb"] = None
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher", type=Path, help="teacher checkpoint (default: pretrain one here)")
    p.add_argument("--teacher-steps", type=int, default=200)
    p.add_argument("--distill-cohort", type=Path, help="unlabelled cohort for distillation (default: the synthetic one)")
    p.add_argument("--work", type=Path, help="working folder (default: a temporary one)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="config overrides")
    p.add_argument("--no-export", action="store_true", help="skip the int8 export and TFLM arena")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "student.md")
    a = p.parse_args()
    torch.set_num_threads(1)
    started = time.time()
    tmp = None if a.work else tempfile.TemporaryDirectory(prefix="bench_student_")
    work = a.work or Path(tmp.name)
    cfg = load_experiment(overrides=["train.batch_size=32", "train.lr=1e-3", "train.epochs=1000",
                                 f"train.max_steps={a.teacher_steps}", *a.set])

    from clef_core.distill import distill
    from clef_core.evaluation.labelled_data import with_model_preprocess
    from clef_core.prepared_site import default_cohort, prepare_site
    from clef_core.train import pretrain

    pre_cohort = None
    if a.teacher is None:
        pre_cohort = default_cohort(work / "pretrain", cfg)
        site = prepare_site(pre_cohort, work / "pretrain", cfg, progress=False)
        t0 = time.time()
        a.teacher = pretrain(cfg, run_dir=work / "teacher", site=site, progress=False).final_model
        print(f"teacher: pretrained {a.teacher_steps} steps in {time.time() - t0:.0f} s", file=sys.stderr)
    teacher = load_model(a.teacher)
    cfg = with_model_preprocess(cfg, teacher.preprocess)
    d_cohort = a.distill_cohort or pre_cohort or default_cohort(work / "pretrain", cfg)
    d_site = prepare_site(d_cohort, work / "distill_data", cfg, progress=False)
    result = distill(cfg, teacher_path=a.teacher, run_dir=work / "student", site=d_site, progress=False)
    print(f"student: distilled {result.steps} steps in {result.seconds:.0f} s, agreement {result.agreement}", file=sys.stderr)
    student = load_model(result.student)

    export = None
    if not a.no_export:
        from edge.export.exporter import ExportOptions
        from edge.student import export_student

        opts = ExportOptions()
        if (opts.export_venv / "bin" / "python").exists():
            export = export_student(result.student, work / "student", opts, log=lambda m: None)
        else:
            print(f"no export venv at {opts.export_venv}: size/arena left out", file=sys.stderr)

    settings = cfg.evaluate
    gen = cfg.replace(synth={"seed": settings.synth_seed})  # the evaluation cohort: other patients than pretraining's
    eval_cohort = default_cohort(work / "eval_cohort", gen)
    q_t = quality(teacher, cfg, settings, work, eval_cohort)
    q_s = quality(student, cfg, settings, work, eval_cohort)

    def ratio(key):
        return None if not q_t.get(key) or q_s.get(key) is None else q_s[key] / q_t[key]

    t_rate, s_rate = int(teacher.preprocess["sample_rate"]), int(student.preprocess["sample_rate"])
    s = (export or {}).get("student", {})
    small = small_encoder_figures()
    rows = [
        ("encoder", f"{teacher.encoder_config['scale']} @ {t_rate} Hz", f"{student.encoder_config['scale']} @ {s_rate} Hz", ""),
        ("parameters", f"{count_parameters(teacher.encoder):,}", f"{count_parameters(student.encoder):,}", ""),
        ("conv + linear MACs per 10 s window", f"{conv_macs(teacher.encoder, int(10 * t_rate)) / 1e6:.1f} M",
         f"{conv_macs(student.encoder, int(10 * s_rate)) / 1e6:.1f} M", ""),
        ("int8 .tflite KiB", small["size_kb"], f"{s.get('size_kb', '-')}", "<= 256"),
        ("TFLM arena KiB", small["arena_kib"], f"{s.get('arena_kib', '-')}", "<= 160"),
        ("int8 gate (centred cos min / rel L2)", small["gate"],
         f"{export['centred_cosine_min']:.4f} / {export['rel_l2_error']:.4f}: {export['gate']}" if export else "-",
         ">= 0.97 / <= 0.05"),
        ("synthetic labels, mean AUROC (probe)", f"{q_t['synthetic']:.3f}", f"{q_s['synthetic']:.3f}",
         f"ratio {ratio('synthetic'):.3f} (target >= {QUALITY_TARGET})"),
        ("MIT-BIH AAMI, macro AUROC (probe)", f"{q_t['mitdb']:.3f}" if q_t["mitdb"] is not None else "-",
         f"{q_s['mitdb']:.3f}" if q_s["mitdb"] is not None else "-",
         f"ratio {ratio('mitdb'):.3f} (target >= {QUALITY_TARGET})" if ratio("mitdb") is not None else "no data"),
    ]
    lines = ["| | teacher | student | target / ratio |", "|---|---|---|---|"]
    lines += [f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} |" for r in rows]
    detail = {"teacher": {"checkpoint": str(a.teacher), **q_t}, "student": q_s, "distill": result.agreement,
              "distill_steps": result.steps, "distill_cohort": str(d_cohort), "export": s}
    text = "\n".join([
        "# Wearable student: budget and quality vs teacher", "",
        f"Teacher {a.teacher} ({teacher.provenance.get('kind')}, {teacher.provenance.get('result')}); "
        f"student distilled {result.steps} steps on {d_cohort}; evaluation: synthetic cohort seed "
        f"{settings.synth_seed} (lead {settings.lead}, patient-grouped {settings.folds}-fold probe), MIT-BIH DS1 records "
        f"present ({q_t.get('mitdb_beats', 0)} beats, CV by record). One thread, 2 shared cores; total "
        f"{(time.time() - started) / 60:.1f} min.", "", *lines, "", "```json", json.dumps(detail, indent=1, default=str), "```", ""])
    print(text)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
