"""`clef evaluate`: score a model checkpoint on downstream tasks and on evidence in its embedding."""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clef.cli import add_config_arguments, experiment_from_args

if TYPE_CHECKING:
    from clef_core.experiment import Experiment

NAME = "evaluate"
HELP = "linear-probe / fine-tune a checkpoint on the synthetic, SNOMED and MIT-BIH (beats, AF, window) tasks; embedding evidence"
TASKS = ("synthetic", "snomed", "mitdb", "mitdb_af", "mitdb_windows", "evidence")
MITDB_TASKS = ("mitdb", "mitdb_af", "mitdb_windows")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", metavar="CHECKPOINT", type=Path, help="a clef model file (e.g. RUN_DIR/final_model.pt)")
    add_config_arguments(parser)
    parser.add_argument("--task", default="all", help=f"one of {', '.join(TASKS)}, a comma list, or all (default)")
    parser.add_argument("--cohort", metavar="DIR", type=Path,
                        help="labelled synthetic cohort for the synthetic/evidence tasks (default: generate [synth] "
                             "with evaluate.synth_seed)")
    parser.add_argument("--data", metavar="DIR", type=Path,
                        help="MIT-BIH-format folder (.hea/.dat/.atr) for the mitdb* tasks (default evaluate.mitdb_dir, "
                             "else the shared MIT-BIH DS1 records)")
    parser.add_argument("--train", metavar="RECORDS",
                        help="MIT-BIH training records: names in --data (101,106), DS1, paths or a folder (default: every "
                             "annotated record of --data that is not a test record)")
    parser.add_argument("--test-data", metavar="DIR", type=Path,
                        help="fit the probe on the training records and score it on this folder's annotated records "
                             "(or on the --test names in it)")
    parser.add_argument("--test", metavar="RECORDS",
                        help="MIT-BIH test records: names (in --test-data, else --data), DS2, paths or a folder (default: "
                             "cross-validate the training records by record)")
    parser.add_argument("--lead", help="I | II | I,II (default evaluate.lead); MIT-BIH always uses MLII")
    parser.add_argument("--mode", choices=("probe", "finetune"), help="default evaluate.mode")
    parser.add_argument("--out", metavar="DIR", type=Path, required=True, help="results.json, PNGs, model with heads")
    parser.add_argument("--work", metavar="DIR", type=Path, help="where evaluation data is cached (default: OUT/data)")
    parser.add_argument("--heads", choices=("copy", "inplace", "none"), default="copy",
                        help="store the trained heads in OUT/model.pt (copy, default), in CHECKPOINT itself, or nowhere")
    parser.add_argument("--quiet", action="store_true", help="no progress lines or bars")
    parser.add_argument("--no-baseline", action="store_true",
                        help="skip the baseline row (the same encoder untrained, scored the same way; it repeats "
                             "every embedding and probe)")


def _tasks(spec: str) -> list[str]:
    names = list(TASKS) if spec == "all" else [t.strip() for t in spec.split(",") if t.strip()]
    bad = [t for t in names if t not in TASKS]
    if bad or not names:
        raise ValueError(f"unknown task(s) {bad or spec!r} (choose from {', '.join(TASKS)} or all)")
    return names


