"""Site preflight: is this hospital ready to join a run? Checked locally, nothing is sent anywhere.

Each check gives ``ok``, ``warn`` or ``fail`` with one line of detail:

* ``config``   -- the site configuration file (:mod:`deploy.site_config`) parses, data-dir is set;
* ``data``     -- every record is read and preprocessed exactly as the store builder does
  (:func:`clef_core.data.records.read_record` + :func:`clef_core.data.preprocess.preprocess_record`),
  bad ones counted by reason (:data:`clef_core.data.errors.REASONS`) and listed for the operator;
* ``metadata`` -- the clinical table's summary (:func:`clef_core.metadata.extract.extract_clinical_table`):
  records, subjects, SCORE2 risk defined, mean completeness of the 7 SCORE2 inputs;
* ``device``   -- the requested device exists (``cuda`` needs ``torch.cuda.is_available()``);
* ``patients`` -- whether records name their patients (else the privacy unit is the record: said loudly);
* ``privacy``  -- the site's own policy (``privacy-*`` keys) and whether the experiment's request
  would be accepted under it;
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
from typing import TYPE_CHECKING, Any

from deploy.site_config import SiteConfig

if TYPE_CHECKING:
    from clef_core.data.preprocess import PreprocessConfig
    from clef_core.experiment import Experiment
    from clef_core.metadata import MetadataConfig
    from clef_core.privacy.settings import PrivacyConfig
    from clef_core.train.settings import TrainConfig

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


def check_data(data_dir: Path, prep: PreprocessConfig, max_records: int = 0) -> tuple[Check, list[tuple[str, str, str]]]:
    """Read and preprocess every record (the first ``max_records`` when > 0)."""
    from clef_core.data.errors import BadRecordError
    from clef_core.data.preprocess import preprocess_record
    from clef_core.data.records import iter_source, read_record

    if not data_dir.is_dir():
        return Check("data", "fail", f"data-dir {data_dir} is not a folder"), []
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


def check_metadata(data_dir: Path, settings: MetadataConfig) -> Check:
    from clef_core.metadata.extract import extract_clinical_table

    try:
        table = extract_clinical_table(data_dir, settings)
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


def check_device(requested: str, train: TrainConfig) -> Check:
    import torch

    wanted = requested or train.device
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


def check_privacy(request: PrivacyConfig, node_config: Mapping[str, Any]) -> Check:
    """The site's own policy (its ``privacy-*`` keys), and whether the experiment's ``[privacy]``
    request would be accepted under it (a weaker request is refused at every round)."""
    from clef_core.config import ConfigError
    from clef_core.privacy.policy import PrivacyRefusal, SitePolicy, effective_privacy

    try:
        policy = SitePolicy.from_node_config(node_config)
    except (ConfigError, ValueError, TypeError) as exc:
        return Check("privacy", "fail", f"privacy settings: {exc}")
    info = {"policy": policy.to_dict(), "requested_mode": request.mode}
    budget = f"budget epsilon {policy.budget_epsilon:g}" if policy.budget_epsilon > 0 else "no budget"
    if policy.mode == "off":
        detail = f"site policy: no DP demanded ({budget}, scope {policy.budget_scope})"
    else:
        detail = (f"site policy: {policy.mode}-level DP, sigma >= {policy.noise_multiplier:g}, clip "
                  f"{policy.clip_norm:g}, delta <= {policy.delta:g}, {budget} (scope {policy.budget_scope})")
    try:
        effective = effective_privacy(policy, request)
    except PrivacyRefusal as exc:
        return Check("privacy", "warn", f"{detail}; this experiment would be REFUSED: {exc}", info)
    detail += f"; this experiment trains with mode {effective.mode}"
    if policy.ledger_dir:
        ledger = Path(policy.ledger_dir).expanduser()
        if not _writable(ledger):
            return Check("privacy", "fail", f"{detail}; privacy ledger folder {ledger} is not writable", info)
        detail += f", ledger {ledger}"
    return Check("privacy", "ok", detail, info)


def check_patients(data_dir: Path) -> Check:
    """Whether the site's records name their patients: a WFDB folder without patients.csv or
    '# Patient:' header comments makes every record its own privacy unit -- said loudly."""
    from clef_core.data.records import PATIENTS_FILE, detect_layout, iter_wfdb_folder

    if detect_layout(data_dir) == "mimic":
        return Check("patients", "ok", "patients from record_list.csv (subject_id)")
    try:
        refs = list(iter_wfdb_folder(data_dir))
    except ValueError as exc:
        return Check("patients", "fail", str(exc))
    named = sum(r.subject_id != r.record_id for r in refs)
    patients = len({r.subject_id for r in refs})
    unnamed = len(refs) - named
    info = {"records": len(refs), "named": named, "patients": patients,
            "unnamed_share": unnamed / len(refs) if refs else 0.0, "unit_is_record": bool(refs) and unnamed > 0}
    how = (f"add {data_dir / PATIENTS_FILE} with record_id,subject_id, or '# Patient: <id>' header comments")
    if named == 0:
        return Check("patients", "warn", f"privacy unit is the RECORD: none of {len(refs)} records names its patient "
                                         f"({how}), so a person with several records is several units of privacy",
                     info)
    if unnamed:
        return Check("patients", "warn", f"privacy unit is the RECORD for {unnamed} of {len(refs)} records "
                                         f"({100 * unnamed / len(refs):.0f}%) that name no patient ({how}): a person "
                                         f"with several of them is several units of privacy; replies carry "
                                         f"privacy.unit_is_record = 1", info)
    return Check("patients", "ok", f"{patients} patients over {len(refs)} records (all named)", info)


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
    from clef_core.federation.site_spec import resolve_site

    spec = resolve_site(node_config, Path())
    if not _writable(spec.work_dir):
        return Check("work-dir", "fail", f"work-dir {spec.work_dir} cannot be written (store, caches, site.log)")
    return Check("work-dir", "ok", f"site {spec.site_id}: store, caches and site.log in {spec.work_dir}")


def preflight(site: SiteConfig, exp: Experiment, max_records: int = 0) -> PreflightReport:
    """Every check of the module docstring for ``site`` under the experiment ``exp``."""
    from clef_core.federation.site_spec import foreign_folders, foreign_preprocess, resolve_site, with_site_folders

    node = site.node_config
    data_dir = Path(str(node["data-dir"])).expanduser()
    spec = resolve_site(node, Path())
    foreign = foreign_folders(exp, spec) + foreign_preprocess(exp, spec)
    request = exp.privacy
    exp = with_site_folders(exp, spec).replace(preprocess=spec.preprocess)  # the site reads with its own settings
    data, bad = check_data(data_dir, exp.preprocess, max_records)
    checks = [Check("config", "ok", f"site config {site.source or '(flags)'}: node-config {site.node_config_string()}"),
              data]
    if foreign:
        checks.append(Check("folders", "warn", f"this experiment would be REFUSED: it names {'; '.join(foreign)}"))
    if data_dir.is_dir():
        checks += [check_metadata(data_dir, exp.metadata), check_patients(data_dir)]
    checks += [check_device(str(node.get("device", "")), exp.train), check_privacy(request, node),
               check_ca(site.root_certificates), check_node_key(site.private_key), check_work_dir(node)]
    return PreflightReport(checks, bad)
