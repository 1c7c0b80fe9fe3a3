"""The typed ``[evaluate]``, ``[study]`` and ``[sweep]`` sections (configs/default.toml documents each
key). A leaf module: the experiment (:mod:`clef_core.experiment`) holds these without importing the
evaluation, the study or the sweep."""

from __future__ import annotations

import dataclasses

from clef_core.config import require

MODES = ("probe", "finetune")
ARMS = ("untrained", "features", "ntxent", "clef", "clef_repaired", "placebo", "placebo_known", "oracle",
        "clef_signal_off", "ntxent_signal_off", "supervised")


@dataclasses.dataclass(frozen=True)
class StudyConfig:
    """The ``[study]`` config section (configs/default.toml documents each key)."""

    arms: tuple[str, ...] = ARMS
    seeds: tuple[int, ...] = (0, 1, 2)
    label_fractions: tuple[float, ...] = (0.01, 0.05, 0.1, 0.25, 1.0)
    subsamples: int = 5
    min_patients: int = 10
    l2_grid: tuple[float, ...] = (1.0, 10.0, 100.0, 1000.0, 10000.0)
    eval_patients: int = 600
    eval_seed: int = 1000
    val_fraction: float = 0.2
    test_fraction: float = 0.3
    labels: tuple[str, ...] = ()
    headline_labels: tuple[str, ...] = ()
    saturated_auroc: float = 0.97
    risk_derived_labels: tuple[str, ...] = ("high_risk",)
    bootstrap: int = 1000
    repaired: tuple[str, ...] = ('loss.risk_scaling="rank"', 'loss.weight_norm="mean_one"', "loss.use_mask=false",
                                 'loss.unknown_weight="mean"', "loss.weight_power=4.0", "loss.align_weight=0.0")
    threads: int = 1
    diagnose_batches: int = 10
    mitdb: bool = False
    mitdb_stride_s: float = 30.0
    workers: int = 1
    finetune_fractions: tuple[float, ...] = (0.1, 1.0)
    finetune_arms: tuple[str, ...] = ()
    finetune_subsamples: int = 2
    finetune_steps: int = 128
    finetune_batch: int = 32
    finetune_lr: float = 1e-3
    finetune_checks: int = 4

    def __post_init__(self) -> None:
        for name in ("arms", "seeds", "label_fractions", "l2_grid", "labels", "headline_labels", "risk_derived_labels", "repaired",
                     "finetune_fractions", "finetune_arms"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        bad = [a for a in self.arms if a not in ARMS]
        require(bool(self.arms) and not bad, "study.arms", list(self.arms), f"known arms (unknown: {bad}; choose from {', '.join(ARMS)})")
        require(bool(self.seeds), "study.seeds", list(self.seeds), "at least one seed")
        for name in ("subsamples", "min_patients", "bootstrap", "workers", "threads", "finetune_subsamples", "finetune_steps",
                     "finetune_batch", "finetune_checks"):
            require(getattr(self, name) >= 1, f"study.{name}", getattr(self, name), ">= 1")
        require(self.finetune_lr > 0, "study.finetune_lr", self.finetune_lr, "> 0")
        require(bool(self.label_fractions) and all(0 < f <= 1 for f in self.label_fractions), "study.label_fractions",
                list(self.label_fractions), "fractions in (0, 1]")
        require(bool(self.l2_grid) and all(v > 0 for v in self.l2_grid), "study.l2_grid", list(self.l2_grid), "values > 0")
        bad_ft = [a for a in self.finetune_arms if a not in self.arms or a == "features"]
        require(not bad_ft, "study.finetune_arms", list(self.finetune_arms), f"arms with an encoder in study.arms (not {bad_ft})")
        require(all(0 < f <= 1 for f in self.finetune_fractions), "study.finetune_fractions", list(self.finetune_fractions),
                "fractions in (0, 1] ([] = no fine-tuning)")


@dataclasses.dataclass(frozen=True)
class SweepConfig:
    """The ``[sweep]`` section: the default ``grid`` of ``clef sweep`` ("section.key=v1,v2,..." entries)."""

    grid: tuple[str, ...] = ("loss.alpha=0.2,0.5", "loss.tau=0.07,0.1")

    def __post_init__(self) -> None:
        object.__setattr__(self, "grid", tuple(self.grid))


@dataclasses.dataclass(frozen=True)
class EvalSettings:
    """The ``[evaluate]`` config section (see configs/default.toml for each key)."""

    lead: str = "I"
    mode: str = "probe"
    folds: int = 5
    test_fraction: float = 0.3
    seed: int = 0
    batch_size: int = 64
    probe_l2: float = 100.0
    min_per_class: int = 5
    finetune_epochs: int = 3
    finetune_lr: float = 1e-4
    finetune_weight_decay: float = 5e-4
    finetune_batch_size: int = 32
    synth_seed: int = 1
    synth_patients: int = 0
    mitdb_dir: str = ""
    snomed_dir: str = ""
    mitdb_beats_per_class: int = 40
    mitdb_af_windows_per_class: int = 40
    mitdb_window_stride_s: float = 30.0
    evidence_max_patients: int = 600
    evidence_permutations: int = 99
    max_chance_halfwidth: float = 0.1
    operating_sensitivity: float = 0.9

    def __post_init__(self) -> None:
        require(self.mode in MODES, "evaluate.mode", self.mode, " | ".join(MODES))
        require(self.folds >= 2, "evaluate.folds", self.folds, ">= 2")
        require(0 < self.operating_sensitivity <= 1, "evaluate.operating_sensitivity", self.operating_sensitivity, "in (0, 1]")
        require(0 < self.test_fraction < 1, "evaluate.test_fraction", self.test_fraction, "in (0, 1)")
        require(self.probe_l2 >= 0, "evaluate.probe_l2", self.probe_l2, ">= 0")
        require(self.min_per_class >= 1, "evaluate.min_per_class", self.min_per_class, ">= 1")
        for name in ("mitdb_beats_per_class", "mitdb_af_windows_per_class"):
            require(getattr(self, name) >= 0, f"evaluate.{name}", getattr(self, name), ">= 0 (0: all)")
        require(self.mitdb_window_stride_s > 0, "evaluate.mitdb_window_stride_s", self.mitdb_window_stride_s, "> 0")
