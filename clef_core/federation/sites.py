"""Which site a node is, where its data lives, its own privacy policy, and its prepared data.

A site's identity, folders and privacy never come from the run:

* deployment -- the SuperNode's node_config (written from the hospital's site file,
  configs/site-template.toml): ``data-dir`` (a MIMIC-IV-ECG-layout root or a WFDB folder),
  ``site-id`` (default: the folder name), ``work-dir`` (store, caches, log, privacy ledger;
  default ``~/.clef/sites/<site-id>``), ``device`` (cpu, cuda, cuda:1; default ``train.device``),
  ``site-index`` (a number reported with its metrics; default -1), ``hosp-dir`` (MIMIC-IV hosp
  tables; default ``<data-dir>/hosp``), ``noise-dir`` (recorded noise for the views, never
  patients' recordings; default automatic), the ``privacy-*`` keys of
  :class:`clef_core.privacy.policy.SitePolicy` (``privacy-mode`` must be stated) and the
  ``preprocess-*`` keys (``preprocess-max-abs-mv = 30.0``: the ``[preprocess]`` settings that
  decide which of the site's records are kept; default configs/default.toml's). A site whose
  policy is ``patient`` must give an absolute ``work-dir`` (its ledger's high-water mark lives
  there, and a default that follows the site id or the SuperNode's folder would reset it) and a
  positive ``privacy-budget``. Near misses of these keys (``privacy_mode``, ``Privacy-Mode``,
  ``preprocess_window_s``) are errors, not silently ignored;
* simulation -- Flower sets ``partition-id``; it indexes the sites of the simulation's
  ``sites.json`` (written by ``clef simulate``: the researcher plays every site).

Everything that selects the site's records is the site's: a run whose ``[preprocess]`` differs
from the site's is refused (:func:`site_experiment`), so a run cannot steer how many patients a
site keeps (a counting oracle on the site's data).

``sites.json`` (format version 2; version 1 files, without policies, are read with the default
policy)::

    {"format": "clef-sites", "format_version": 2,
     "sites": [{"site_id": "site-0", "data_dir": "/abs/...", "work_dir": "/abs/...",
                "privacy": {"mode": "patient", "noise_multiplier": 1.0, ...}}, ...],
     "eval_dir": "/abs/.../holdout" | null}

A prepared site (clinical table + preprocessed store, :func:`clef_core.pipeline.prepare_site`)
is built once per site on its first round and cached on the site's disk and in the process,
so later rounds start training at once (Ray reuses its ClientApp actors across rounds).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from clef_core.atomic import write_text_atomic
from clef_core.privacy.policy import PrivacyPolicyError, PrivacyRefusal, SitePolicy

MANIFEST_FORMAT = "clef-sites"
MANIFEST_VERSION = 2
READABLE_VERSIONS = (1, 2)
LOG_FILE = "site.log"
# experiment keys that name a folder on the site's disk: only the site's own settings apply
SITE_FOLDERS = {("metadata", "hosp_dir"): "hosp_dir", ("views", "noise_dir"): "noise_dir"}
PREPROCESS_PREFIX = "preprocess-"
DEPLOYMENT_KEYS = ("data-dir", "site-id", "work-dir", "device", "site-index", "hosp-dir", "noise-dir")
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
    policy: SitePolicy = SitePolicy()
    hosp_dir: str = ""
    noise_dir: str = ""
    preprocess_items: tuple[tuple[str, Any], ...] = ()  # the site's [preprocess]; () = the defaults

    @property
    def preprocess(self) -> dict[str, Any]:
        """The site's ``[preprocess]``: configs/default.toml's, with the site's own values."""
        return {**default_preprocess(), **dict(self.preprocess_items)}


@functools.lru_cache(maxsize=1)
def _defaults() -> str:
    from clef_core.config import load_config

    return json.dumps(load_config(None)["preprocess"])


def default_preprocess() -> dict[str, Any]:
    return json.loads(_defaults())


def site_preprocess(values: Mapping[str, Any], where: str) -> tuple[tuple[str, Any], ...]:
    """Checked ``[preprocess]`` values of a site (unknown keys and bad values name the key)."""
    from clef_core.data.preprocess import PreprocessConfig

    known = default_preprocess()
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise SiteConfigError(f"{where}: unknown preprocess setting(s) {unknown} (known: {sorted(known)})")
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SiteConfigError(f"{where}: preprocess {key} = {value!r} is not a number")
    try:
        PreprocessConfig(**{**known, **values})
    except (TypeError, ValueError) as exc:
        raise SiteConfigError(f"{where}: {exc}") from None
    return tuple(sorted(values.items()))


