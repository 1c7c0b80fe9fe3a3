"""Scoring one encoder on tasks: linear probe or fine-tuning, the trained head, and the
representation evidence. The ``clef evaluate`` command and the benchmark both call these.

Protocols: a probe is scored by patient-grouped K-fold cross-validation (pooled out-of-fold
outputs) and then refitted on every row for the saved head; fine-tuning holds out
``test_fraction`` of the patients (one grouped split) since K encoder copies would cost K
trainings. A task with an explicit test set (MIT-BIH ``--test`` / ``--test-data``) is fitted on
the training records and scored on the test records in both modes.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
from torch import nn

from clef_core.evaluation.embed import embed
from clef_core.evaluation.evidence import distance_risk_spearman, leakage_probe, pca_2d, similarity_by_risk_bins
from clef_core.evaluation.finetune import FinetuneConfig, finetune
from clef_core.evaluation.operating_point import operating_point
from clef_core.evaluation.probe import ACTIVATION, fit_probe
from clef_core.evaluation.settings import EvalSettings
from clef_core.evaluation.protocol import chance_halfwidth, headline, oof_decisions, score
from clef_core.evaluation.splits import group_split
from clef_core.evaluation.tasks import EvidenceInputs, TaskData



def finetune_config(settings: EvalSettings) -> FinetuneConfig:
    """The fine-tune protocol of ``[evaluate]`` (its finetune_* keys and seed)."""
    return FinetuneConfig(epochs=settings.finetune_epochs, lr=settings.finetune_lr,
                          weight_decay=settings.finetune_weight_decay, batch_size=settings.finetune_batch_size,
                          seed=settings.seed)


@dataclasses.dataclass
class TaskResult:
    """Metrics of one task, and what to ship: the linear ``head`` over raw embeddings (labels,
    meta) and, after fine-tuning, the fine-tuned ``encoder``."""

    name: str
    metrics: dict[str, Any]
    head: nn.Linear | None
    head_labels: list[str]
    head_meta: dict[str, Any]
    encoder: nn.Module | None = None
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        return {"metrics": self.metrics, "head_labels": self.head_labels, "meta": self.head_meta,
                "seconds": round(self.seconds, 2)}


def usable_labels(task: TaskData, min_per_class: int) -> tuple[list[int], dict[str, str]]:
    """Columns of a binary task with at least ``min_per_class`` known positives and negatives
    (in the training set), and why the others are left out."""
    if task.kind != "binary":
        return list(range(len(task.labels))), {}
    keep, skipped = [], {}
    for j, name in enumerate(task.labels):
        yj = task.y[np.isfinite(task.y[:, j]), j]
        n_pos, n_neg = int(yj.sum()), int((1 - yj).sum())
        if min(n_pos, n_neg) < min_per_class:
            skipped[name] = f"{n_pos} positives / {n_neg} negatives < {min_per_class}"
        else:
            keep.append(j)
    return keep, skipped


def _subset(task: TaskData, cols: list[int]) -> TaskData:
    if task.kind == "multiclass":
        return task
    test = _subset(task.test, cols) if task.test is not None else None
    return dataclasses.replace(task, labels=[task.labels[j] for j in cols], y=task.y[:, cols], test=test)


def quarter_progress(say: Callable[[str], None] | None, what: str) -> Callable[[int, int], None] | None:
    """An ``on_batch(done, total)`` that says ``what: done/total`` at each quarter."""
    if say is None:
        return None
    said: set[int] = set()

    def on_batch(done: int, total: int) -> None:
        quarter = 4 * done // max(total, 1)
        if quarter not in said and quarter > 0:
            said.add(quarter)
            say(f"{what}: {done}/{total}")

    return on_batch


def seconds_per_window(encoder: nn.Module, x: np.ndarray, sample: int = 8) -> float:
    """Wall seconds ``embed`` takes per window of ``x``, timed on its first ``sample`` windows after
    a one-window warm-up (the basis of ``clef evaluate``'s expected duration)."""
    if not len(x):
        return 0.0
    embed(encoder, x[:1], batch_size=1)
    n = min(sample, len(x))
    started = time.perf_counter()
    embed(encoder, x[:n], batch_size=n)
    return (time.perf_counter() - started) / n


def expected_probe_seconds(encoder: nn.Module, task: TaskData, passes: int = 1) -> tuple[float, float, int]:
    """``(seconds, seconds per window, windows)`` a probe evaluation of ``task`` is expected to spend
    embedding: every training and test window, ``passes`` times (2 with the untrained baseline)."""
    n = len(task) + (len(task.test) if task.test is not None else 0)
    per = seconds_per_window(encoder, task.x)
    return per * n * passes, per, n


def binary_operating_points(task: TaskData, decision: np.ndarray, target: float) -> dict[str, dict[str, Any]]:
    """Per label, the threshold of the out-of-fold ``decision`` at sensitivity ``target`` and its
    sensitivity / specificity on record groups it was not chosen on (evaluation/operating_point.py)."""
    y = np.asarray(task.y).reshape(len(task.y), -1)
    d = np.asarray(decision).reshape(len(decision), -1)
    out = {}
    for j, label in enumerate(task.labels):
        ok = np.isfinite(d[:, j]) & np.isfinite(y[:, j])
        out[str(label)] = operating_point(y[ok, j], d[ok, j], np.asarray(task.groups)[ok], target)
    return out


def evaluate_task(encoder: nn.Module, task: TaskData, settings: EvalSettings, mode: str | None = None,
                  say: Callable[[str], None] | None = None) -> TaskResult:
    """Score ``encoder`` on ``task`` by ``mode`` (default ``settings.mode``); ``say`` gets progress lines."""
    started = time.perf_counter()
    mode = mode or settings.mode
    cols, skipped = usable_labels(task, settings.min_per_class)
    if not cols:
        return TaskResult(task.name, {"skipped": skipped, "n": len(task)}, None, [], {}, seconds=time.perf_counter() - started)
    task = _subset(task, cols)
    class_weight = "balanced" if task.kind == "multiclass" else None
    meta: dict[str, Any] = {"task": task.name, "kind": task.kind, "lead": task.lead, "mode": mode,
                            "activation": ACTIVATION[task.kind], "input": "z-scored single-lead window"}
    if task.name == "mitdb":
        meta["input"] = "z-scored MLII window centred on the beat"
    elif task.name == "mitdb_af":
        meta["input"] = "z-scored back-to-back MLII window, as the device runtime cuts them"
    elif task.name == "mitdb_windows":
        meta["input"] = f"z-scored MLII window, one every {settings.mitdb_window_stride_s:g} s"
    kwargs = {"min_per_class": settings.min_per_class}
    encoder_out = None
    if mode == "probe":
        feats = embed(encoder, task.x, settings.batch_size, on_batch=quarter_progress(say, "embedding windows"))
        if say is not None:
            say(f"fitting the probe ({'train/test' if task.test is not None else f'{settings.folds}-fold CV'})")
        if task.test is not None:
            probe = fit_probe(feats, task.y, task.kind, task.labels, settings.probe_l2, class_weight)
            decision = probe.decision(embed(encoder, task.test.x, settings.batch_size,
                                            on_batch=quarter_progress(say, "embedding test windows")))
            metrics = score(task.kind, task.labels, task.test.y, decision, **kwargs)
            protocol = f"fit on {len(task)} training rows, scored on {len(task.test)} test rows"
        else:
            decision = oof_decisions(feats, task.y, task.kind, task.labels, task.groups, folds=settings.folds,
                                     seed=settings.seed, l2=settings.probe_l2, class_weight=class_weight)
            metrics = score(task.kind, task.labels, task.y, decision, **kwargs)
            probe = fit_probe(feats, task.y, task.kind, task.labels, settings.probe_l2, class_weight)
            protocol = f"patient-grouped {settings.folds}-fold CV (pooled out-of-fold), head refitted on all {len(task)} rows"
            if task.kind == "binary":
                meta["operating_points"] = binary_operating_points(task, decision, settings.operating_sensitivity)
        head = probe.to_linear()
        meta.update(l2=settings.probe_l2, class_weight=class_weight)
    else:
        if task.test is not None:
            x_tr, y_tr, x_te, y_te = task.x, task.y, task.test.x, task.test.y
            protocol = f"fine-tuned on {len(task)} training rows, scored on {len(task.test)} test rows"
        else:
            strata = task.y if task.kind == "binary" else (np.eye(len(task.labels))[task.y] if task.kind == "multiclass" else None)
            tr, te = group_split(task.groups, settings.test_fraction, settings.seed, strata)
            x_tr, y_tr, x_te, y_te = task.x[tr], task.y[tr], task.x[te], task.y[te]
            protocol = f"patient-grouped hold-out: {len(tr)} rows fine-tuned, {len(te)} rows scored"
        if say is not None:
            say(f"fine-tuning on {len(x_tr)} rows for {settings.finetune_epochs} epochs")
        tuned = finetune(encoder, x_tr, y_tr, task.kind, task.labels, finetune_config(settings), class_weight)
        metrics = score(task.kind, task.labels, y_te, tuned.decision(x_te), **kwargs)
        head, encoder_out = tuned.head, tuned.encoder
        meta.update(finetune=dataclasses.asdict(finetune_config(settings)), train_loss=tuned.history)
    metrics["protocol"] = protocol
    flag_small_task(task.kind, metrics, settings.max_chance_halfwidth)
    if skipped:
        metrics["labels_left_out"] = skipped
    name, value = headline(task.kind, metrics)
    meta.update(protocol=protocol, metric=name, value=None if math.isnan(value) else value)
    return TaskResult(task.name, metrics, head, list(task.labels), meta, encoder_out, time.perf_counter() - started)


def flag_small_task(kind: str, metrics: dict[str, Any], limit: float) -> None:
    """Set ``metrics["chance_95"]``, ``metrics["ci_95"]`` and, when chance alone spreads the AUROC over more than
    0.5 +- ``limit``, ``metrics["too_small"]``: such a task's number says little either way."""
    width = chance_halfwidth(kind, metrics)
    if math.isnan(width):
        return
    metrics["chance_95"] = width
    metrics["ci_95"] = chance_halfwidth(kind, metrics, "ci_95")
    if width > limit:
        metrics["too_small"] = (f"too few examples: an encoder with no signal scores 0.5 +- {width:.2f} (95 %) "
                                f"here, wider than +- {limit:g}")


def evaluate_evidence(encoder: nn.Module, inputs: EvidenceInputs, settings: EvalSettings, out_dir: str | Path | None = None,
                      *, title: str = "") -> dict[str, Any]:
    """Distance-risk Spearman (clinical-table risk and, when known, the true risk), the leakage
    probe, the PCA map and the binned similarity; PNGs into ``out_dir`` when given."""
    emb = embed(encoder, inputs.x, settings.batch_size)
    kw = {"max_patients": settings.evidence_max_patients, "seed": settings.seed}
    risks = {"clinical": inputs.risk_clinical}
    if inputs.risk_truth is not None:
        risks["truth"] = inputs.risk_truth
    out: dict[str, Any] = {"lead": inputs.lead, "patients": int(len(emb)),
                           "risk_known": {k: int(np.isfinite(v).sum()) for k, v in risks.items()}}
    out["spearman"] = {k: distance_risk_spearman(emb, v, permutations=settings.evidence_permutations, **kw)
                       for k, v in risks.items()}
    bins = {k: similarity_by_risk_bins(emb, v, **kw) for k, v in risks.items()}
    out["similarity_by_risk_bin"] = bins
    out["leakage"] = leakage_probe(emb, inputs.age, inputs.male, inputs.subjects, folds=settings.folds,
                                   seed=settings.seed, l2=settings.probe_l2, min_per_class=settings.min_per_class)
    coords, explained = pca_2d(emb)
    out["pca_explained"] = explained
    if out_dir is not None:
        from clef_core.evaluation.plots import embedding_map, similarity_vs_risk

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        colour = inputs.risk_truth if inputs.risk_truth is not None else inputs.risk_clinical
        out["figures"] = [
            str(embedding_map(coords, colour, out_dir / f"embedding_map_{inputs.lead}.png", explained=explained,
                              title=f"{title} embeddings (lead {inputs.lead}), PCA, coloured by "
                                    f"{'true' if inputs.risk_truth is not None else 'clinical-table'} SCORE2 risk")),
            str(similarity_vs_risk(bins, out_dir / f"similarity_vs_risk_{inputs.lead}.png",
                                   title=f"{title} cosine similarity vs risk difference (lead {inputs.lead})")),
        ]
    return out
