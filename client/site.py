"""Which site a ClientApp is, where its data lives, and its prepared data (cached per process).

A site's identity and data never come from the server:

* deployment -- the SuperNode's node_config: ``data-dir`` (a MIMIC-IV-ECG-layout root or a WFDB
  folder), ``site-id`` (default: the folder name), ``work-dir`` (its store, caches and log;
  default ``~/.clef/sites/<site-id>``), optional ``device`` (cpu, cuda, cuda:1; default
  ``train.device``) and ``site-index`` (a number reported with its metrics; default -1);
* simulation -- Flower sets ``partition-id``; it indexes the sites of the simulation's
  ``sites.json`` (written by ``clef simulate``), whose path is run_config ``sites-manifest``
  (default ``<run-dir>/sites.json``).

``sites.json``::

    {"format": "clef-sites", "format_version": 1,
     "sites": [{"site_id": "site-0", "data_dir": "/abs/...", "work_dir": "/abs/..."}, ...],
     "eval_dir": "/abs/.../holdout" | null}

A prepared site (clinical table + preprocessed store, :func:`clef_core.pipeline.prepare_site`)
is built once per site on its first round and cached on the site's disk and in the process,
so later rounds start training at once (Ray reuses its ClientApp actors across rounds).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from clef_core.atomic import write_text_atomic
from server.settings import sites_manifest_path

MANIFEST_FORMAT = "clef-sites"
MANIFEST_VERSION = 1
LOG_FILE = "site.log"
_PREPARED: dict[tuple[str, ...], Any] = {}
_DATASETS: dict[tuple[Any, ...], Any] = {}


class SiteConfigError(ValueError):
    """The node has no usable site configuration."""


@dataclasses.dataclass(frozen=True)
class SiteSpec:
    site_id: str
    data_dir: Path
    work_dir: Path
    index: int = -1
    device: str = ""


def write_manifest(path: Path, sites: list[SiteSpec], eval_dir: Path | None = None) -> Path:
    data = {
        "format": MANIFEST_FORMAT,
        "format_version": MANIFEST_VERSION,
        "sites": [{"site_id": s.site_id, "data_dir": str(s.data_dir), "work_dir": str(s.work_dir),
                   **({"device": s.device} if s.device else {})} for s in sites],
        "eval_dir": str(eval_dir) if eval_dir else None,
    }
    write_text_atomic(Path(path), json.dumps(data, indent=2))
    return Path(path)


def read_manifest(path: Path) -> tuple[list[SiteSpec], Path | None]:
    path = Path(path)
    if not path.is_file():
        raise SiteConfigError(f"no sites manifest at {path}: prepare the simulation with `clef simulate` "
                              f"(or flwr run -c 'prepare-sites=true')")
    data = json.loads(path.read_text(encoding="utf-8"))
    if data.get("format") != MANIFEST_FORMAT or data.get("format_version") != MANIFEST_VERSION:
        raise SiteConfigError(f"{path}: not a clef sites manifest of version {MANIFEST_VERSION}")
    sites = [SiteSpec(str(s["site_id"]), Path(s["data_dir"]), Path(s["work_dir"]), i, str(s.get("device", "")))
             for i, s in enumerate(data["sites"])]
    return sites, Path(data["eval_dir"]) if data.get("eval_dir") else None


def resolve_site(node_config: Mapping[str, Any], run_config: Mapping[str, Any]) -> SiteSpec:
    """This node's site (see the module docstring)."""
    if "data-dir" in node_config:
        data_dir = Path(str(node_config["data-dir"])).expanduser()
        site_id = str(node_config.get("site-id", "") or data_dir.name)
        work = node_config.get("work-dir") or Path.home() / ".clef" / "sites" / site_id
        return SiteSpec(site_id, data_dir, Path(str(work)).expanduser(), int(node_config.get("site-index", -1)),
                        str(node_config.get("device", "")))
    if "partition-id" in node_config:
        sites, _ = read_manifest(sites_manifest_path(run_config))
        pid = int(node_config["partition-id"])
        if not 0 <= pid < len(sites):
            raise SiteConfigError(f"partition-id {pid} has no site: the manifest lists {len(sites)} "
                                  f"(run the simulation with num-supernodes = {len(sites)})")
        return sites[pid]
    raise SiteConfigError("node_config has neither 'data-dir' (deployment: flower-supernode --node-config "
                          "'data-dir=\"...\" site-id=\"...\"') nor 'partition-id' (simulation)")


def site_log(spec: SiteSpec) -> logging.Logger:
    """The site's own log file (record names and error details go here, never to the server)."""
    logger = logging.getLogger(f"clef.site.{spec.site_id}")
    path = spec.work_dir / LOG_FILE
    if not any(getattr(h, "baseFilename", None) == str(path) for h in logger.handlers):
        spec.work_dir.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger


def _cache_key(spec: SiteSpec, cfg: Mapping[str, Any]) -> tuple[str, ...]:
    shaping = {k: cfg.get(k, {}) for k in ("preprocess", "metadata", "score2")}
    return str(spec.data_dir.resolve()), str(spec.work_dir.resolve()), json.dumps(shaping, sort_keys=True, default=str)


def prepared_site(spec: SiteSpec, cfg: Mapping[str, Any]) -> Any:
    """The site's :class:`clef_core.pipeline.PreparedSite`, built once (disk and process cache)."""
    from clef_core.pipeline import prepare_site

    key = _cache_key(spec, cfg)
    if key not in _PREPARED:
        if not spec.data_dir.is_dir():
            raise FileNotFoundError(f"site {spec.site_id}: data folder {spec.data_dir} does not exist")
        _PREPARED[key] = prepare_site(spec.data_dir, spec.work_dir, dict(cfg))
        report = _PREPARED[key].build_report
        if report is not None:  # the site's own account of its data (record names: store/skipped.csv)
            site_log(spec).info("records: %d used, %d skipped %s; %d windows", report.n_ok, report.n_skipped,
                                dict(report.skipped), report.n_windows)
    return _PREPARED[key]


def pretrain_dataset(spec: SiteSpec, cfg: Mapping[str, Any], site: Any, seed: int) -> Any:
    """The site's ``PretrainDataset`` (one item per patient), cached like the prepared site."""
    from clef_core.train.loop import make_dataset

    key = (*_cache_key(spec, cfg), json.dumps(cfg.get("views", {}), sort_keys=True), seed)
    if key not in _DATASETS:
        _DATASETS[key] = make_dataset(dict(cfg), site, seed)
    return _DATASETS[key]


def clear_cache() -> None:
    _PREPARED.clear()
    _DATASETS.clear()