def _squash(key: str) -> str:
    return re.sub(r"[^a-z]", "", str(key).lower())


def check_node_keys(node_config: Mapping[str, Any]) -> None:
    """A deployment node config's keys: near misses of the site's own keys are errors."""
    from clef_core.privacy.policy import NODE_KEYS

    exact = set(DEPLOYMENT_KEYS) | set(NODE_KEYS)
    known = {_squash(k): k for k in exact}
    for key in node_config:
        if key in exact or (str(key).startswith(PREPROCESS_PREFIX) and key == key.lower() and "_" not in key):
            continue
        squashed = _squash(key)
        if squashed in known or squashed.startswith(("privacy", "preprocess")):
            hint = f" (did you mean {known[squashed]!r}?)" if squashed in known else ""
            raise SiteConfigError(f"node config: unknown key {key!r}{hint}: the site's own settings are spelt "
                                  f"exactly as in configs/site-template.toml")


def deployment_site(node_config: Mapping[str, Any]) -> SiteSpec:
    """The site a SuperNode's node config describes (module docstring)."""
    check_node_keys(node_config)
    if "privacy-mode" not in node_config:
        raise SiteConfigError("node config: privacy-mode is required: \"patient\" (this site trains only under "
                              "patient-level DP) or \"off\" (configs/site-template.toml)")
    try:
        policy = SitePolicy.from_node_config(node_config)
    except PrivacyPolicyError as exc:
        raise SiteConfigError(str(exc)) from None
    data_dir = Path(str(node_config["data-dir"])).expanduser()
    site_id = str(node_config.get("site-id", "") or data_dir.name)
    work = str(node_config.get("work-dir", "") or "")
    if policy.mode == "patient":
        if not work or not Path(work).expanduser().is_absolute():
            raise SiteConfigError(f"node config: a site with privacy-mode \"patient\" needs an absolute work-dir "
                                  f"(got {work!r}): its privacy ledger and high-water mark live there")
        if not policy.budget_epsilon > 0:
            raise SiteConfigError("node config: a site with privacy-mode \"patient\" needs a positive privacy-budget "
                                  "(the epsilon it never exceeds); without one the run would choose its spending")
        if policy.ledger_dir and not Path(policy.ledger_dir).expanduser().is_absolute():
            raise SiteConfigError(f"node config: privacy-ledger-dir {policy.ledger_dir!r} must be absolute")
    prep = {k[len(PREPROCESS_PREFIX):].replace("-", "_"): v for k, v in node_config.items()
            if str(k).startswith(PREPROCESS_PREFIX)}
    return SiteSpec(site_id, data_dir, Path(work or Path.home() / ".clef" / "sites" / site_id).expanduser(),
                    int(node_config.get("site-index", -1)), str(node_config.get("device", "")), policy,
                    str(node_config.get("hosp-dir", "")), str(node_config.get("noise-dir", "")),
                    site_preprocess(prep, "node config"))


def write_manifest(path: Path, sites: list[SiteSpec], eval_dir: Path | None = None) -> Path:
    data = {
        "format": MANIFEST_FORMAT,
        "format_version": MANIFEST_VERSION,
        "sites": [_site_entry(s) for s in sites],
        "eval_dir": str(eval_dir) if eval_dir else None,
    }
    write_text_atomic(Path(path), json.dumps(data, indent=2))
    return Path(path)


def _site_entry(spec: SiteSpec) -> dict[str, Any]:
    entry: dict[str, Any] = {"site_id": spec.site_id, "data_dir": str(spec.data_dir), "work_dir": str(spec.work_dir)}
    for key in ("device", "hosp_dir", "noise_dir"):
        if getattr(spec, key):
            entry[key] = getattr(spec, key)
    entry["privacy"] = spec.policy.to_dict()
    entry["preprocess"] = dict(spec.preprocess_items)
    return entry


def read_manifest(path: Path) -> tuple[list[SiteSpec], Path | None]:
    path = Path(path)
    if not path.is_file():
        raise SiteConfigError(f"no sites manifest at {path}: prepare the simulation with `clef simulate` "
                              f"(or flwr run -c 'prepare-sites=true')")
    data = json.loads(path.read_text(encoding="utf-8"))
    if data.get("format") != MANIFEST_FORMAT or data.get("format_version") not in READABLE_VERSIONS:
        raise SiteConfigError(f"{path}: not a clef sites manifest of version {' or '.join(map(str, READABLE_VERSIONS))}"
                              f" (found format {data.get('format')!r}, version {data.get('format_version')!r})")
    sites = [SiteSpec(str(s["site_id"]), Path(s["data_dir"]), Path(s["work_dir"]), i, str(s.get("device", "")),
                      SitePolicy.from_mapping(s.get("privacy", {}), where=f"{path} site {s['site_id']}"),
                      str(s.get("hosp_dir", "")), str(s.get("noise_dir", "")),
                      site_preprocess(s.get("preprocess", {}), f"{path} site {s['site_id']}"))
             for i, s in enumerate(data["sites"])]
    return sites, Path(data["eval_dir"]) if data.get("eval_dir") else None


