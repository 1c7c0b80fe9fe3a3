"""Synthetic multi-site ECG cohort in the MIMIC-IV-ECG + MIMIC-IV hosp layout.

The built-in default cohort: correlated clinical state (age, sex, SBP, cholesterol, HDL,
smoking, diabetes -> true SCORE2), ECG signals that depend on it (a vectorised 3-D dipole
beat model), site-specific devices and record keeping. See docs/synthetic-cohort.md.

    from clef_core.synth import SynthConfig, generate_cohort
    summary = generate_cohort(out_dir, **exp.synth.as_kwargs())   # exp: clef_core.experiment.Experiment
"""

from clef_core.synth.clinical import ClinicalCohort, draw_clinical
from clef_core.synth.cohort import GENERATOR_VERSION, LABELS, CohortSummary, SynthConfig, generate_cohort
from clef_core.synth.risk import score2_risk
from clef_core.synth.signals import render
from clef_core.synth.hospital_profiles import SiteProfile, make_sites

__all__ = [
    "GENERATOR_VERSION",
    "LABELS",
    "ClinicalCohort",
    "CohortSummary",
    "SiteProfile",
    "SynthConfig",
    "draw_clinical",
    "generate_cohort",
    "make_sites",
    "render",
    "score2_risk",
]
