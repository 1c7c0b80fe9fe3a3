"""Split one cohort into simulated hospital sites: patient-disjoint, reproducible from a seed.

A split works on patients (``subject_id``), never on single ECGs, so no patient is seen by two
sites or by a site and the held-out probe set. Kinds (``[federation] split``):

* ``iid``       -- shuffled patients cut into equal shards (flwr-datasets ``IidPartitioner``).
* ``cart``      -- by ECG cart (``cart_id`` of machine_measurements.csv), a proxy for device and
                   ward. A patient recorded on several carts goes to the cart that recorded most of
                   their ECGs (ties: the smallest cart id). One site per cart
                   (``NaturalIdPartitioner``); with more carts than ``sites`` the sorted carts are
                   grouped into ``sites`` sites (``GroupedNaturalIdPartitioner``).
* ``dirichlet`` -- per stratum, site shares ~ Dirichlet(beta) (Hsu et al. 2019,
                   arXiv:1909.06335; ``DirichletPartitioner``). Strata: the patient's SCORE2 risk
                   category (ESC 2021 age-specific thresholds, "unknown" when risk is undefined)
                   or a binary label column of labels.csv.
* ``skew``      -- patient-count skew: site sizes proportional to lognormal(0, sigma) draws
                   (``SizePartitioner`` over shuffled patients).

A fraction ``holdout`` of patients (seeded) is set aside first for the server's linear probe.

:func:`write_split` materialises each site as a cohort folder of the same layout as the source
(MIMIC-IV-ECG: filtered CSV tables plus links to ``files/`` and ``hosp/``; WFDB folder: links
to the site's record files) and a ``manifest.csv`` of its ``record_id,subject_id``, so a
simulated site is read exactly like a real site folder given with ``--sites``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from clef_core.config import ConfigError
from clef_core.data.records import find_table

SPLIT_KINDS = ("iid", "cart", "dirichlet", "skew")
SPLIT_FORMAT = "clef-split"
SPLIT_VERSION = 1
HOLDOUT = -1
# per-record / per-patient tables of a MIMIC-layout cohort that a site folder gets filtered copies of
FILTERED_TABLES = ("record_list", "machine_measurements", "labels", "truth")
# ESC 2021 SCORE2/SCORE2-OP risk categories: (upper age bound, "high" from, "very high" from)
RISK_THRESHOLDS = ((50, 0.025, 0.075), (70, 0.05, 0.10), (math.inf, 0.075, 0.15))
# (high, very high) 10-year risk cut-offs of the models whose categories do not depend on age:
# PCE and PREVENT: the ACC/AHA 2019 primary-prevention bands (intermediate from 7.5 %, high from 20 %;
# Arnett et al., Circulation 2019); SCORE2-Diabetes: ESC 2023 diabetes guideline (high 10-20 %,
# very high >= 20 %; Marx et al., Eur Heart J 2023).
FLAT_RISK_THRESHOLDS = {"pce": (0.075, 0.20), "prevent": (0.075, 0.20), "score2_diabetes": (0.10, 0.20)}


class SplitError(ValueError):
    """A cohort cannot be split as configured; the message names the cohort and the setting."""


@dataclasses.dataclass(frozen=True)
class SplitSpec:
    """How one cohort becomes sites (the split keys of ``[federation]``)."""

    kind: str = "iid"
    sites: int = 3
    seed: int = 0
    beta: float = 0.5
    by: str = "risk"
    skew_sigma: float = 1.0
    min_site_patients: int = 2
    holdout: float = 0.2

    def __post_init__(self) -> None:
        if self.kind not in SPLIT_KINDS:
            raise ConfigError(f"federation.split = {self.kind!r}: expected one of {', '.join(SPLIT_KINDS)}")
        if self.sites < 1 and self.kind != "cart":
            raise ConfigError(f"federation.sites = {self.sites}: expected >= 1")
        if not self.beta > 0:
            raise ConfigError(f"federation.dirichlet_beta = {self.beta}: expected > 0")
        if not 0 <= self.holdout < 1:
            raise ConfigError(f"federation.holdout = {self.holdout}: expected in [0, 1)")
        if self.min_site_patients < 1:
            raise ConfigError(f"federation.min_site_patients = {self.min_site_patients}: expected >= 1")
        if self.skew_sigma < 0:
            raise ConfigError(f"federation.skew_sigma = {self.skew_sigma}: expected >= 0")

    @classmethod
    def from_federation(cls, fed: Mapping[str, Any]) -> SplitSpec:
        return cls(
            kind=str(fed["split"]),
            sites=int(fed["sites"]),
            seed=int(fed["split_seed"]),
            beta=float(fed["dirichlet_beta"]),
            by=str(fed["dirichlet_by"]),
            skew_sigma=float(fed["skew_sigma"]),
            min_site_patients=int(fed["min_site_patients"]),
            holdout=float(fed["holdout"]),
        )


@dataclasses.dataclass
class SplitSite:
    site_id: str
    dir: Path
    patients: int
    records: int


@dataclasses.dataclass
class Split:
    """A written split: the site folders (partition-id order) and the held-out folder (or None)."""

    root: Path
    sites: list[SplitSite]
    holdout: SplitSite | None
    spec: SplitSpec


# ----------------------------------------------------------------------------- reading a cohort


def is_mimic_layout(cohort: Path) -> bool:
    return find_table(cohort, "record_list") is not None


def read_table(cohort: Path, name: str) -> pd.DataFrame | None:
    path = find_table(cohort, name)
    if path is None:
        return None
    try:
        return pd.read_csv(path, dtype={"subject_id": str, "study_id": str, "cart_id": str})
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise SplitError(f"{path}: not a readable CSV table ({exc})") from exc


def wfdb_records(cohort: Path) -> list[str]:
    """Record ids (relative paths without extension, posix) of every WFDB header under ``cohort``."""
    return sorted(p.relative_to(cohort).with_suffix("").as_posix() for p in cohort.rglob("*.hea"))


def records_table(cohort: Path) -> pd.DataFrame:
    """One row per ECG: ``record_id, subject_id`` (+ ``cart_id`` when the cohort has carts)."""
    cohort = Path(cohort)
    if not cohort.is_dir():
        raise SplitError(f"cohort folder {cohort} does not exist")
    records = read_table(cohort, "record_list")
    if records is None:
        ids = wfdb_records(cohort)
        if not ids:
            raise SplitError(f"{cohort}: neither a MIMIC-IV-ECG layout (record_list.csv) nor a folder of WFDB records")
        # a WFDB folder names no patients: each record is its own patient
        return pd.DataFrame({"record_id": ids, "subject_id": ids})
    for column in ("subject_id", "study_id"):
        if column not in records.columns:
            raise SplitError(f"{find_table(cohort, 'record_list')}: missing column '{column}'")
    table = pd.DataFrame({"record_id": records["study_id"].astype(str), "subject_id": records["subject_id"].astype(str)})
    carts = read_table(cohort, "machine_measurements")
    if carts is not None and {"study_id", "cart_id"} <= set(carts.columns):
        cart_of = carts.drop_duplicates("study_id").set_index("study_id")["cart_id"].astype(str)
        table["cart_id"] = table["record_id"].map(cart_of)
    return table


def risk_category(risk: float, age: float, model: str = "score2") -> str:
    """The risk category of one patient under ``model``: low-to-moderate, high, very high.

    SCORE2 (age < 70) / SCORE2-OP (>= 70): the ESC 2021 prevention guideline's age-specific
    thresholds (Visseren et al., Eur Heart J 2021); the other models: ``FLAT_RISK_THRESHOLDS``.
    "unknown" when the risk or age is undefined."""
    if risk is None or age is None or not (np.isfinite(risk) and np.isfinite(age)):
        return "unknown"
    if model in FLAT_RISK_THRESHOLDS:
        bands: tuple[tuple[float, float, float], ...] = ((math.inf, *FLAT_RISK_THRESHOLDS[model]),)
    elif model == "score2":
        bands = RISK_THRESHOLDS
    else:
        raise ValueError(f"risk_category: no risk categories for risk model {model!r}")
    for upper, high, very_high in bands:
        if age < upper:
            return "very_high" if risk >= very_high else "high" if risk >= high else "low_moderate"
    return "unknown"


def patient_table(cohort: Path, clinical: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per patient, sorted by ``subject_id``: ``records``, ``cart`` (majority cart, or NA),
    ``stratum`` (the risk model's category, :func:`risk_category`, from ``clinical``'s ``risk``/``age``/``risk_model``
    at the patient's first ECG)
    and every binary label column of labels.csv as ``label:<name>`` (1 if any ECG is positive)."""
    cohort = Path(cohort)
    records = records_table(cohort)
    patients = records.groupby("subject_id", sort=True).size().rename("records").to_frame()
    if "cart_id" in records.columns:
        patients["cart"] = majority_cart(records)
    else:
        patients["cart"] = pd.NA
    patients["stratum"] = "unknown"
    if clinical is not None and {"subject_id", "risk", "age"} <= set(clinical.columns):
        first = clinical.assign(subject_id=clinical["subject_id"].astype(str))
        if "ecg_time" in first.columns:
            first = first.sort_values("ecg_time", kind="stable")
        first = first.drop_duplicates("subject_id").set_index("subject_id")
        models = first["risk_model"] if "risk_model" in first.columns else pd.Series("score2", index=first.index)
        cats = [risk_category(float(r), float(a), str(m))
                for r, a, m in zip(first["risk"], first["age"], models, strict=True)]
        patients["stratum"] = pd.Series(cats, index=first.index).reindex(patients.index).fillna("unknown")
    labels = read_table(cohort, "labels")
    if labels is not None and "subject_id" in labels.columns:
        value_cols = [c for c in labels.columns if c not in ("study_id", "subject_id")]
        binary = [c for c in value_cols if set(pd.unique(labels[c].dropna())) <= {0, 1}]
        per_patient = labels.groupby(labels["subject_id"].astype(str))[binary].max()
        for column in binary:
            patients[f"label:{column}"] = per_patient[column].reindex(patients.index)
    return patients.reset_index()


