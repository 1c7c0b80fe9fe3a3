"""Cohort -> simulated sites: patient-disjoint, reproducible, the cart rule, real WFDB folders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clef_core.config import ConfigError
from simulations.partition import (
    HOLDOUT,
    SplitError,
    SplitSpec,
    assign_sites,
    majority_cart,
    patient_table,
    read_split,
    risk_category,
    skewed_sizes,
    split_cohort,
)


def make_mimic_tables(root: Path, patients: int = 60, seed: int = 0) -> Path:
    """CSV tables of a MIMIC-IV-ECG-layout cohort (no signal files: splitting never reads them)."""
    rng = np.random.default_rng(seed)
    rows, carts, labels = [], [], []
    study = 40000000
    for p in range(patients):
        subject = str(10000000 + p)
        home_cart = int(rng.integers(0, 4))
        for k in range(int(rng.integers(1, 4))):
            study += 1
            cart = home_cart if k == 0 or rng.random() < 0.7 else int(rng.integers(0, 4))
            path = f"files/p{subject[:4]}/p{subject}/s{study}/{study}"
            rows.append((subject, str(study), f"{study}.hea", "2180-01-01 10:00:00", path))
            carts.append((subject, str(study), f"cart{cart}", "2180-01-01 10:00:00"))
            labels.append((str(study), subject, int(p % 3 == 0), int(p % 5 == 0)))
    root.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=["subject_id", "study_id", "file_name", "ecg_time", "path"]).to_csv(
        root / "record_list.csv", index=False)
    pd.DataFrame(carts, columns=["subject_id", "study_id", "cart_id", "ecg_time"]).to_csv(
        root / "machine_measurements.csv", index=False)
    pd.DataFrame(labels, columns=["study_id", "subject_id", "af", "lvh"]).to_csv(root / "labels.csv", index=False)
    (root / "files").mkdir(exist_ok=True)
    (root / "hosp").mkdir(exist_ok=True)
    return root


@pytest.fixture()
def cohort(tmp_path: Path) -> Path:
    return make_mimic_tables(tmp_path / "cohort")


@pytest.mark.parametrize("kind", ["iid", "cart", "dirichlet", "skew"])
def test_split_is_patient_disjoint_complete_and_reproducible(cohort: Path, tmp_path: Path, kind: str) -> None:
    spec = SplitSpec(kind=kind, sites=3, seed=7, beta=0.5, by="af", holdout=0.2, min_site_patients=2)
    split = split_cohort(cohort, tmp_path / "split", spec)
    manifests = [pd.read_csv(s.dir / "manifest.csv", dtype=str) for s in split.sites]
    subjects = [set(m["subject_id"]) for m in manifests]
    held = set(pd.read_csv(split.holdout.dir / "manifest.csv", dtype=str)["subject_id"])
    everyone = set(pd.read_csv(cohort / "record_list.csv", dtype=str)["subject_id"])
    groups = subjects + [held]
    assert sum(len(g) for g in groups) == len(everyone) == len(set().union(*groups))  # disjoint and complete
    assert len(held) == round(0.2 * len(everyone))
    # each site folder is a cohort of the same layout, restricted to its patients
    for site, manifest in zip(split.sites, manifests, strict=True):
        records = pd.read_csv(site.dir / "record_list.csv", dtype=str)
        assert set(records["study_id"]) == set(manifest["record_id"])
        assert (site.dir / "files").is_symlink() and (site.dir / "hosp").is_symlink()
    again = assign_sites(patient_table(cohort), spec)
    assert np.array_equal(again, assign_sites(patient_table(cohort), spec))
    other_seed = assign_sites(patient_table(cohort), SplitSpec(**{**spec.__dict__, "seed": 8}))
    assert not np.array_equal(again, other_seed)


def test_cart_split_follows_the_majority_cart(cohort: Path) -> None:
    records = pd.DataFrame({"subject_id": ["a", "a", "a", "b", "b"],
                            "record_id": ["1", "2", "3", "4", "5"],
                            "cart_id": ["c2", "c1", "c2", "c3", "c1"]})
    assert majority_cart(records).to_dict() == {"a": "c2", "b": "c1"}  # b: tie -> smallest id
    patients = patient_table(cohort)
    site = assign_sites(patients, SplitSpec(kind="cart", sites=0, holdout=0.0))
    for cart, group in patients.assign(site=site).groupby("cart"):
        assert group["site"].nunique() == 1, f"patients of {cart} landed on several sites"
    assert len(set(site)) == patients["cart"].nunique()  # sites=0: one site per cart
    grouped = assign_sites(patients, SplitSpec(kind="cart", sites=2, holdout=0.0))
    assert len(set(grouped)) == 2


def test_dirichlet_small_beta_makes_sites_heterogeneous(tmp_path: Path) -> None:
    cohort = make_mimic_tables(tmp_path / "big", patients=400, seed=1)
    patients = patient_table(cohort)

    def spread(beta: float) -> float:
        site = assign_sites(patients, SplitSpec(kind="dirichlet", sites=4, beta=beta, by="af", holdout=0.0, seed=3))
        rates = patients.assign(site=site).groupby("site")["label:af"].mean()
        return float(rates.max() - rates.min())

    assert spread(0.1) > spread(100.0)


def test_skew_sizes_and_holdout() -> None:
    sizes = skewed_sizes(100, 4, sigma=1.5, minimum=3, seed=0)
    assert sum(sizes) == 100 and min(sizes) >= 3 and max(sizes) > 2 * min(sizes)
    patients = pd.DataFrame({"subject_id": [str(i) for i in range(50)], "cart": pd.NA, "stratum": "unknown"})
    site = assign_sites(patients, SplitSpec(kind="iid", sites=2, holdout=0.3))
    assert (site == HOLDOUT).sum() == 15


def test_bad_settings_are_named(cohort: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="federation.split"):
        SplitSpec(kind="random")
    with pytest.raises(SplitError, match="dirichlet_by"):
        split_cohort(cohort, tmp_path / "s1", SplitSpec(kind="dirichlet", by="nosuchlabel"))
    with pytest.raises(SplitError, match="min_site_patients"):
        split_cohort(cohort, tmp_path / "s2", SplitSpec(kind="iid", sites=40, min_site_patients=2))
    with pytest.raises(SplitError, match="does not exist"):
        split_cohort(tmp_path / "absent", tmp_path / "s3", SplitSpec())
    split_cohort(cohort, tmp_path / "s4", SplitSpec(seed=1))
    with pytest.raises(SplitError, match="already holds a split"):
        split_cohort(cohort, tmp_path / "s4", SplitSpec(seed=2))


def test_risk_categories_follow_esc_2021() -> None:
    assert risk_category(0.02, 45) == "low_moderate"
    assert risk_category(0.03, 45) == "high"
    assert risk_category(0.08, 60) == "high"
    assert risk_category(0.10, 60) == "very_high"
    assert risk_category(0.16, 75) == "very_high"
    assert risk_category(float("nan"), 60) == "unknown"


def test_risk_categories_follow_the_risk_model() -> None:
    # ACC/AHA 2019 bands for PCE / PREVENT (age plays no part), ESC 2023 for SCORE2-Diabetes
    assert risk_category(0.03, 45, "pce") == "low_moderate"
    assert risk_category(0.08, 45, "prevent") == "high"
    assert risk_category(0.20, 75, "pce") == "very_high"
    assert risk_category(0.08, 60, "score2_diabetes") == "low_moderate"
    assert risk_category(0.15, 60, "score2_diabetes") == "high"
    with pytest.raises(ValueError, match="no risk categories"):
        risk_category(0.1, 60, "framingham")


def test_wfdb_folder_split_links_real_records(shared_data: Path, tmp_path: Path) -> None:
    split = split_cohort(shared_data / "ecg", tmp_path / "split", SplitSpec(kind="iid", sites=3, holdout=0.0))
    linked = sorted(p.name for s in split.sites for p in s.dir.iterdir() if p.suffix == ".hea")
    originals = sorted(p.name for p in (shared_data / "ecg").glob("*.hea"))
    assert linked == originals
    assert all((s.dir / f"{r}.mat").exists() for s in split.sites
               for r in pd.read_csv(s.dir / "manifest.csv", dtype=str)["record_id"])
    meta = json.loads((split.root / "split.json").read_text())
    assert [s["records"] for s in meta["sites"]] == [s.records for s in read_split(split.root).sites]