def run(args: argparse.Namespace) -> int:
    exp = experiment_from_args(args)
    import dataclasses

    import torch

    from clef_core.checkpoint import CheckpointError, load_model
    from clef_core.evaluation.sites import with_model_preprocess

    try:
        tasks = _tasks(args.task)
        overrides = {k: v for k, v in (("lead", args.lead), ("mode", args.mode)) if v}
        settings = dataclasses.replace(exp.evaluate, **overrides)
        leads = [lead.strip() for lead in settings.lead.split(",") if lead.strip()]
        model = load_model(args.checkpoint)
    except (CheckpointError, ValueError, FileNotFoundError) as exc:
        print(f"clef evaluate: {exc}", file=sys.stderr)
        return 1
    torch.manual_seed(settings.seed)
    exp = with_model_preprocess(exp, model.preprocess)
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"checkpoint": str(args.checkpoint), "encoder": model.encoder_config,
                               "pretraining": {k: model.provenance.get(k) for k in ("kind", "loss", "result")},
                               "settings": dataclasses.asdict(settings), "tasks": {}, "skipped": {}}
    progress = Progress(quiet=args.quiet)
    baseline = None if args.no_baseline else untrained_encoder(model.encoder_config, settings.seed)
    if baseline is not None:
        results["baseline"] = {"what": f"the same encoder with random weights (seed {settings.seed}), same protocol",
                               "tasks": {}, "evidence": {}}
    try:
        trained = _run_tasks(args, exp, settings, model, baseline, tasks, leads, results, progress)
    except (FileNotFoundError, ValueError, KeyError) as exc:
        print(f"clef evaluate: {exc}", file=sys.stderr)
        return 1
    outputs = _save_heads(args, model, trained, results)
    figure = _task_figure(results, args.out / "tasks.png")
    if figure is not None:
        outputs.append(("figure", figure))
    (args.out / "results.json").write_text(json.dumps(_clean(results), indent=2), encoding="utf-8")
    progress.say(f"done in {progress.elapsed():.0f} s")
    _print_table(results)
    print()
    print("outputs:")
    for label, path in [("results", args.out / "results.json"), *outputs]:
        print(f"  {label:12s} {path}")
    return 0


class Progress:
    """``clef evaluate: [  12 s] message`` lines on stderr (the table stays alone on stdout)."""

    def __init__(self, quiet: bool) -> None:
        import time

        self.quiet, self.clock, self.started = quiet, time.perf_counter, time.perf_counter()

    def elapsed(self) -> float:
        return self.clock() - self.started

    def say(self, message: str) -> None:
        if not self.quiet:
            print(f"clef evaluate: [{self.elapsed():5.0f} s] {message}", file=sys.stderr, flush=True)


def untrained_encoder(config: dict[str, Any], seed: int) -> Any:
    """The baseline: the checkpoint's architecture with fresh random weights (a fixed seed)."""
    import torch

    from clef_core.checkpoint import build_encoder_from_config

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return build_encoder_from_config(config).eval()


def _run_tasks(args: argparse.Namespace, exp: Experiment, settings: Any, model: Any, baseline: Any,
               tasks: list[str], leads: list[str], results: dict[str, Any],
               progress: Progress) -> list[tuple[str, Any]]:
    from clef_core.evaluation.run import evaluate_evidence
    from clef_core.evaluation.sites import snomed_site, synthetic_site
    from clef_core.evaluation.tasks import evidence_inputs, snomed_tasks, synthetic_task
    from clef_core.paths import shared_data_dir

    work = args.work or args.out / "data"
    bars = not args.quiet
    trained: list[tuple[str, Any]] = []
    site = None
    if {"synthetic", "evidence"} & set(tasks):
        progress.say("preparing the synthetic evaluation cohort")
        site = synthetic_site(exp, settings, work, args.cohort, progress=bars)
    for lead in leads:
        if "synthetic" in tasks:
            trained.append(_score(synthetic_task(site, lead), model.encoder, baseline, settings, results, progress))
        if "evidence" in tasks:
            inputs = evidence_inputs(site, lead)
            progress.say(f"evidence lead {lead}: distance-risk Spearman, leakage probe, figures ({len(inputs.x)} "
                         f"patients)")
            results.setdefault("evidence", {})[lead] = evaluate_evidence(
                model.encoder, inputs, settings, args.out, title="synthetic cohort")
            if baseline is not None:
                progress.say(f"evidence lead {lead}: the untrained baseline")
                results["baseline"]["evidence"][lead] = evaluate_evidence(baseline, inputs, settings, None)
        if "snomed" in tasks and _available(shared_data_dir("ecg", settings.snomed_dir), args.task, results, "snomed"):
            progress.say(f"preparing the SNOMED records (lead {lead})")
            prepared = snomed_site(exp, settings, work, progress=bars)
            for task in snomed_tasks(prepared, lead, settings.min_per_class):
                trained.append(_score(task, model.encoder, baseline, settings, results, progress))
    mitdb_tasks = [t for t in MITDB_TASKS if t in tasks]
    if mitdb_tasks:
        records = _mitdb_records(args, settings, results, mitdb_tasks)
        if records is not None:
            trained += _mitdb_tasks(mitdb_tasks, *records, model, baseline, settings, results, progress)
    return trained


