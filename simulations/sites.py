"""The simulated federation's sites: which folder each partition-id trains on.

Either one folder per site (``--sites`` / ``federation.site_dirs``: MIMIC-IV-ECG-layout roots or
WFDB folders with header metadata), or one cohort (``federation.cohort``, default the built-in
synthetic cohort) split into sites by :mod:`simulations.partition`, with a held-out patient set
for the server's probe. The result is ``<run>/sites.json`` (:func:`clef_core.federation.sites.write_manifest`);
each site works in ``<run>/sites/<site-id>/`` (its store, caches and ``site.log``), as a hospital
would on its own disk. The researcher plays every site of a simulation: each site's privacy
policy demands exactly the experiment's ``[privacy]`` (:meth:`SitePolicy.for_simulated_site`) and
reads the experiment's hosp / noise folders and ``[preprocess]``; running again with other privacy settings rewrites
those policies (as a hospital would edit its site file).

Preparing is idempotent: a run folder keeps its sites, and asking for different ones there is an
error (a resumed run must train on the same federation).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from clef_core.federation.sites import SiteSpec, read_manifest, site_preprocess, write_manifest
from clef_core.privacy.config import PrivacyConfig
from clef_core.privacy.policy import SitePolicy
from simulations.partition import SplitSpec, is_mimic_layout, split_cohort

log = logging.getLogger("clef.simulate")


class FederationSetupError(ValueError):
    """The run folder cannot hold this federation."""


@dataclasses.dataclass
class PreparedFederation:
    manifest: Path
    sites: list[SiteSpec]
    eval_dir: Path | None
    cohort: Path | None  # the split cohort, None with --sites


def unique_site_ids(dirs: Sequence[Path]) -> list[str]:
    names: list[str] = []
    for d in dirs:
        base = Path(d).name or "site"
        name, k = base, 2
        while name in names:
            name, k = f"{base}-{k}", k + 1
        names.append(name)
    return names


def risk_clinical(cohort: Path, cfg: Mapping[str, Any]) -> Any:
    """The clinical table (a DataFrame), needed only for a Dirichlet split over SCORE2 risk strata."""
    from clef_core.metadata import extract_clinical_table

    extracted = extract_clinical_table(cohort, dict(cfg))
    return getattr(extracted, "table", extracted)


def check_site_dir(site_id: str, path: Path) -> None:
    """A site folder that is missing, not a folder, unreadable or without a record stops the run
    here, before Flower or Ray starts, with one line naming it."""
    from clef_core.data.records import iter_source

    where = f"site {site_id}: data folder {path}"
    if not path.exists():
        raise FederationSetupError(f"{where} does not exist")
    if not path.is_dir():
        raise FederationSetupError(f"{where} is not a folder")
    if not os.access(path, os.R_OK | os.X_OK):
        raise FederationSetupError(f"{where} is not readable")
    try:
        first = next(iter(iter_source(path)), None)
    except (OSError, ValueError) as exc:
        raise FederationSetupError(f"{where}: {str(exc).splitlines()[0]}") from None
    if first is None:
        raise FederationSetupError(f"{where} holds no records (expected record_list.csv, the MIMIC-IV-ECG "
                                   f"layout, or WFDB .hea files)")


def prepare_federation(cfg: Mapping[str, Any], run_root: str | Path, *, manifest: Path | None = None,
                       site_dirs: Sequence[str | Path] | None = None) -> PreparedFederation:
    run_root = Path(run_root).resolve()
    manifest = Path(manifest) if manifest else run_root / "sites.json"
    fed = cfg["federation"]
    dirs = [Path(d).expanduser().resolve() for d in (site_dirs or fed.get("site_dirs") or [])]
    cohort: Path | None = None
    if dirs:
        specs = [SiteSpec(name, d, run_root / "sites" / name, i) for i, (name, d) in enumerate(
            zip(unique_site_ids(dirs), dirs, strict=True))]
        for spec in specs:
            check_site_dir(spec.site_id, spec.data_dir)
        eval_dir = Path(fed["eval_dir"]).expanduser().resolve() if fed.get("eval_dir") else None
    else:
        if fed.get("cohort"):
            cohort = Path(fed["cohort"]).expanduser().resolve()
        else:
            from clef_core.pipeline import default_cohort

            cohort = default_cohort(run_root, dict(cfg)).resolve()
        split_spec = SplitSpec.from_federation(fed)
        clinical = risk_clinical(cohort, cfg) if split_spec.kind == "dirichlet" and split_spec.by == "risk" else None
        split = split_cohort(cohort, run_root / "split", split_spec, clinical)
        specs = [SiteSpec(s.site_id, s.dir.resolve(), run_root / "sites" / s.site_id, i)
                 for i, s in enumerate(split.sites)]
        eval_dir = split.holdout.dir.resolve() if split.holdout is not None else None
        if fed.get("eval_dir"):
            eval_dir = Path(fed["eval_dir"]).expanduser().resolve()
    specs = [dataclasses.replace(s, **site_settings(cfg)) for s in specs]
    if manifest.is_file():
        existing, existing_eval = read_manifest(manifest)
        if [(s.site_id, s.data_dir) for s in existing] != [(s.site_id, s.data_dir) for s in specs]:
            raise FederationSetupError(
                f"{run_root} was prepared for sites {[s.site_id for s in existing]} "
                f"({', '.join(str(s.data_dir) for s in existing)}); this run asks for "
                f"{[s.site_id for s in specs]}: use another output folder")
        kept = [dataclasses.replace(old, **site_settings(cfg)) for old in existing]
        if kept != existing:
            write_manifest(manifest, kept, existing_eval)
        return PreparedFederation(manifest, kept, existing_eval, cohort)
    write_manifest(manifest, specs, eval_dir)
    _describe(run_root, specs, eval_dir, cohort)
    return PreparedFederation(manifest, specs, eval_dir, cohort)


def site_settings(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """What every simulated site sets for itself: the experiment's privacy as its policy, and the
    experiment's clinical-table and noise folders and ``[preprocess]`` as its own."""
    return {"policy": SitePolicy.for_simulated_site(PrivacyConfig.from_config(dict(cfg))),
            "hosp_dir": str(cfg.get("metadata", {}).get("hosp_dir", "")),
            "noise_dir": str(cfg.get("views", {}).get("noise_dir", "")),
            "preprocess_items": site_preprocess(dict(cfg.get("preprocess", {})), "experiment")}


def _describe(run_root: Path, specs: list[SiteSpec], eval_dir: Path | None, cohort: Path | None) -> None:
    lines = [f"{s.site_id}: {s.data_dir}" + ("" if s.data_dir.is_dir() else " (missing)") for s in specs]
    log.info("federation in %s: %d sites%s\n  %s", run_root, len(specs),
             f" split from {cohort}" if cohort else "", "\n  ".join(lines))
    if eval_dir is not None:
        log.info("held-out probe set: %s (%s layout)", eval_dir, "MIMIC" if is_mimic_layout(eval_dir) else "WFDB")


def describe_sites(manifest: Path) -> list[dict[str, Any]]:
    """Site id, data folder and patient/record counts (from split manifests when present)."""
    specs, _ = read_manifest(manifest)
    out = []
    for s in specs:
        entry: dict[str, Any] = {"site": s.site_id, "data_dir": str(s.data_dir)}
        split_manifest = s.data_dir / "manifest.csv"
        if split_manifest.is_file():
            import pandas as pd

            table = pd.read_csv(split_manifest, dtype=str)
            entry.update(patients=int(table["subject_id"].nunique()), records=len(table))
        out.append(entry)
    return out
