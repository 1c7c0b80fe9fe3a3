"""The typed Experiment: one dataclass per [section], the single source of the defaults."""

from __future__ import annotations

import dataclasses

import pytest

from clef_core.config import ConfigError, config_names, configs_dir, flatten, load_config, read_toml
from clef_core.experiment import Experiment, load_experiment, section_types
from clef_core.metadata import MetadataConfig
from clef_core.risk import RiskSettings
from clef_core.train.settings import LossConfig


def _typed(value):
    """A value with its TOML type kept apart (1 != 1.0 != True here), lists for tuples."""
    if isinstance(value, (list, tuple)):
        return ("list", [_typed(v) for v in value])
    return (type(value).__name__, value)


def test_default_toml_says_what_the_dataclasses_say_key_by_key() -> None:
    toml = read_toml(configs_dir() / "default.toml")
    ours = Experiment().to_dict()
    assert list(toml) == list(section_types()) == list(ours)  # every [section] is a field, in the file's order
    for section, keys in toml.items():
        assert set(keys) == set(ours[section]), (section, set(keys) ^ set(ours[section]))
        for key, value in keys.items():
            assert _typed(ours[section][key]) == _typed(value), f"{section}.{key}: default.toml {value!r}, dataclass {ours[section][key]!r}"


@pytest.mark.parametrize("name", config_names())
def test_every_shipped_config_round_trips(name: str) -> None:
    cfg = load_config(name)
    exp = load_experiment(name)
    assert exp.to_dict() == cfg and flatten(cfg) == exp.flat()
    assert Experiment.from_dict(exp.to_dict()) == exp


def test_from_dict_checks_like_a_config_file_and_fills_defaults() -> None:
    exp = Experiment.from_dict({"train": {"max_steps": 3}, "loss": {"tau": 1}})
    assert exp.train.max_steps == 3 and exp.loss.tau == 1.0 and isinstance(exp.loss.tau, float)
    assert exp.federation == Experiment().federation
    with pytest.raises(ConfigError, match=r"unknown config key 'train.max_step'; did you mean 'train.max_steps'"):
        Experiment.from_dict({"train": {"max_step": 3}})
    with pytest.raises(ConfigError, match=r"federation.rounds = 'three': expected an integer"):
        Experiment.from_dict({"federation": {"rounds": "three"}})
    with pytest.raises(ConfigError, match=r"train.lr = 0.0: expected > 0"):
        Experiment.from_dict({"train": {"lr": 0.0}})
    with pytest.raises(ConfigError, match=r"federation.strategy = 'fedprx': expected fedavg \| fedprox"):
        Experiment.from_dict({"federation": {"strategy": "fedprx"}})
    with pytest.raises(ConfigError, match=r"privacy.noise_multiplier = 0.0: expected > 0 when mode = 'patient'"):
        Experiment.from_dict({"privacy": {"mode": "patient", "noise_multiplier": 0.0}})
    with pytest.raises(ConfigError, match=r"model.scale = 'huge': expected small \| medium"):
        Experiment.from_dict({"model": {"scale": "huge"}})
    with pytest.raises(ConfigError, match=r"unknown config key 'privacy.ledger_dir'"):  # a site's, not the run's
        Experiment.from_dict({"privacy": {"ledger_dir": "/tmp/x"}})


def test_replace_is_checked_and_leaves_the_original_alone() -> None:
    exp = load_experiment(None, ["train.epochs=2"])
    quick = exp.replace(train={"max_steps": 3}, loss=LossConfig(kind="ntxent"), study={"seeds": (4,)})
    assert (quick.train.max_steps, quick.train.epochs, quick.loss.kind, quick.study.seeds) == (3, 2, "ntxent", (4,))
    assert exp.train.max_steps == 0 and exp.loss.kind == "clef"
    assert exp.with_overrides(["train.max_steps=3"]).train == quick.train
    with pytest.raises(dataclasses.FrozenInstanceError):
        exp.train = quick.train  # type: ignore[misc]
    with pytest.raises(ConfigError, match=r"unknown config key 'train.max_step'"):
        exp.replace(train={"max_step": 3})
    with pytest.raises(ConfigError, match=r"unknown config section"):
        exp.replace(trian={"max_steps": 3})
    with pytest.raises(ConfigError, match=r"train.batch_size = 0: expected >= 1"):
        exp.replace(train={"batch_size": 0})


def test_metadata_holds_the_experiments_risk() -> None:
    exp = load_experiment(None, ['risk.model="prevent"', "metadata.window_days=30"])
    assert exp.metadata.risk is exp.risk and exp.metadata.window_days == 30
    assert exp.replace(risk={"region": "high"}).metadata.risk.region == "high"
    with pytest.raises(ConfigError, match="metadata.risk differs"):
        Experiment(risk=RiskSettings(model="pce"), metadata=MetadataConfig(risk=RiskSettings(model="prevent")))
    # the table's JSON sidecar keeps its flat keys (old sidecars and caches still match)
    side = exp.metadata.replace(region="high", policy="impute_reference").sidecar()
    assert side["risk_model"] == "prevent" and side["region"] == "high" and side["policy"] == "impute_reference"
    assert "risk" not in side and side["window_days"] == 30