def majority_cart(records: pd.DataFrame) -> pd.Series:
    """Per patient, the cart that recorded most of their ECGs (ties: smallest cart id)."""
    known = records.dropna(subset=["cart_id"])
    counts = known.groupby(["subject_id", "cart_id"]).size().rename("n").reset_index()
    counts = counts.sort_values(["subject_id", "n", "cart_id"], ascending=[True, False, True], kind="stable")
    return counts.drop_duplicates("subject_id").set_index("subject_id")["cart_id"]


# ----------------------------------------------------------------------------- assigning sites


def assign_sites(patients: pd.DataFrame, spec: SplitSpec, *, where: str = "cohort") -> np.ndarray:
    """Site index per row of ``patients`` (``HOLDOUT`` = -1 for the held-out patients)."""
    import datasets

    n = len(patients)
    rng = np.random.default_rng(spec.seed)
    site = np.full(n, HOLDOUT, dtype=np.int64)
    order = rng.permutation(n)
    n_holdout = int(round(spec.holdout * n))
    train_rows = np.sort(order[n_holdout:])
    if len(train_rows) == 0:
        raise SplitError(f"{where}: no patients left for the sites after holding out {n_holdout}")
    pool = patients.iloc[train_rows].reset_index(drop=True).assign(row=train_rows)
    if spec.kind in ("iid", "skew"):
        pool = pool.sample(frac=1.0, random_state=spec.seed).reset_index(drop=True)
    if spec.kind == "cart" and pool["cart"].isna().any():
        missing = pool.loc[pool["cart"].isna(), "subject_id"].iloc[0]
        raise SplitError(f"{where}: split 'cart' needs a cart_id for every patient (machine_measurements.csv); "
                         f"patient {missing} has none")
    dataset = datasets.Dataset.from_pandas(_partition_frame(pool, spec, where), preserve_index=False)
    partitioner = make_partitioner(spec, len(pool), pool, where)
    partitioner.dataset = dataset
    with warnings.catch_warnings():  # DirichletPartitioner warns on each re-draw below min_site_patients
        warnings.simplefilter("ignore", UserWarning)
        try:
            for pid in range(partitioner.num_partitions):
                rows = partitioner.load_partition(pid)["row"]
                site[np.asarray(rows, dtype=np.int64)] = pid
        except ValueError as exc:  # e.g. Dirichlet draws that never give every site enough patients
            raise SplitError(f"{where}: split '{spec.kind}' failed: {exc}") from exc
    sizes = np.bincount(site[site >= 0], minlength=partitioner.num_partitions)
    if sizes.min() < spec.min_site_patients:
        raise SplitError(f"{where}: split '{spec.kind}' gives a site with {sizes.min()} patients "
                         f"(< federation.min_site_patients = {spec.min_site_patients}); use fewer sites or more patients")
    return site


