"""The one configuration system: values checked against the defaults' types at load time."""

from __future__ import annotations

from pathlib import Path

import pytest

from clef.cli import main
from clef_core.config import ConfigError, config_names, load_config, merge


def test_values_must_have_the_type_of_their_default() -> None:
    with pytest.raises(ConfigError, match=r"federation.rounds = 'three': expected an integer \(default 10\)"):
        load_config(None, ["federation.rounds=three"])
    with pytest.raises(ConfigError, match=r"loss.tau = 'abc': expected a number"):
        load_config(None, ["loss.tau=abc"])
    with pytest.raises(ConfigError, match=r"loss.use_mask = 1: expected a boolean"):
        load_config(None, ["loss.use_mask=1"])
    with pytest.raises(ConfigError, match=r"federation.rounds = 3.5: expected an integer"):
        load_config(None, ["federation.rounds=3.5"])
    with pytest.raises(ConfigError, match=r"synth.records_per_patient\[1\] = 2.5: expected an integer"):
        load_config(None, ["synth.records_per_patient=[1, 2.5]"])
    with pytest.raises(ConfigError, match=r"federation.site_dirs\[1\] = 3: expected a string"):
        load_config(None, ['federation.site_dirs=["a", 3]'])
    with pytest.raises(ConfigError, match=r"synth.records_per_patient = 3: expected a list"):
        load_config(None, ["synth.records_per_patient=3"])
    with pytest.raises(ConfigError, match=r"loss is a section, not a value"):
        load_config(None, ["loss=3"])


def test_int_for_float_and_text_for_strings_are_accepted() -> None:
    cfg = load_config(None, ["loss.tau=1", "train.device=0", 'model.scale="medium"', "evaluate.lead=I,II",
                             "federation.site_dirs=[]", 'federation.site_dirs=["a", "b"]'])
    assert cfg["loss"]["tau"] == 1.0 and isinstance(cfg["loss"]["tau"], float)
    assert cfg["train"]["device"] == "0" and cfg["model"]["scale"] == "medium" and cfg["evaluate"]["lead"] == "I,II"
    assert cfg["federation"]["site_dirs"] == ["a", "b"]


def test_string_values_are_the_same_quoted_or_not() -> None:
    """The README writes string values unquoted; TOML quoting gives the same config."""
    plain = ["federation.split=dirichlet", "federation.strategy=fedprox", "federation.cohort=/data/mimic-iv-ecg",
             "metadata.hosp_dir=/data/mimic-iv/hosp", "train.device=true"]
    quoted = [f'{k}="{v}"' for k, v in (item.split("=", 1) for item in plain)]
    assert load_config(None, plain) == load_config(None, quoted)
    assert load_config(None, plain)["train"]["device"] == "true"


def test_unknown_keys_suggest_the_nearest_and_missing_configs_list_the_names(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown config key 'federation.round'; did you mean 'federation.rounds'"):
        load_config(None, ["federation.round=3"])
    with pytest.raises(ConfigError, match=r"unknown config section 'fedration'; did you mean 'federation'"):
        load_config(None, ["fedration.rounds=3"])
    assert {"default", "simulate-small", "simulate-dp"} <= set(config_names())
    assert "site-template" not in config_names()  # a hospital's site file, not an experiment
    with pytest.raises(ConfigError, match=r"config file not found: simulate-smal .*simulate-small"):
        load_config("simulate-smal")
    bad = tmp_path / "bad.toml"
    bad.write_text("[loss]\ntau = \"x\"\n")
    with pytest.raises(ConfigError, match=rf"{bad}: loss.tau = 'x': expected a number"):
        load_config(bad)
    assert merge({"a": 1}, {"a": "x"}, strict=False) == {"a": "x"}  # only a strict merge checks


def test_cli_reports_a_bad_value_at_once(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "--set", "loss.tau=abc"]) == 2
    assert "clef config: config error: loss.tau = 'abc'" in capsys.readouterr().err
    assert main(["simulate", "--out", "/nonexistent/never-created", "--set", "federation.rounds=three"]) == 2
    assert "federation.rounds = 'three'" in capsys.readouterr().err
    assert main(["simulate", "--out", "/nonexistent/never-created", "--set", "federation.strategy=fedprx"]) == 2
    assert "federation.strategy = 'fedprx': expected fedavg | fedprox" in capsys.readouterr().err
    assert not Path("/nonexistent/never-created").exists()
