"""One experiment, typed: an :class:`Experiment` holds one frozen dataclass per ``[section]`` of
configs/default.toml, and those dataclasses' defaults are the defaults (tests/test_experiment.py
asserts that default.toml, which keeps the comments, says the same key by key).

>>> exp = load_experiment("simulate-small", ["train.max_steps=3"])   # file + --set overrides, checked
>>> exp.train.max_steps, exp.federation.rounds
>>> quick = exp.replace(train={"epochs": 2}, loss={"tau": 0.1})    # a new, validated Experiment
>>> exp.to_dict()                                                   # the nested dict: run_config, provenance

The dict form stays the wire and file format (:func:`clef_core.config.load_config`, Flower's flat
run_config via :func:`clef_core.config.flatten`, the config stored in checkpoints); code takes the
typed section it needs (``exp.train``, ``exp.loss``, ...).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from clef_core.config import ConfigError, apply_overrides, flatten, load_config, merge, upgrade_legacy
from clef_core.data.augment import ViewConfig
from clef_core.data.preprocess import PreprocessConfig
from clef_core.encoders.settings import ModelConfig
from clef_core.evaluation.settings import EvalSettings, StudyConfig, SweepConfig
from clef_core.federation.settings import FederationSettings
from clef_core.metadata.table import MetadataConfig
from clef_core.privacy.settings import SITE_OWNED, PrivacyConfig
from clef_core.risk.settings import RiskSettings
from clef_core.synth.cohort import SynthConfig
from clef_core.train.settings import DistillConfig, LossConfig, TrainConfig

# fields of a section's dataclass that are not keys of its [section]: MetadataConfig.risk is the
# [risk] section; the site-owned privacy fields come from a site's policy, never from the experiment
NOT_KEYS = {"metadata": ("risk",), "privacy": SITE_OWNED}


@dataclasses.dataclass(frozen=True)
class Experiment:
    """Every setting of one experiment, a section per field (configs/default.toml documents each key)."""

    risk: RiskSettings = dataclasses.field(default_factory=RiskSettings)
    metadata: MetadataConfig = dataclasses.field(default_factory=MetadataConfig)
    preprocess: PreprocessConfig = dataclasses.field(default_factory=PreprocessConfig)
    views: ViewConfig = dataclasses.field(default_factory=ViewConfig)
    synth: SynthConfig = dataclasses.field(default_factory=SynthConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    loss: LossConfig = dataclasses.field(default_factory=LossConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    federation: FederationSettings = dataclasses.field(default_factory=FederationSettings)
    evaluate: EvalSettings = dataclasses.field(default_factory=EvalSettings)
    sweep: SweepConfig = dataclasses.field(default_factory=SweepConfig)
    study: StudyConfig = dataclasses.field(default_factory=StudyConfig)
    privacy: PrivacyConfig = dataclasses.field(default_factory=PrivacyConfig)
    distill: DistillConfig = dataclasses.field(default_factory=DistillConfig)

    def __post_init__(self) -> None:
        for name, cls in section_types().items():
            if not isinstance(getattr(self, name), cls):
                raise ConfigError(f"Experiment.{name} must be a {cls.__name__}, got {type(getattr(self, name)).__name__}")
        if self.metadata.risk != self.risk:  # one [risk]: the metadata extraction uses the experiment's
            if self.metadata.risk != RiskSettings():
                raise ConfigError("Experiment.metadata.risk differs from Experiment.risk: set the [risk] section")
            object.__setattr__(self, "metadata", dataclasses.replace(self.metadata, risk=self.risk))
        moved = [k for k in SITE_OWNED if getattr(self.privacy, k) != getattr(PrivacyConfig(), k)]
        if moved:
            raise ConfigError(f"privacy.{moved[0]} is set by a site's own policy, not by the experiment")

    @classmethod
    def from_dict(cls, nested: Mapping[str, Any], *, where: str = "") -> Experiment:
        """From the nested dict form (``load_config``, a checkpoint's stored config, a run_config
        unflattened), checked like a config file: an unknown key or a value of the wrong type is a
        :class:`ConfigError`; a missing key takes its default; an old [score2] section is read as [risk]."""
        try:
            cfg = merge(Experiment().to_dict(), upgrade_legacy(nested, where or "experiment"), strict=True)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}" if where else str(exc)) from exc
        try:
            risk = RiskSettings(**cfg["risk"])
            sections: dict[str, Any] = {name: kind(**cfg[name]) for name, kind in section_types().items()
                                        if name not in ("risk", "metadata")}
            return cls(risk=risk, metadata=MetadataConfig(**cfg["metadata"], risk=risk), **sections)
        except ConfigError:
            raise
        except ValueError as exc:  # a section's own check (e.g. an unknown risk.region): a config error too
            raise ConfigError(f"{where}: {exc}" if where else str(exc)) from exc

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """The nested dict (``from_dict(exp.to_dict()) == exp``; lists where the dataclass holds tuples)."""
        return {name: section_dict(name, getattr(self, name)) for name in section_types()}

    def flat(self) -> dict[str, Any]:
        """``{"section.key": value}``: the form of Flower's run_config."""
        return flatten(self.to_dict())

    def replace(self, **sections: Mapping[str, Any] | Any) -> Experiment:
        """A new Experiment with whole sections or some of their keys replaced, checked as a config file is:
        ``exp.replace(train={"max_steps": 3}, loss=LossConfig(kind="ntxent"))``."""
        unknown = sorted(set(sections) - set(section_types()))
        if unknown:
            raise ConfigError(f"unknown config section(s) {unknown} (sections: {', '.join(section_types())})")
        update = {name: section_dict(name, value) if dataclasses.is_dataclass(value) else _plain(value)
                  for name, value in sections.items()}
        return Experiment.from_dict(merge(self.to_dict(), update, strict=True))

    def with_overrides(self, overrides: Iterable[str]) -> Experiment:
        """A new Experiment with ``section.key=value`` overrides applied (as ``--set`` does)."""
        return Experiment.from_dict(apply_overrides(self.to_dict(), overrides))


def section_types() -> dict[str, type]:
    """``{section name: its dataclass}`` in the order of configs/default.toml."""
    return {f.name: f.default_factory for f in dataclasses.fields(Experiment)}  # type: ignore[misc]


def section_dict(name: str, section: Any) -> dict[str, Any]:
    """The keys of ``[name]`` with the values of ``section`` (a section dataclass), as plain TOML values."""
    skip = NOT_KEYS.get(name, ())
    return {f.name: _plain(getattr(section, f.name)) for f in dataclasses.fields(section) if f.name not in skip}


def _plain(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


def load_experiment(file: str | Path | None = None, overrides: Iterable[str] = ()) -> Experiment:
    """Defaults, then ``file`` (a path or a name in configs/), then ``--set`` overrides
    (:func:`clef_core.config.load_config`, its checks and messages), as an :class:`Experiment`."""
    return Experiment.from_dict(load_config(file, overrides))
