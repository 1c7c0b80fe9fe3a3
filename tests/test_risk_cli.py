"""`clef risk`, `clef metadata --risk`, the [risk] section through config, pipeline, pretraining and
`clef diagnose`."""

from __future__ import annotations

import json
import warnings

import pandas as pd
import pytest

from clef.cli import main
from clef_core.config import ConfigError, ConfigWarning, load_config

EXAMPLE = ["age=50", "sex=female", "sbp=160", "bp_treated=1", "total_chol=200", "hdl=45", "chol_unit=mg/dL", "statin=0",
           "diabetes=1", "smoker=0", "egfr=90", "bmi=35"]


def test_clef_risk_prints_one_json_object(capsys):
    assert main(["risk", "prevent", *EXAMPLE]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["variant"] == "base" and round(out["risk"]["10y"]["total_cvd"], 3) == 0.147
    assert set(out["risk"]) == {"10y", "30y"} and set(out["risk"]["30y"]) == {"total_cvd", "ascvd", "heart_failure"}
    assert main(["risk", "score2", "age=50", "sex=male", "sbp=140", "total_chol=5.5", "hdl=1.3", "smoking=1", "diabetes=0",
                 "region=very_high"]) == 0
    assert round(json.loads(capsys.readouterr().out)["risk"]["10y"]["cvd"], 3) == 0.140  # SCORE2 paper: 14.0 %


@pytest.mark.parametrize("bad, message", [
    (["sbp=400"], "clef risk: sbp 400 mmHg outside 60-300"),
    (["age=25"], "clef risk: age 25 outside 30-79"),
    (["weight=80"], "clef risk: unknown input 'weight'"),
    (["bmi"], "clef risk: 'bmi' is not KEY=VALUE"),
])
def test_clef_risk_bad_input_is_one_line(capsys, bad, message):
    keys = {item.split("=")[0] for item in bad}
    assert main(["risk", "prevent", *(e for e in EXAMPLE if e.split("=")[0] not in keys), *bad]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(message) and "\n" not in err


def test_old_score2_section_loads_with_a_message(tmp_path):
    path = tmp_path / "old.toml"
    path.write_text('[score2]\nregion = "high"\nmissing_policy = "impute_reference"\n')
    with pytest.warns(ConfigWarning, match=r"\[score2\] section is now \[risk\]"):
        cfg = load_config(path)
    assert cfg["risk"]["region"] == "high" and cfg["risk"]["missing_policy"] == "impute_reference" and cfg["risk"]["model"] == "score2"
    path.write_text('[score2]\nregion = "high"\n[risk]\nregion = "low"\n')
    with pytest.raises(ConfigError, match="keep only"), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConfigWarning)
        load_config(path)
    with pytest.raises(ValueError, match="risk.model: unknown model .framingham."):
        from clef_core.experiment import load_experiment

        load_experiment(overrides=['risk.model="framingham"'])


def test_clef_metadata_risk_flag(tiny_site, tmp_path, capsys):
    out = tmp_path / "t.csv"
    assert main(["metadata", str(tiny_site.root), "--out", str(out), "--risk", "prevent"]) == 0
    printed = capsys.readouterr().out
    assert "risk model prevent (variant base, 10-year total_cvd" in printed and "egfr" in printed
    table = pd.read_csv(out)
    assert (table["risk_model"] == "prevent").all() and table["src_egfr"].fillna("").str.startswith("CKD-EPI 2021").any()
    assert json.loads(out.with_suffix(".json").read_text())["risk_model"] == "prevent"


def test_pretraining_and_diagnose_use_the_configured_model(tiny_config, tmp_path, capsys):
    """The pipeline's clinical table follows [risk] (re-extracted when it changes), pretraining
    runs on it unchanged, and `clef diagnose` names the model."""
    from clef_core.checkpoint import load_model
    from clef_core.prepared_site import default_cohort, prepare_site
    from clef_core.train import pretrain

    cfg = tiny_config.replace(risk={"model": "prevent"})
    site = prepare_site(default_cohort(tmp_path, cfg), tmp_path, cfg)
    assert (site.clinical["risk_model"] == "prevent").all() and site.clinical["risk"].notna().any()
    assert site.clinical["risk"].dropna().between(0, 1).all()
    result = pretrain(cfg, run_dir=tmp_path / "run", site=site, progress=False)
    assert load_model(result.final_model).provenance["risk"]["model"] == "prevent"
    cfg = cfg.replace(risk={"model": "pce"})
    again = prepare_site(default_cohort(tmp_path, cfg), tmp_path, cfg)
    assert (again.clinical["risk_model"] == "pce").all()
    code = main(["diagnose", "--cohort", str(site.root), "--work", str(tmp_path / "w"), "--batches", "1",
                 "--set", "train.batch_size=8", "--set", 'risk.model="prevent"'])
    assert code == 0 and "clinical risk: prevent (variant base" in capsys.readouterr().out
