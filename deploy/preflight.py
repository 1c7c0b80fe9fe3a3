"""Site preflight: is this hospital ready to join a run? Checked locally, nothing is sent anywhere.

Each check gives ``ok``, ``warn`` or ``fail`` with one line of detail:

* ``config``   -- the site configuration file (:mod:`deploy.site_config`) parses, data-dir is set;
* ``data``     -- every record is read and preprocessed exactly as the store builder does
  (:func:`clef_core.data.records.read_record` + :func:`clef_core.data.preprocess.preprocess_record`),
  bad ones counted by reason (:data:`clef_core.data.errors.REASONS`) and listed for the operator;
* ``metadata`` -- the clinical table's summary (:func:`clef_core.metadata.extract.extract_clinical_table`):
  records, subjects, SCORE2 risk defined, mean completeness of the 7 SCORE2 inputs;
* ``device``   -- the requested device exists (``cuda`` needs ``torch.cuda.is_available()``);
* ``privacy``  -- the experiment's ``[privacy]`` as this site tightens it (``privacy-budget`` etc.);
* ``tls``      -- the CA certificate parses and is within its validity period;
* ``node-key`` -- the node key is an EC private key in OpenSSH format (what flower-supernode loads),
  readable by its owner only;
* ``work-dir`` -- the site's work folder (store, caches, site.log) can be written.

Record names and reasons are printed to the operator's console only.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import os
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from deploy.site_config import SiteConfig

STATUSES = ("ok", "warn", "fail")


@dataclasses.dataclass
class Check:
    name: str
    status: str
    detail: str
    data: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class PreflightReport:
    checks: list[Check]
    bad_records: list[tuple[str, str, str]]  # (record id, reason, detail)

    @property
    def ok(self) -> bool:
        return all(c.status != "fail" for c in self.checks)

    def check(self, name: str) -> Check:
        return next(c for c in self.checks if c.name == name)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "checks": [dataclasses.asdict(c) for c in self.checks],
                "bad_records": [{"record_id": r, "reason": why, "detail": d} for r, why, d in self.bad_records]}


def check_data(data_dir: Path, cfg: Mapping[str, Any], max_records: int = 0) -> tuple[Check, list[tuple[str, str, str]]]:
    """Read and preprocess every record (the first ``max_records`` when > 0)."""
    from clef_core.data.errors import BadRecordError
    from clef_core.data.preprocess import PreprocessConfig, preprocess_record
    from clef_core.data.records import iter_source, read_record

    if not data_dir.is_dir():
        return Check("data", "fail", f"data-dir {data_dir} is not a folder"), []
    prep = PreprocessConfig(**cfg["preprocess"])
    reasons: Counter[str] = Counter()
    bad: list[tuple[str, str, str]] = []
    total = windows = 0
    subjects: set[str] = set()
    try:
        for ref in iter_source(data_dir):
            if max_records and total >= max_records:
                break
            total += 1
            try:
                windows += preprocess_record(read_record(ref.path, record_id=ref.record_id), prep).signals.shape[0]
                subjects.add(str(ref.subject_id))
            except BadRecordError as exc:
                reasons[exc.reason] += 1
                bad.append((exc.record_id, exc.reason, exc.detail))
    except (ValueError, OSError) as exc:  # not a cohort layout at all, unreadable tables
        return Check("data", "fail", f"{data_dir}: {exc}"), bad
    used = total - len(bad)
    summary = {"records": total, "used": used, "skipped": len(bad), "by_reason": dict(reasons),
               "windows": windows, "patients": len(subjects), "sampled": bool(max_records)}
    by_reason = ", ".join(f"{r} {n}" for r, n in reasons.most_common())
    detail = (f"{total} records{' (sample)' if max_records else ''}: {used} usable ({windows} windows, "
              f"{len(subjects)} patients), {len(bad)} skipped{f' ({by_reason})' if bad else ''}")
    if used == 0:
        return Check("data", "fail", detail + ": no usable record", summary), bad
    if used < 2:
        return Check("data", "warn", detail + ": a contrastive batch needs at least 2 patients", summary), bad
    return Check("data", "warn" if bad else "ok", detail, summary), bad


def check_metadata(data_dir: Path, cfg: Mapping[str, Any]) -> Check:
    from clef_core.metadata.extract import extract_clinical_table

    try:
        table = extract_clinical_table(data_dir, cfg)
    except Exception as exc:  # the operator needs the reason, whatever it is
        return Check("metadata", "fail", f"clinical table of {data_dir}: {type(exc).__name__}: {exc}")
    summary = table.summary()
    completeness = table.table["completeness"]
    mean = float(completeness.mean()) if len(completeness) else math.nan
    present = ", ".join(f"{k} {v}" for k, v in summary.get("present", {}).items())
    detail = (f"{summary['records']} records, {summary['subjects']} patients, SCORE2 risk defined for "
              f"{summary['risk_defined']}, mean completeness {mean:.2f} (present: {present})")
    summary = {**summary, "mean_completeness": mean}
    if summary["records"] and not summary["risk_defined"]:
        return Check("metadata", "warn", detail + ": no record has a SCORE2 risk, so every negative pair of this site "
                     "is a plain (risk-unweighted) negative", summary)
    return Check("metadata", "ok", detail, summary)


def check_device(requested: str, cfg: Mapping[str, Any]) -> Check:
    import torch

    wanted = requested or str(cfg["train"].get("device", "auto"))
    cuda = torch.cuda.is_available()
    count = torch.cuda.device_count() if cuda else 0
    info = {"requested": wanted, "cuda_available": cuda, "cuda_devices": count}
    if wanted.startswith("cuda"):
        if not cuda:
            return Check("device", "fail", f"device {wanted!r} requested but CUDA is not available "
                                           f"(torch {torch.__version__})", info)
        index = int(wanted.split(":", 1)[1]) if ":" in wanted else 0
        if index >= count:
            return Check("device", "fail", f"device {wanted!r} requested, {count} CUDA device(s) present", info)
        return Check("device", "ok", f"{wanted}: {torch.cuda.get_device_name(index)}", info)
    if wanted not in ("cpu", "auto"):
        return Check("device", "fail", f"device {wanted!r}: expected cpu, cuda, cuda:N or auto", info)
    where = f"cuda ({count} device(s))" if cuda and wanted == "auto" else "cpu"
    return Check("device", "ok", f"{wanted}: training runs on {where}", info)


def check_privacy(cfg: Mapping[str, Any], node_config: Mapping[str, Any]) -> Check:
    from clef_core.config import ConfigError

    try:
        from client.privacy import site_privacy

        priv = site_privacy(cfg, node_config)
    except (ConfigError, ValueError, TypeError) as exc:
        return Check("privacy", "fail", f"privacy settings: {exc}")
    info = {"mode": priv.mode, "budget_epsilon": priv.budget_epsilon, "delta": priv.delta,
            "budget_scope": priv.budget_scope}
    if priv.mode == "off":
        note = " (privacy-budget is ignored: the experiment has no DP)" if "privacy-budget" in node_config else ""
        return Check("privacy", "warn" if note else "ok", f"mode off: no differential privacy{note}", info)
    budget = f"budget epsilon {priv.budget_epsilon:g}" if priv.budget_epsilon > 0 else "no budget"
    detail = (f"mode {priv.mode}: sigma {priv.noise_multiplier:g}, clip {priv.clip_norm:g}, delta {priv.delta:g}, "
              f"{budget} ({priv.budget_scope})")
    if priv.ledger_dir:
        ledger = Path(priv.ledger_dir)
        if not _writable(ledger):
            return Check("privacy", "fail", f"{detail}; privacy ledger folder {ledger} is not writable", info)
        detail += f", ledger {ledger}"
    return Check("privacy", "ok", detail, info)


def check_ca(path: Path | None) -> Check:
    from cryptography import x509

    if path is None:
        return Check("tls", "fail", "no root-certificates: the SuperNode only connects over TLS")
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except OSError as exc:
        return Check("tls", "fail", f"CA certificate {path}: unreadable ({exc.strerror or exc})")
    except ValueError:
        return Check("tls", "fail", f"CA certificate {path}: not a PEM certificate")
    now = datetime.datetime.now(datetime.timezone.utc)
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        return Check("tls", "fail", f"CA certificate {path}: valid {cert.not_valid_before_utc:%Y-%m-%d} to "
                                    f"{cert.not_valid_after_utc:%Y-%m-%d}, not now")
    return Check("tls", "ok", f"CA {cert.subject.rfc4514_string()} ({path}), valid until "
                              f"{cert.not_valid_after_utc:%Y-%m-%d}")


def check_node_key(path: Path | None) -> Check:
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import load_ssh_private_key

    if path is None:
        return Check("node-key", "fail", "no auth-supernode-private-key: the SuperLink only accepts registered nodes")
    try:
        key = load_ssh_private_key(path.read_bytes(), None)
    except OSError as exc:
        return Check("node-key", "fail", f"node key {path}: unreadable ({exc.strerror or exc})")
    except ValueError as exc:
        return Check("node-key", "fail", f"node key {path}: not an unencrypted OpenSSH private key ({exc})")
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        return Check("node-key", "fail", f"node key {path}: {type(key).__name__}, Flower needs an EC key (SECP384R1)")
    detail = f"EC {key.curve.name} key {path}; the coordinator registers {path}.pub"
    if path.stat().st_mode & 0o077:
        return Check("node-key", "warn", detail + f": readable by others (chmod 600 {path})")
    return Check("node-key", "ok", detail)


def _writable(folder: Path) -> bool:
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    return existing.is_dir() and os.access(existing, os.W_OK | os.X_OK)


def check_work_dir(node_config: Mapping[str, Any]) -> Check:
    from client.site import resolve_site

    spec = resolve_site(node_config, {})
    if not _writable(spec.work_dir):
        return Check("work-dir", "fail", f"work-dir {spec.work_dir} cannot be written (store, caches, site.log)")
    return Check("work-dir", "ok", f"site {spec.site_id}: store, caches and site.log in {spec.work_dir}")


def preflight(site: SiteConfig, cfg: Mapping[str, Any], max_records: int = 0) -> PreflightReport:
    """Every check of the module docstring for ``site`` under the experiment ``cfg``."""
    node = site.node_config
    data_dir = Path(str(node["data-dir"])).expanduser()
    data, bad = check_data(data_dir, cfg, max_records)
    checks = [Check("config", "ok", f"site config {site.source or '(flags)'}: node-config {site.node_config_string()}"),
              data]
    if data_dir.is_dir():
        checks.append(check_metadata(data_dir, cfg))
    checks += [check_device(str(node.get("device", "")), cfg), check_privacy(cfg, node),
               check_ca(site.root_certificates), check_node_key(site.private_key), check_work_dir(node)]
    return PreflightReport(checks, bad)
