"""Downstream evaluation of CLEF encoders (no Flower, no CLI): embeddings, linear probes and
fine-tuning with patient-grouped protocols, the synthetic / SNOMED / MIT-BIH tasks, evidence on
the embedding itself, and hyper-parameter sweeps. See docs/evaluation.md.
"""

from clef_core.evaluation.embed import embed
from clef_core.evaluation.metrics import auroc, macro_auroc_ovr, mae, r2, sensitivity_ppv, spearman
from clef_core.evaluation.probe import LinearProbe, fit_probe
from clef_core.evaluation.run import EvalSettings, TaskResult, evaluate_evidence, evaluate_task
from clef_core.evaluation.splits import group_folds, group_split

__all__ = [
    "EvalSettings",
    "LinearProbe",
    "TaskResult",
    "auroc",
    "embed",
    "evaluate_evidence",
    "evaluate_task",
    "fit_probe",
    "group_folds",
    "group_split",
    "macro_auroc_ovr",
    "mae",
    "r2",
    "sensitivity_ppv",
    "spearman",
]