def _partition_frame(pool: pd.DataFrame, spec: SplitSpec, where: str) -> pd.DataFrame:
    frame = pd.DataFrame({"row": pool["row"].to_numpy()})
    if spec.kind == "cart":
        frame["cart"] = pool["cart"].astype(str).to_numpy()
    elif spec.kind == "dirichlet":
        column = "stratum" if spec.by == "risk" else f"label:{spec.by}"
        if column not in pool.columns:
            labels = sorted(c.split(":", 1)[1] for c in pool.columns if c.startswith("label:"))
            raise SplitError(f"{where}: federation.dirichlet_by = {spec.by!r} is neither 'risk' nor a binary label "
                             f"column of labels.csv (found: {', '.join(labels) or 'none'})")
        frame["stratum"] = pool[column].astype(str).to_numpy()
    return frame


def make_partitioner(spec: SplitSpec, n: int, pool: pd.DataFrame, where: str) -> Any:
    from flwr_datasets.partitioner import (
        DirichletPartitioner,
        GroupedNaturalIdPartitioner,
        IidPartitioner,
        NaturalIdPartitioner,
        SizePartitioner,
    )

    if spec.kind != "cart" and n < spec.sites * spec.min_site_patients:
        raise SplitError(f"{where}: {n} patients cannot fill {spec.sites} sites of at least "
                         f"{spec.min_site_patients} (federation.min_site_patients)")
    if spec.kind == "iid":
        return IidPartitioner(num_partitions=spec.sites)
    if spec.kind == "cart":
        n_carts = pool["cart"].nunique()
        if spec.sites < 1 or n_carts <= spec.sites:
            return NaturalIdPartitioner(partition_by="cart")
        return GroupedNaturalIdPartitioner(partition_by="cart", group_size=math.ceil(n_carts / spec.sites),
                                           sort_unique_ids=True)
    if spec.kind == "dirichlet":
        return DirichletPartitioner(num_partitions=spec.sites, partition_by="stratum", alpha=float(spec.beta),
                                    min_partition_size=spec.min_site_patients, self_balancing=False, seed=spec.seed)
    return SizePartitioner(skewed_sizes(n, spec.sites, spec.skew_sigma, spec.min_site_patients, spec.seed))


