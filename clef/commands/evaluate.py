"""`clef evaluate`: score a model checkpoint on downstream tasks and on evidence in its embedding."""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
from pathlib import Path
from typing import Any

from clef.cli import add_config_arguments, config_from_args

NAME = "evaluate"
HELP = "linear-probe / fine-tune a checkpoint on the synthetic, SNOMED and MIT-BIH (beats, AF) tasks; embedding evidence"
TASKS = ("synthetic", "snomed", "mitdb", "mitdb_af", "evidence")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", metavar="CHECKPOINT", type=Path, help="a clef model file (e.g. RUN_DIR/final_model.pt)")
    add_config_arguments(parser)
    parser.add_argument("--task", default="all", help=f"one of {', '.join(TASKS)}, a comma list, or all (default)")
    parser.add_argument("--cohort", metavar="DIR", type=Path,
                        help="labelled synthetic cohort for the synthetic/evidence tasks (default: generate [synth] "
                             "with evaluate.synth_seed)")
    parser.add_argument("--train", metavar="RECORDS", help="MIT-BIH training records: DS1, names (101,106) or paths (default DS1)")
    parser.add_argument("--test", metavar="RECORDS", help="MIT-BIH test records, e.g. DS2 (default: cross-validate the training records by record)")
    parser.add_argument("--lead", help="I | II | I,II (default evaluate.lead); MIT-BIH always uses MLII")
    parser.add_argument("--mode", choices=("probe", "finetune"), help="default evaluate.mode")
    parser.add_argument("--out", metavar="DIR", type=Path, required=True, help="results.json, PNGs, model with heads")
    parser.add_argument("--work", metavar="DIR", type=Path, help="where evaluation data is cached (default: OUT/data)")
    parser.add_argument("--heads", choices=("copy", "inplace", "none"), default="copy",
                        help="store the trained heads in OUT/model.pt (copy, default), in CHECKPOINT itself, or nowhere")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _tasks(spec: str) -> list[str]:
    names = list(TASKS) if spec == "all" else [t.strip() for t in spec.split(",") if t.strip()]
    bad = [t for t in names if t not in TASKS]
    if bad or not names:
        raise ValueError(f"unknown task(s) {bad or spec!r} (choose from {', '.join(TASKS)} or all)")
    return names


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    import dataclasses

    import torch

    from clef_core.checkpoint import CheckpointError, add_head, head_entry, load_model, save_model
    from clef_core.data.preprocess import PreprocessConfig
    from clef_core.evaluation.mitdb import DS1, resolve_records
    from clef_core.evaluation.run import EvalSettings, evaluate_evidence, evaluate_task
    from clef_core.paths import shared_data_dir
    from clef_core.evaluation.sites import snomed_site, synthetic_site, with_model_preprocess
    from clef_core.evaluation.tasks import evidence_inputs, mitdb_af_task, mitdb_task, snomed_tasks, synthetic_task

    try:
        tasks = _tasks(args.task)
        overrides = {k: v for k, v in (("lead", args.lead), ("mode", args.mode)) if v}
        settings = EvalSettings(**{**cfg["evaluate"], **overrides})
        leads = [lead.strip() for lead in settings.lead.split(",") if lead.strip()]
        model = load_model(args.checkpoint)
    except (CheckpointError, ValueError, FileNotFoundError) as exc:
        print(f"clef evaluate: {exc}", file=sys.stderr)
        return 1
    torch.manual_seed(settings.seed)
    cfg = with_model_preprocess(cfg, model.preprocess)
    work = args.work or args.out / "data"
    args.out.mkdir(parents=True, exist_ok=True)
    progress = not args.quiet
    results: dict[str, Any] = {"checkpoint": str(args.checkpoint), "encoder": model.encoder_config,
                               "pretraining": {k: model.provenance.get(k) for k in ("kind", "loss", "result")},
                               "settings": dataclasses.asdict(settings), "tasks": {}, "skipped": {}}
    trained = []
    try:
        site = synthetic_site(cfg, settings, work, args.cohort, progress=progress) if {"synthetic", "evidence"} & set(tasks) else None
        for lead in leads:
            if "synthetic" in tasks:
                trained.append(evaluate_task(model.encoder, synthetic_task(site, lead), settings))
            if "evidence" in tasks:
                results.setdefault("evidence", {})[lead] = evaluate_evidence(
                    model.encoder, evidence_inputs(site, lead), settings, args.out, title="synthetic cohort")
            if "snomed" in tasks:
                if _available(shared_data_dir("ecg", settings.snomed_dir), args.task, results, "snomed"):
                    for task in snomed_tasks(snomed_site(cfg, settings, work, progress=progress), lead, settings.min_per_class):
                        trained.append(evaluate_task(model.encoder, task, settings))
        if "mitdb" in tasks and _available(shared_data_dir("mitdb", settings.mitdb_dir), args.task, results, "mitdb"):
            root = shared_data_dir("mitdb", settings.mitdb_dir)
            present = [n for n in DS1 if (root / f"{n}.hea").is_file()]
            if not args.train and not present:
                raise FileNotFoundError(f"mitdb task: no DS1 record in {root} (give --train RECORDS)")
            train = resolve_records(args.train or present, root)
            test = resolve_records(args.test, root) if args.test else None
            task = mitdb_task(train, test, PreprocessConfig.from_dict(model.preprocess), settings.mitdb_beats_per_class, settings.seed)
            trained.append(evaluate_task(model.encoder, task, settings))
            results["mitdb_data"] = {"train": task.info, "test": task.test.info if task.test is not None else None}
        if "mitdb_af" in tasks and _available(shared_data_dir("mitdb", settings.mitdb_dir), args.task, results, "mitdb_af"):
            root = shared_data_dir("mitdb", settings.mitdb_dir)
            records = resolve_records(args.train, root) if args.train else \
                [root / n for n in DS1 if (root / f"{n}.hea").is_file()]
            if not records:
                raise FileNotFoundError(f"mitdb_af task: no DS1 record in {root} (give --train RECORDS)")
            task = mitdb_af_task(records, PreprocessConfig.from_dict(model.preprocess),
                                 settings.mitdb_af_windows_per_class, settings.seed)
            trained.append(evaluate_task(model.encoder, task, settings))
            results["mitdb_af_data"] = task.info
    except (FileNotFoundError, ValueError, KeyError) as exc:
        print(f"clef evaluate: {exc}", file=sys.stderr)
        return 1

    heads_path = None
    for result in trained:
        key = f"{result.name}_{result.head_meta.get('lead', '')}".rstrip("_")
        results["tasks"][key] = result.summary()
        if result.head is None:
            continue
        meta = {**result.head_meta, "checkpoint": str(args.checkpoint)}
        if result.encoder is not None:  # fine-tuned: a new model file with its own encoder
            path = save_model(args.out / f"finetuned_{key}.pt", result.encoder, preprocess=model.preprocess,
                              heads={key: head_entry(result.head, result.head_labels, meta=meta)},
                              provenance={**model.provenance, "kind": "finetune", "base_checkpoint": str(args.checkpoint), "task": key},
                              input_spec=model.input)
            results["tasks"][key]["model"] = str(path)
        elif args.heads != "none":
            target = args.checkpoint if args.heads == "inplace" else args.out / "model.pt"
            if heads_path is None and args.heads == "copy":
                shutil.copyfile(args.checkpoint, target)
            heads_path = target
            add_head(target, key, result.head, result.head_labels, meta=meta)
    results["heads_saved_in"] = str(heads_path) if heads_path else None
    (args.out / "results.json").write_text(json.dumps(_clean(results), indent=2), encoding="utf-8")
    _print_table(results)
    print(f"results      {args.out / 'results.json'}")
    if heads_path:
        print(f"heads        {heads_path}")
    return 0