def site_names(manifest: Path) -> dict[int, str]:
    """partition-id -> site id of a simulation's sites.json (empty when there is none: deployment)."""
    if not Path(manifest).is_file():
        return {}
    sites, _ = read_manifest(manifest)
    return {i: s.site_id for i, s in enumerate(sites)}


def resolve_site(node_config: Mapping[str, Any], manifest: Path) -> SiteSpec:
    """This node's site (see the module docstring)."""
    if "data-dir" in node_config:
        return deployment_site(node_config)
    if "partition-id" in node_config:
        sites, _ = read_manifest(manifest)
        pid = int(node_config["partition-id"])
        if not 0 <= pid < len(sites):
            raise SiteConfigError(f"partition-id {pid} has no site: the manifest lists {len(sites)} "
                                  f"(run the simulation with num-supernodes = {len(sites)})")
        return sites[pid]
    raise SiteConfigError("node_config has neither 'data-dir' (deployment: flower-supernode --node-config "
                          "'data-dir=\"...\" site-id=\"...\"') nor 'partition-id' (simulation)")


def foreign_folders(cfg: Mapping[str, Any], spec: SiteSpec) -> list[str]:
    """The folders on the site's disk that the run names and the site does not read."""
    out = []
    for (section, key), field in SITE_FOLDERS.items():
        asked, own = str(cfg.get(section, {}).get(key, "")), getattr(spec, field)
        if asked and Path(asked).expanduser() != Path(own).expanduser():
            out.append(f"{section}.{key} = {asked!r} (the site reads {own or 'its default'})")
    return out


def with_site_folders(cfg: Mapping[str, Any], spec: SiteSpec) -> dict[str, Any]:
    """The experiment with the site's own folders in place of the run's."""
    out = copy.deepcopy(dict(cfg))
    for (section, key), field in SITE_FOLDERS.items():
        out.setdefault(section, {})[key] = getattr(spec, field)
    return out


def foreign_preprocess(cfg: Mapping[str, Any], spec: SiteSpec) -> list[str]:
    """The ``[preprocess]`` values of the run that differ from the site's own."""
    from clef_core.data.preprocess import PreprocessConfig

    asked, own = {**default_preprocess(), **dict(cfg.get("preprocess", {}))}, spec.preprocess
    if PreprocessConfig(**asked) == PreprocessConfig(**own):
        return []
    return [f"preprocess.{k} = {asked.get(k)!r} (the site's is {own.get(k)!r})"
            for k in sorted(own) if asked.get(k) != own.get(k)]


def site_experiment(cfg: Mapping[str, Any], spec: SiteSpec) -> dict[str, Any]:
    """The run's experiment with the site's own folders and ``[preprocess]``; a run that names
    another folder on the site's disk, or other preprocessing, is refused (:class:`PrivacyRefusal`)."""
    foreign = foreign_folders(cfg, spec)
    if foreign:
        raise PrivacyRefusal("refused by the site: the run names a folder on the site's disk",
                             "; ".join(foreign) + " -- set hosp-dir / noise-dir in the site's own node config")
    other = foreign_preprocess(cfg, spec)
    if other:
        raise PrivacyRefusal("refused by the site: the run's [preprocess] is not the site's",
                             "; ".join(other) + " -- which records a site keeps is the site's own setting "
                             "(preprocess-* keys of its node config)")
    out = with_site_folders(cfg, spec)
    out["preprocess"] = spec.preprocess
    return out


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
    shaping = {k: cfg.get(k, {}) for k in ("preprocess", "metadata", "risk")}
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
    from clef_core.data.augment import ViewConfig
    from clef_core.task import make_dataset

    key = (*_cache_key(spec, cfg), json.dumps(cfg.get("views", {}), sort_keys=True), seed)
    if key not in _DATASETS:
        _DATASETS[key] = make_dataset(ViewConfig(**cfg["views"]), site, seed)
    return _DATASETS[key]


def clear_cache() -> None:
    _PREPARED.clear()
    _DATASETS.clear()