def skewed_sizes(n: int, sites: int, sigma: float, minimum: int, seed: int) -> list[int]:
    """Site sizes summing to ``n``, each >= ``minimum``, proportional to lognormal(0, sigma) draws
    above the minimum; the rounding remainder goes to the largest site."""
    draws = np.random.default_rng(seed + 1).lognormal(0.0, sigma, size=sites)
    spare = n - sites * minimum
    extra = np.floor(draws / draws.sum() * spare).astype(int)
    extra[np.argmax(draws)] += spare - int(extra.sum())
    return [int(minimum + e) for e in extra]


# ----------------------------------------------------------------------------- writing the split


def split_cohort(cohort: str | Path, out: str | Path, spec: SplitSpec, clinical: pd.DataFrame | None = None) -> Split:
    """Assign patients to sites and write the site folders under ``out`` (idempotent for the same
    cohort and spec: an existing complete split with the same spec is reused)."""
    cohort, out = Path(cohort).resolve(), Path(out)
    existing = read_split(out)
    if existing is not None:
        if existing.spec != spec:
            raise SplitError(f"{out} already holds a split made with {existing.spec}; the config asks for {spec} "
                             f"(use another output folder)")
        return existing
    patients = patient_table(cohort, clinical)
    site = assign_sites(patients, spec, where=str(cohort))
    return write_split(cohort, out, patients, site, spec)