def _available(folder: Path, spec: str, results: dict[str, Any], name: str) -> bool:
    """True when ``folder`` exists; with --task all a missing folder is noted and skipped, else an error."""
    if folder.is_dir():
        return True
    if spec == "all":
        results["skipped"][name] = f"data folder not found: {folder}"
        print(f"clef evaluate: skipping {name}: data folder not found: {folder}", file=sys.stderr)
        return False
    raise FileNotFoundError(f"{name} task: data folder not found: {folder}")


def _clean(value: Any) -> Any:
    """JSON-safe: NaN -> null, numpy numbers -> Python numbers."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _fmt(v: Any) -> str:
    return "   -  " if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"


def _print_table(results: dict[str, Any]) -> None:
    print(f"{'task':22s} {'metric':12s} {'value':>7s}  details")
    for key, res in results["tasks"].items():
        m = res["metrics"]
        if "mean_auroc" in m:
            detail = ", ".join(f"{k} {_fmt(v.get('auroc'))}" for k, v in m["labels"].items())
            print(f"{key:22s} {'mean AUROC':12s} {_fmt(m['mean_auroc']):>7s}  {detail}")
        elif "macro_auroc" in m:
            detail = ", ".join(f"{c}: Se {_fmt(v['sensitivity'])} +P {_fmt(v['ppv'])}" for c, v in m["classes"].items())
            print(f"{key:22s} {'macro AUROC':12s} {_fmt(m['macro_auroc']):>7s}  {detail}")
        elif "mean_mae" in m:
            detail = ", ".join(f"{k}: R2 {_fmt(v['r2'])}, mean-predictor MAE {_fmt(v['mae_mean_predictor'])}" for k, v in m["labels"].items())
            print(f"{key:22s} {'MAE':12s} {_fmt(m['mean_mae']):>7s}  {detail}")
        else:
            print(f"{key:22s} {'skipped':12s} {'':>7s}  {m.get('skipped')}")
    for lead, ev in results.get("evidence", {}).items():
        for src, s in ev["spearman"].items():
            print(f"{'evidence_' + lead:22s} {'rho ' + src:12s} {_fmt(s['rho']):>7s}  distance vs |risk diff|, "
                  f"{s['n_patients']} patients, Mantel p {_fmt(s['p_mantel'])}")
        leak = ev["leakage"]
        if "age" in leak:
            print(f"{'leakage_' + lead:22s} {'age MAE':12s} {_fmt(leak['age']['mae']):>7s}  R2 {_fmt(leak['age']['r2'])}, "
                  f"mean-predictor MAE {_fmt(leak['age']['mae_mean_predictor'])}")
        if "sex" in leak:
            print(f"{'leakage_' + lead:22s} {'sex AUROC':12s} {_fmt(leak['sex'].get('auroc')):>7s}")
    for name, why in results.get("skipped", {}).items():
        print(f"{name:22s} {'skipped':12s} {'':>7s}  {why}")
