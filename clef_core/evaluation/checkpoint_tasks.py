"""A model checkpoint on every downstream task: :func:`evaluate_checkpoint` (what `clef evaluate` runs).

The synthetic and SNOMED tasks and the embedding evidence for each lead of ``[evaluate] lead``,
then the MIT-BIH tasks (beats, AF, windows; always MLII), each scored with the trained encoder and,
unless told otherwise, with the same encoder untrained (random weights, a fixed seed, the same
protocol): the baseline every score is read against. The trained heads are stored (a copy of the
checkpoint, the checkpoint itself, or a fine-tuned model file) and ``tasks.png`` is drawn; the
caller writes the results (``results.json``) and prints them.

Heavy modules (torch, the tasks) are imported when a function runs, so the CLI starts quickly.
Error messages name the command line's options (``--data``, ``--test-data``, ``--train``), of which
:class:`EvaluationOptions` holds the values.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

    from clef_core.checkpoint import LoadedModel
    from clef_core.evaluation.run import EvalSettings, TaskResult
    from clef_core.evaluation.tasks import TaskData

log = logging.getLogger("clef.evaluate")

TASKS = ("synthetic", "snomed", "mitdb", "mitdb_af", "mitdb_windows", "evidence")
MITDB_TASKS = ("mitdb", "mitdb_af", "mitdb_windows")
HEAD_STORES = ("copy", "inplace", "none")

Say = Callable[[str], None]


class EvaluationError(Exception):
    """The checkpoint cannot be read or a task cannot run (a missing folder or record, a bad
    record list); the message is one line for the user."""


@dataclasses.dataclass(frozen=True)
class EvaluationOptions:
    """Where the data comes from and where the results go (the CLI's options)."""

    out: Path  # results, figures, the model with heads
    work: Path | None = None  # cache of prepared evaluation data; None = out/data
    cohort: Path | None = None  # labelled cohort of the synthetic/evidence tasks; None = generate [synth]
    data: Path | None = None  # MIT-BIH-format folder; None = evaluate.mitdb_dir, else the shared DS1 records
    train: str | None = None  # MIT-BIH training records (names, DS1, paths or a folder); None = all but test
    test_data: Path | None = None  # fit on the training records, score on this folder's records
    test: str | None = None  # MIT-BIH test records; None (and no test_data) = cross-validate by record
    heads: str = "copy"  # store trained heads in out/model.pt (copy), the checkpoint (inplace), or nowhere
    baseline: bool = True  # score the untrained encoder too
    skip_missing: bool = False  # a missing default data folder is noted and skipped (--task all), not an error
    quiet: bool = False  # no progress bars and no duration estimates

    def __post_init__(self) -> None:
        if self.heads not in HEAD_STORES:
            raise ValueError(f"heads = {self.heads!r}: choose from {', '.join(HEAD_STORES)}")


@dataclasses.dataclass
class CheckpointEvaluation:
    """``results`` (what results.json holds) and the files written besides it, labelled."""

    results: dict[str, Any]
    outputs: list[tuple[str, Path]]


def parse_tasks(spec: str) -> list[str]:
    """``all``, one task name or a comma list, checked against :data:`TASKS`."""
    names = list(TASKS) if spec == "all" else [t.strip() for t in spec.split(",") if t.strip()]
    bad = [t for t in names if t not in TASKS]
    if bad or not names:
        raise ValueError(f"unknown task(s) {bad or spec!r} (choose from {', '.join(TASKS)} or all)")
    return names


def _silent(message: str) -> None:
    pass


def evaluate_checkpoint(checkpoint: Path, cfg: dict[str, Any], settings: EvalSettings, tasks: Sequence[str],
                        options: EvaluationOptions, *, say: Say = _silent, warn: Say = log.warning,
                        ) -> CheckpointEvaluation:
    """Score ``checkpoint`` on ``tasks`` (see the module docstring). ``say`` gets the progress
    lines, ``warn`` the data folders skipped under ``options.skip_missing``. Raises
    :class:`EvaluationError` when the checkpoint cannot be loaded or a task cannot run."""
    import torch

    from clef_core.checkpoint import CheckpointError, load_model
    from clef_core.evaluation.sites import with_model_preprocess

    leads = [lead.strip() for lead in settings.lead.split(",") if lead.strip()]
    try:
        model = load_model(checkpoint)
    except (CheckpointError, ValueError, FileNotFoundError) as exc:
        raise EvaluationError(str(exc)) from exc
    torch.manual_seed(settings.seed)
    cfg = with_model_preprocess(cfg, model.preprocess)
    options.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"checkpoint": str(checkpoint), "encoder": model.encoder_config,
                               "pretraining": {k: model.provenance.get(k) for k in ("kind", "loss", "result")},
                               "settings": dataclasses.asdict(settings), "tasks": {}, "skipped": {}}
    baseline = _untrained_encoder(model.encoder_config, settings.seed) if options.baseline else None
    if baseline is not None:
        results["baseline"] = {"what": f"the same encoder with random weights (seed {settings.seed}), same protocol",
                               "tasks": {}, "evidence": {}}
    run = _Run(checkpoint, cfg, settings, options, model, baseline, results, say, warn)
    try:
        trained = run.tasks(list(tasks), leads)
    except (FileNotFoundError, ValueError, KeyError) as exc:
        raise EvaluationError(str(exc)) from exc
    outputs = run.save_heads(trained)
    figure = _task_figure(results, options.out / "tasks.png")
    if figure is not None:
        outputs.append(("figure", figure))
    return CheckpointEvaluation(results, outputs)