def write_split(cohort: Path, out: Path, patients: pd.DataFrame, site: np.ndarray, spec: SplitSpec) -> Split:
    records = records_table(cohort)
    site_of = pd.Series(site, index=patients["subject_id"].to_numpy())
    records["site"] = records["subject_id"].map(site_of)
    staging = out.with_name(f".{out.name}.partial")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    sites = []
    for index in range(int(site.max()) + 1):
        sites.append(_write_site(cohort, staging, f"site-{index}", records[records["site"] == index]))
    holdout = None
    if (site == HOLDOUT).any():
        holdout = _write_site(cohort, staging, "holdout", records[records["site"] == HOLDOUT])
    meta = {
        "format": SPLIT_FORMAT,
        "format_version": SPLIT_VERSION,
        "source": str(cohort),
        "spec": dataclasses.asdict(spec),
        "sites": [{"site_id": s.site_id, "patients": s.patients, "records": s.records} for s in sites],
        "holdout": None if holdout is None else {"patients": holdout.patients, "records": holdout.records},
    }
    (staging / "split.json").write_text(json.dumps(meta, indent=2))
    if out.exists():
        shutil.rmtree(out)
    os.replace(staging, out)
    split = read_split(out)
    assert split is not None
    return split


def _write_site(cohort: Path, root: Path, site_id: str, records: pd.DataFrame) -> SplitSite:
    folder = root / site_id
    folder.mkdir()
    records[["record_id", "subject_id"]].to_csv(folder / "manifest.csv", index=False)
    if is_mimic_layout(cohort):
        _link_mimic_site(cohort, folder, set(records["record_id"]), set(records["subject_id"]))
    else:
        _link_wfdb_records(cohort, folder, records["record_id"])
    return SplitSite(site_id, folder, int(records["subject_id"].nunique()), len(records))


def _link_mimic_site(cohort: Path, folder: Path, record_ids: set[str], subject_ids: set[str]) -> None:
    """Filtered copies of the per-record tables; every other top-level entry is linked."""
    filtered = set()
    for name in FILTERED_TABLES:
        table = read_table(cohort, name)
        if table is None:
            continue
        path = find_table(cohort, name)
        assert path is not None  # read_table found it
        filtered.add(path.name)
        if "study_id" in table.columns:
            keep = table["study_id"].astype(str).isin(record_ids)
        else:
            keep = table["subject_id"].astype(str).isin(subject_ids)
        table[keep].to_csv(folder / f"{name}.csv", index=False)
    for entry in sorted(cohort.iterdir()):
        if entry.name not in filtered and not entry.name.startswith("."):
            (folder / entry.name).symlink_to(entry.resolve(), target_is_directory=entry.is_dir())


def _link_wfdb_records(cohort: Path, folder: Path, record_ids: pd.Series) -> None:
    for record_id in record_ids:
        source = cohort / record_id
        target = folder / record_id
        target.parent.mkdir(parents=True, exist_ok=True)
        for file in sorted(source.parent.glob(f"{source.name}.*")):
            (target.parent / file.name).symlink_to(file.resolve())


def read_split(out: str | Path) -> Split | None:
    """The split written in ``out``, or None when there is none (a half-written one never is)."""
    out = Path(out)
    meta_path = out / "split.json"
    if not meta_path.is_file():
        return None
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != SPLIT_FORMAT or meta.get("format_version") != SPLIT_VERSION:
        raise SplitError(f"{meta_path}: not a clef split of version {SPLIT_VERSION}")
    sites = [SplitSite(s["site_id"], out / s["site_id"], s["patients"], s["records"]) for s in meta["sites"]]
    holdout = None
    if meta["holdout"] is not None:
        holdout = SplitSite("holdout", out / "holdout", meta["holdout"]["patients"], meta["holdout"]["records"])
    return Split(out, sites, holdout, SplitSpec(**meta["spec"]))