def _mitdb_records(args: argparse.Namespace, settings: Any, results: dict[str, Any], names: list[str]
                   ) -> tuple[list[Path], list[Path] | None] | None:
    """(training records, test records or None) of the MIT-BIH tasks: the records of ``--data`` (or
    ``--train``) and of ``--test-data`` / ``--test``; None when the default folder is absent under
    ``--task all`` (noted in ``results``). A folder given on the command line must exist."""
    from clef_core.evaluation.mitdb import annotated_records, resolve_records
    from clef_core.paths import shared_data_dir

    if args.data is not None and not args.data.is_dir():
        raise FileNotFoundError(f"--data: folder not found: {args.data}")
    data = args.data or shared_data_dir("mitdb", settings.mitdb_dir)
    if not all([_available(data, args.task, results, name) for name in names]):
        return None
    test = None
    if args.test_data is not None:
        if not args.test_data.is_dir():
            raise FileNotFoundError(f"--test-data: folder not found: {args.test_data}")
        test = resolve_records(args.test or [str(args.test_data)], args.test_data)
    elif args.test:
        test = resolve_records(args.test, data)
    if args.train:
        train = resolve_records(args.train, data)
    else:
        held_out = {p.resolve() for p in test or []}
        train = [p for p in annotated_records(data) if p.resolve() not in held_out]
        if not train:
            raise FileNotFoundError(f"mitdb tasks: no MIT-BIH-format record (NAME.hea + NAME.atr) in {data}"
                                    + (" besides the test records" if held_out else "") + " (give --data DIR or --train)")
    return train, test


def _mitdb_tasks(names: list[str], train: list[Path], test: list[Path] | None, model: Any, baseline: Any,
                 settings: Any, results: dict[str, Any], progress: Progress) -> list[tuple[str, Any]]:
    """Score the MIT-BIH tasks ``names`` on ``train`` records (cross-validated by record, or fitted on
    them and scored on ``test``); what each task read goes into ``results[<task>_data]``."""
    from clef_core.data.preprocess import PreprocessConfig
    from clef_core.evaluation.tasks import mitdb_af_task, mitdb_task, mitdb_windows_task

    pre = PreprocessConfig.from_dict(model.preprocess)
    protocol = f"fit on {len(train)}, scored on {len(test)} test records" if test else \
        f"{settings.folds}-fold cross-validation by record over {len(train)} records"
    trained = []
    for name in names:
        progress.say(f"reading MIT-BIH {name} windows ({protocol})")
        if name == "mitdb":
            task = mitdb_task(train, test, pre, settings.mitdb_beats_per_class, settings.seed)
        elif name == "mitdb_af":
            task = mitdb_af_task(train, pre, settings.mitdb_af_windows_per_class, settings.seed, test=test)
        else:
            task = mitdb_windows_task(train, pre, settings.mitdb_window_stride_s, test=test)
        trained.append(_score(task, model.encoder, baseline, settings, results, progress))
        results[f"{name}_data"] = {"train": task.info, "test": task.test.info if task.test is not None else None}
    return trained


