"""The labelled data an evaluation reads, prepared exactly as the model's training data was
(the checkpoint's own [preprocess] settings), cached under a work folder."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clef_core.evaluation.run import EvalSettings
from clef_core.paths import shared_data_dir

if TYPE_CHECKING:
    from clef_core.experiment import Experiment


def with_model_preprocess(exp: Experiment, preprocess: dict[str, Any]) -> Experiment:
    """``exp`` whose [preprocess] keys take the checkpoint's values (rate, window, band)."""
    own = dataclasses.asdict(exp.preprocess)
    return exp.replace(preprocess={k: preprocess.get(k, v) for k, v in own.items()})


def synthetic_site(exp: Experiment, settings: EvalSettings, work: str | Path, cohort: str | Path | None = None,
                   *, progress: bool = False, workers: int = 1) -> Any:
    """``cohort`` prepared under ``work/synthetic``; without one, the built-in evaluation cohort:
    [synth] with ``evaluate.synth_seed`` (and ``evaluate.synth_patients`` when > 0), so the
    patients differ from those of a default pretraining run (seed ``synth.seed``). ``workers``:
    processes preparing the store (:func:`clef_core.prepared_site.prepare_site`)."""
    from clef_core.prepared_site import default_cohort, prepare_site

    work = Path(work) / "synthetic"
    if cohort is None:
        synth = {"seed": settings.synth_seed}
        if settings.synth_patients > 0:
            synth["patients"] = settings.synth_patients
        cohort = default_cohort(work, exp.replace(synth=synth))
    return prepare_site(cohort, work, exp, progress=progress, workers=workers)


def snomed_site(exp: Experiment, settings: EvalSettings, work: str | Path, *, progress: bool = False) -> Any:
    """The folder of CinC-2021 twelve-lead records (``evaluate.snomed_dir``) prepared under ``work/snomed``."""
    from clef_core.prepared_site import prepare_site

    folder = shared_data_dir("ecg", settings.snomed_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"SNOMED task: record folder not found: {folder} (set evaluate.snomed_dir)")
    return prepare_site(folder, Path(work) / "snomed", exp, progress=progress)