def _untrained_encoder(config: dict[str, Any], seed: int) -> nn.Module:
    """The baseline: the checkpoint's architecture with fresh random weights (a fixed seed)."""
    import torch

    from clef_core.checkpoint import build_encoder_from_config

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return build_encoder_from_config(config).eval()


@dataclasses.dataclass
class _Run:
    """One evaluation's state while its tasks run."""

    checkpoint: Path
    cfg: dict[str, Any]
    settings: EvalSettings
    options: EvaluationOptions
    model: LoadedModel
    baseline: nn.Module | None
    results: dict[str, Any]
    say: Say
    warn: Say

    def tasks(self, tasks: list[str], leads: list[str]) -> list[tuple[str, TaskResult]]:
        from clef_core.evaluation.run import evaluate_evidence
        from clef_core.evaluation.sites import snomed_site, synthetic_site
        from clef_core.evaluation.tasks import evidence_inputs, snomed_tasks, synthetic_task
        from clef_core.paths import shared_data_dir

        settings, options, results, baseline = self.settings, self.options, self.results, self.baseline
        work = options.work or options.out / "data"
        bars = not options.quiet
        trained: list[tuple[str, TaskResult]] = []
        site = None
        if {"synthetic", "evidence"} & set(tasks):
            self.say("preparing the synthetic evaluation cohort")
            site = synthetic_site(self.cfg, settings, work, options.cohort, progress=bars)
        for lead in leads:
            if "synthetic" in tasks:
                trained.append(self.score(synthetic_task(site, lead)))
            if "evidence" in tasks:
                inputs = evidence_inputs(site, lead)
                self.say(f"evidence lead {lead}: distance-risk Spearman, leakage probe, figures ({len(inputs.x)} "
                         f"patients)")
                results.setdefault("evidence", {})[lead] = evaluate_evidence(
                    self.model.encoder, inputs, settings, options.out, title="synthetic cohort")
                if baseline is not None:
                    self.say(f"evidence lead {lead}: the untrained baseline")
                    results["baseline"]["evidence"][lead] = evaluate_evidence(baseline, inputs, settings, None)
            if "snomed" in tasks and self.available(shared_data_dir("ecg", settings.snomed_dir), "snomed"):
                self.say(f"preparing the SNOMED records (lead {lead})")
                prepared = snomed_site(self.cfg, settings, work, progress=bars)
                for task in snomed_tasks(prepared, lead, settings.min_per_class):
                    trained.append(self.score(task))
        mitdb_tasks = [t for t in MITDB_TASKS if t in tasks]
        if mitdb_tasks:
            records = self.mitdb_records(mitdb_tasks)
            if records is not None:
                trained += self.mitdb_tasks(mitdb_tasks, *records)
        return trained

    def mitdb_records(self, names: list[str]) -> tuple[list[Path], list[Path] | None] | None:
        """(training records, test records or None) of the MIT-BIH tasks: the records of ``data`` (or
        ``train``) and of ``test_data`` / ``test``; None when the default folder is absent under
        ``skip_missing`` (noted in the results). A folder given in the options must exist."""
        from clef_core.evaluation.mitdb import annotated_records, resolve_records
        from clef_core.paths import shared_data_dir

        options = self.options
        if options.data is not None and not options.data.is_dir():
            raise FileNotFoundError(f"--data: folder not found: {options.data}")
        data = options.data or shared_data_dir("mitdb", self.settings.mitdb_dir)
        if not all([self.available(data, name) for name in names]):
            return None
        test = None
        if options.test_data is not None:
            if not options.test_data.is_dir():
                raise FileNotFoundError(f"--test-data: folder not found: {options.test_data}")
            test = resolve_records(options.test or [str(options.test_data)], options.test_data)
        elif options.test:
            test = resolve_records(options.test, data)
        if options.train:
            train = resolve_records(options.train, data)
        else:
            held_out = {p.resolve() for p in test or []}
            train = [p for p in annotated_records(data) if p.resolve() not in held_out]
            if not train:
                raise FileNotFoundError(f"mitdb tasks: no MIT-BIH-format record (NAME.hea + NAME.atr) in {data}"
                                        + (" besides the test records" if held_out else "")
                                        + " (give --data DIR or --train)")
        return train, test

    def mitdb_tasks(self, names: list[str], train: list[Path], test: list[Path] | None
                    ) -> list[tuple[str, TaskResult]]:
        """Score the MIT-BIH tasks ``names`` on ``train`` records (cross-validated by record, or fitted on
        them and scored on ``test``); what each task read goes into ``results[<task>_data]``."""
        from clef_core.data.preprocess import PreprocessConfig
        from clef_core.evaluation.tasks import mitdb_af_task, mitdb_task, mitdb_windows_task

        settings = self.settings
        pre = PreprocessConfig.from_dict(self.model.preprocess)
        protocol = f"fit on {len(train)}, scored on {len(test)} test records" if test else \
            f"{settings.folds}-fold cross-validation by record over {len(train)} records"
        trained = []
        for name in names:
            self.say(f"reading MIT-BIH {name} windows ({protocol})")
            if name == "mitdb":
                task = mitdb_task(train, test, pre, settings.mitdb_beats_per_class, settings.seed)
            elif name == "mitdb_af":
                task = mitdb_af_task(train, pre, settings.mitdb_af_windows_per_class, settings.seed, test=test)
            else:
                task = mitdb_windows_task(train, pre, settings.mitdb_window_stride_s, test=test)
            trained.append(self.score(task))
            self.results[f"{name}_data"] = {"train": task.info, "test": task.test.info if task.test is not None else None}
        return trained

    def score(self, task: TaskData) -> tuple[str, TaskResult]:
        """Score ``task`` with the trained encoder (and the untrained baseline); its key is name_lead."""
        from clef_core.evaluation.run import evaluate_task, expected_probe_seconds

        settings, baseline, say, encoder = self.settings, self.baseline, self.say, self.model.encoder
        key = f"{task.name}_{task.lead}"
        what = (f"{key}: {settings.mode} on {len(task)} rows, {len(task.labels)} "
                f"{'classes' if task.kind == 'multiclass' else 'labels'}")
        if settings.mode == "probe" and not self.options.quiet:
            passes = 1 if baseline is None else 2
            seconds, per, n = expected_probe_seconds(encoder, task, passes)
            say(f"{key}: expected about {seconds:.{0 if seconds >= 10 else 1}f} s ({'2 x ' if passes == 2 else ''}{n} "
                f"windows at {per * 1000:.0f} ms each, timed on the first windows; probe fits not counted)")
        say(f"{what}, trained encoder")
        result = evaluate_task(encoder, task, settings, say=lambda m: say(f"{key}: {m}"))
        say(f"{key}: {headline_text(result.metrics)} in {result.seconds:.0f} s")
        if baseline is not None:
            say(f"{what}, untrained baseline")
            base = evaluate_task(baseline, task, settings, say=lambda m: say(f"{key} baseline: {m}"))
            self.results["baseline"]["tasks"][key] = {"metrics": base.metrics, "seconds": round(base.seconds, 2)}
            say(f"{key} baseline: {headline_text(base.metrics)} in {base.seconds:.0f} s")
        return key, result

    def available(self, folder: Path, name: str) -> bool:
        """True when ``folder`` exists; under ``skip_missing`` a missing folder is noted and skipped,
        else an error."""
        if folder.is_dir():
            return True
        if self.options.skip_missing:
            self.results["skipped"][name] = f"data folder not found: {folder}"
            self.warn(f"skipping {name}: data folder not found: {folder}")
            return False
        raise FileNotFoundError(f"{name} task: data folder not found: {folder}")

    def save_heads(self, trained: list[tuple[str, TaskResult]]) -> list[tuple[str, Path]]:
        """Store each trained head (a copy of the checkpoint, the checkpoint itself, or a fine-tuned
        model file); returns the files written besides results.json, figures included."""
        from clef_core.checkpoint import add_head, head_entry, save_model

        checkpoint, out, heads, model, results = (self.checkpoint, self.options.out, self.options.heads, self.model,
                                                  self.results)
        outputs: list[tuple[str, Path]] = []
        heads_path = None
        for key, result in trained:
            results["tasks"][key] = result.summary()
            if result.head is None:
                continue
            meta = {**result.head_meta, "checkpoint": str(checkpoint)}
            if result.encoder is not None:  # fine-tuned: a new model file with its own encoder
                path = save_model(out / f"finetuned_{key}.pt", result.encoder, preprocess=model.preprocess,
                                  heads={key: head_entry(result.head, result.head_labels, meta=meta)},
                                  provenance={**model.provenance, "kind": "finetune",
                                              "base_checkpoint": str(checkpoint), "task": key},
                                  input_spec=model.input)
                results["tasks"][key]["model"] = str(path)
                outputs.append(("fine-tuned", Path(path)))
            elif heads != "none":
                target = checkpoint if heads == "inplace" else out / "model.pt"
                if heads_path is None and heads == "copy":
                    shutil.copyfile(checkpoint, target)
                heads_path = target
                add_head(target, key, result.head, result.head_labels, meta=meta)
        results["heads_saved_in"] = str(heads_path) if heads_path else None
        if heads_path:
            outputs.append(("heads", Path(heads_path)))
        for ev in results.get("evidence", {}).values():
            outputs += [("figure", Path(f)) for f in ev.get("figures", [])]
        return outputs


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


def headline_text(metrics: Mapping[str, object]) -> str:
    """The task's headline metric as ``mean AUROC 0.812`` (``skipped`` without one)."""
    for key, name in (("mean_auroc", "mean AUROC"), ("macro_auroc", "macro AUROC"), ("mean_mae", "MAE")):
        if key in metrics:
            return f"{name} {metric_text(metrics[key])}"
    return "skipped"


def metric_text(v: object) -> str:
    """A metric with three decimals, ``   -  `` when undefined (None or NaN)."""
    return "   -  " if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"