def _score(task: Any, encoder: Any, baseline: Any, settings: Any, results: dict[str, Any],
           progress: Progress) -> tuple[str, Any]:
    """Score ``task`` with the trained encoder (and the untrained baseline); its key is name_lead."""
    from clef_core.evaluation.run import evaluate_task, expected_probe_seconds

    key = f"{task.name}_{task.lead}"
    what = f"{key}: {settings.mode} on {len(task)} rows, {len(task.labels)} {'classes' if task.kind == 'multiclass' else 'labels'}"
    if settings.mode == "probe" and not progress.quiet:
        passes = 1 if baseline is None else 2
        seconds, per, n = expected_probe_seconds(encoder, task, passes)
        progress.say(f"{key}: expected about {seconds:.{0 if seconds >= 10 else 1}f} s ({'2 x ' if passes == 2 else ''}{n} windows at "
                     f"{per * 1000:.0f} ms each, timed on the first windows; probe fits not counted)")
    progress.say(f"{what}, trained encoder")
    result = evaluate_task(encoder, task, settings, say=lambda m: progress.say(f"{key}: {m}"))
    progress.say(f"{key}: {_headline_text(result.metrics)} in {result.seconds:.0f} s")
    if baseline is not None:
        progress.say(f"{what}, untrained baseline")
        base = evaluate_task(baseline, task, settings, say=lambda m: progress.say(f"{key} baseline: {m}"))
        results["baseline"]["tasks"][key] = {"metrics": base.metrics, "seconds": round(base.seconds, 2)}
        progress.say(f"{key} baseline: {_headline_text(base.metrics)} in {base.seconds:.0f} s")
    return key, result


def _task_figure(results: dict[str, Any], path: Path) -> Path | None:
    """tasks.png: every AUROC task, trained vs untrained, 95 % CIs, chance (None without one)."""
    from clef_core.evaluation.plots import task_scores

    rows = []
    for key, res in results["tasks"].items():
        m = res["metrics"]
        b = results.get("baseline", {}).get("tasks", {}).get(key, {}).get("metrics", {})
        for metric, name in (("mean_auroc", "mean AUROC"), ("macro_auroc", "macro AUROC")):
            if metric in m:
                label = f"{key}{' [too small]' if 'too_small' in m else ''}"
                rows.append({"task": label, "metric": name, "trained": _finite(m[metric]), "ci_trained": m.get("ci_95"),
                             "untrained": _finite(b.get(metric)), "ci_untrained": b.get("ci_95")})
    if not rows:
        return None
    return task_scores(rows, path, title=f"downstream tasks of {Path(results['checkpoint']).name} "
                                         f"({results['settings']['mode']})")


def _finite(value: Any) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def _headline_text(metrics: dict[str, Any]) -> str:
    for key, name in (("mean_auroc", "mean AUROC"), ("macro_auroc", "macro AUROC"), ("mean_mae", "MAE")):
        if key in metrics:
            return f"{name} {_fmt(metrics[key])}"
    return "skipped"


