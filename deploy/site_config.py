"""A hospital's site configuration file: everything its SuperNode needs, in one TOML file.

configs/site-template.toml is the annotated template: copy it, fill in the paths, decide the
privacy policy (``privacy-mode`` is required: a hospital states what it demands; ``patient``
needs an absolute ``work-dir`` and a positive ``privacy-budget``) and, optionally, its own
``preprocess-*`` settings (which records it keeps; a run cannot change them). The
``[node-config]`` table becomes ``flower-supernode --node-config``: the site's identity, its
folders and its privacy policy (:mod:`clef_core.federation.site_spec`, :mod:`clef_core.privacy.policy`)
come from here and never from the run.

``clef preflight --site-config site.toml`` checks it; ``--print-command`` prints the
``flower-supernode`` command line it describes."""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from clef_core.federation.site_spec import PREPROCESS_PREFIX, SiteConfigError, deployment_site
from clef_core.privacy.policy import NODE_KEYS as POLICY_KEYS
from clef_core.privacy.policy import PrivacyPolicyError
from deploy.commands import node_config as node_config_string
from deploy.commands import supernode_command

TOP_KEYS = ("superlink", "root-certificates", "auth-supernode-private-key", "port", "node-config")
NODE_KEYS = ("data-dir", "site-id", "work-dir", "device", "site-index", "hosp-dir", "noise-dir",
             *POLICY_KEYS)


class SiteConfigFileError(ValueError):
    """The site configuration file is missing, unreadable or has unknown keys."""


@dataclasses.dataclass(frozen=True)
class SiteConfig:
    node_config: dict[str, Any]
    superlink: str = ""
    root_certificates: Path | None = None
    private_key: Path | None = None
    port: int = 9094
    source: Path | None = None

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], source: Path | None = None) -> SiteConfig:
        where = str(source or "site config")
        unknown = sorted(set(data) - set(TOP_KEYS))
        if unknown:
            raise SiteConfigFileError(f"{where}: unknown keys {unknown} (expected {list(TOP_KEYS)})")
        node = dict(data.get("node-config", {}))
        unknown = sorted(k for k in node if k not in NODE_KEYS and not str(k).startswith(PREPROCESS_PREFIX))
        if unknown:
            raise SiteConfigFileError(f"{where}: [node-config] has unknown keys {unknown} (expected {list(NODE_KEYS)} "
                                      f"or {PREPROCESS_PREFIX}<setting>)")
        if not str(node.get("data-dir", "")):
            raise SiteConfigFileError(f"{where}: [node-config] data-dir is required")
        try:
            deployment_site(node)
        except (SiteConfigError, PrivacyPolicyError) as exc:
            raise SiteConfigFileError(f"{where}: [node-config] {exc}") from None
        base = source.parent if source else Path.cwd()

        def path(key: str) -> Path | None:
            value = str(data.get(key, ""))
            return (base / Path(value).expanduser()) if value else None

        return cls(node, str(data.get("superlink", "")), path("root-certificates"),
                   path("auth-supernode-private-key"), int(data.get("port", 9094)), source)

    @classmethod
    def read(cls, path: Path) -> SiteConfig:
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise SiteConfigFileError(f"{path}: no such site config file") from None
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise SiteConfigFileError(f"{path}: unreadable site config ({exc})") from None
        return cls.from_mapping(data, path)

    def node_config_string(self) -> str:
        node = self.node_config
        extra = {k: v for k, v in node.items() if k not in ("data-dir", "site-id", "work-dir", "device", "site-index")}
        return node_config_string(Path(str(node["data-dir"])), str(node.get("site-id", "")),
                                  Path(str(node["work-dir"])) if node.get("work-dir") else None,
                                  str(node.get("device", "")),
                                  int(node["site-index"]) if "site-index" in node else None, extra)

    @property
    def work_dir(self) -> Path:
        """The site's work folder (store, caches, logs, ledger, app gate)."""
        from clef_core.federation.site_spec import resolve_site

        return resolve_site(self.node_config, Path()).work_dir

    def supernode_command(self) -> list[str]:
        if not self.superlink:
            raise SiteConfigFileError(f"{self.source or 'site config'}: superlink (host:port) is required")
        if self.root_certificates is None:
            raise SiteConfigFileError(f"{self.source or 'site config'}: root-certificates is required (TLS only)")
        return supernode_command(superlink=self.superlink, ca=self.root_certificates, private_key=self.private_key,
                                 node_config=self.node_config_string(), port=self.port)