def _save_heads(args: argparse.Namespace, model: Any, trained: list[tuple[str, Any]],
                results: dict[str, Any]) -> list[tuple[str, Path]]:
    """Store each trained head (a copy of the checkpoint, the checkpoint itself, or a fine-tuned
    model file); returns the files written besides results.json, figures included."""
    from clef_core.checkpoint import add_head, head_entry, save_model

    outputs: list[tuple[str, Path]] = []
    heads_path = None
    for key, result in trained:
        results["tasks"][key] = result.summary()
        if result.head is None:
            continue
        meta = {**result.head_meta, "checkpoint": str(args.checkpoint)}
        if result.encoder is not None:  # fine-tuned: a new model file with its own encoder
            path = save_model(args.out / f"finetuned_{key}.pt", result.encoder, preprocess=model.preprocess,
                              heads={key: head_entry(result.head, result.head_labels, meta=meta)},
                              provenance={**model.provenance, "kind": "finetune", "base_checkpoint": str(args.checkpoint),
                                          "task": key},
                              input_spec=model.input)
            results["tasks"][key]["model"] = str(path)
            outputs.append(("fine-tuned", Path(path)))
        elif args.heads != "none":
            target = args.checkpoint if args.heads == "inplace" else args.out / "model.pt"
            if heads_path is None and args.heads == "copy":
                shutil.copyfile(args.checkpoint, target)
            heads_path = target
            add_head(target, key, result.head, result.head_labels, meta=meta)
    results["heads_saved_in"] = str(heads_path) if heads_path else None
    if heads_path:
        outputs.append(("heads", Path(heads_path)))
    for ev in results.get("evidence", {}).values():
        outputs += [("figure", Path(f)) for f in ev.get("figures", [])]
    return outputs


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
    """One row per task: the trained encoder's headline, the untrained baseline's, and the
    task's caveat (too few examples to mean anything) or its per-label details."""
    base = results.get("baseline", {})
    print(f"{'task':22s} {'metric':12s} {'value':>7s} {'untrained':>9s}  details")
    for key, res in results["tasks"].items():
        m = res["metrics"]
        b = base.get("tasks", {}).get(key, {}).get("metrics", {})
        if "mean_auroc" in m:
            name, value, other = "mean AUROC", m["mean_auroc"], b.get("mean_auroc")
            detail = ", ".join(f"{k} {_fmt(v.get('auroc'))}" for k, v in m["labels"].items())
        elif "macro_auroc" in m:
            name, value, other = "macro AUROC", m["macro_auroc"], b.get("macro_auroc")
            detail = ", ".join(f"{c}: Se {_fmt(v['sensitivity'])} +P {_fmt(v['ppv'])}" for c, v in m["classes"].items())
        elif "mean_mae" in m:
            name, value, other = "MAE", m["mean_mae"], b.get("mean_mae")
            detail = ", ".join(f"{k}: R2 {_fmt(v['r2'])}, mean-predictor MAE {_fmt(v['mae_mean_predictor'])}, n {v['n']}"
                               for k, v in m["labels"].items())
        else:
            print(f"{key:22s} {'skipped':12s} {'':>7s} {'':>9s}  {m.get('skipped')}")
            continue
        if "too_small" in m:
            detail = f"TOO SMALL TO MEAN MUCH: {m['too_small']}; {detail}"
        elif "chance_95" in m:
            detail = f"chance 0.5 +- {m['chance_95']:.2f}; {detail}"
        print(f"{key:22s} {name:12s} {_fmt(value):>7s} {_fmt(other) if base else '':>9s}  {detail}")
    for lead, ev in results.get("evidence", {}).items():
        bev = base.get("evidence", {}).get(lead, {})
        for src, s in ev["spearman"].items():
            other = bev.get("spearman", {}).get(src, {}).get("rho")
            print(f"{'evidence_' + lead:22s} {'rho ' + src:12s} {_fmt(s['rho']):>7s} {_fmt(other) if base else '':>9s}  "
                  f"distance vs |risk diff|, {s['n_patients']} patients, Mantel p {_fmt(s['p_mantel'])}")
        leak, bleak = ev["leakage"], bev.get("leakage", {})
        if "age" in leak:
            other = bleak.get("age", {}).get("mae")
            print(f"{'leakage_' + lead:22s} {'age MAE':12s} {_fmt(leak['age']['mae']):>7s} "
                  f"{_fmt(other) if base else '':>9s}  R2 {_fmt(leak['age']['r2'])}, "
                  f"mean-predictor MAE {_fmt(leak['age']['mae_mean_predictor'])}")
        if "sex" in leak:
            other = bleak.get("sex", {}).get("auroc")
            print(f"{'leakage_' + lead:22s} {'sex AUROC':12s} {_fmt(leak['sex'].get('auroc')):>7s} "
                  f"{_fmt(other) if base else '':>9s}")
    for name, why in results.get("skipped", {}).items():
        print(f"{name:22s} {'skipped':12s} {'':>7s} {'':>9s}  {why}")
    if base:
        print(f"untrained: {base['what']}")
