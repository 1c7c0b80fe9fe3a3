"""The exact command lines of a deployment (docs/deployment.md), built in one place.

Every process runs with runtime dependency installation off: ``flower-superlink`` gets
``--disable-runtime-dependency-installation`` (Flower 1.41 enables ``uv sync`` per run by
default there); ``flower-supernode`` installs nothing unless ``--allow-runtime-dependency-installation``
is given (its default is off, ``flwr.common.constant.RUNTIME_DEPENDENCY_INSTALL = False``), so
we never pass that flag. The app's dependencies are installed beforehand from the wheelhouse.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path

CONNECTION = "clef-deploy"


def bin_dir() -> Path:
    """The folder of this interpreter's console scripts (flwr, flower-superlink, flower-supernode)."""
    return Path(sys.executable).parent


def superlink_command(*, ca: Path, cert: Path, key: Path, host: str = "0.0.0.0", port: int = 9093,
                      database: Path | None = None, log_file: Path | None = None,
                      node_auth: bool = True) -> list[str]:
    """``flower-superlink`` with TLS, CLI-managed SuperNode authentication and no runtime installs.

    ``database`` keeps runs and registered nodes across a restart (default: in memory).
    """
    cmd = [str(bin_dir() / "flower-superlink"), "--ssl-ca-certfile", str(ca), "--ssl-certfile", str(cert),
           "--ssl-keyfile", str(key), "--disable-runtime-dependency-installation",
           "--host", host, "--port", str(port)]
    if node_auth:
        cmd.append("--enable-supernode-auth")
    if database is not None:
        cmd += ["--database", str(database)]
    if log_file is not None:
        cmd += ["--log-file", str(log_file)]
    return cmd


def node_config(data_dir: Path, site_id: str = "", work_dir: Path | None = None, device: str = "",
                site_index: int | None = None, extra: Mapping[str, str | int | float] | None = None) -> str:
    """A SuperNode's ``--node-config`` string (clef_core/federation/site_spec.py reads it)."""
    items: dict[str, str | int | float] = {"data-dir": str(data_dir)}
    if site_id:
        items["site-id"] = site_id
    if work_dir is not None:
        items["work-dir"] = str(work_dir)
    if device:
        items["device"] = device
    if site_index is not None:
        items["site-index"] = int(site_index)
    items.update(extra or {})
    parts = []
    for name, value in items.items():
        if isinstance(value, str):
            if '"' in value or "\\" in value:
                raise ValueError(f"node_config {name} = {value!r}: quotes and backslashes are not allowed")
            parts.append(f'{name}="{value}"')
        else:
            parts.append(f"{name}={value!r}")
    return " ".join(parts)


def supernode_command(*, superlink: str, ca: Path | None, private_key: Path | None, node_config: str,
                      port: int = 9094, max_retries: int | None = None,
                      max_wait_time: float | None = None) -> list[str]:
    """``flower-supernode`` dialling ``superlink`` (host:port) over TLS verified with ``ca``,
    authenticating with ``private_key``. ``ca=None`` is a plaintext (``--insecure``) node: only
    for showing that the SuperLink refuses it."""
    cmd = [str(bin_dir() / "flower-supernode"), "--superlink", superlink, "--port", str(port),
           "--node-config", node_config]
    cmd += ["--insecure"] if ca is None else ["--root-certificates", str(ca)]
    if private_key is not None:
        cmd += ["--auth-supernode-private-key", str(private_key)]
    if max_retries is not None:
        cmd += ["--max-retries", str(max_retries)]
    if max_wait_time is not None:
        cmd += ["--max-wait-time", str(max_wait_time)]
    return cmd


def write_connection(flwr_home: Path, address: str, ca: Path, name: str = CONNECTION) -> Path:
    """``$FLWR_HOME/config.toml`` naming the SuperLink at ``address`` as connection ``name``
    (TLS verified with ``ca``), the default for ``flwr run`` / ``flwr supernode ...``."""
    flwr_home.mkdir(parents=True, exist_ok=True)
    path = flwr_home / "config.toml"
    path.write_text(f'[superlink]\ndefault = "{name}"\n\n[superlink.{name}]\naddress = "{address}"\n'
                    f'root-certificates = "{Path(ca).resolve()}"\n', encoding="utf-8")
    return path


def register_command(public_key: Path, name: str = CONNECTION) -> list[str]:
    """``flwr supernode register KEY.pub CONNECTION`` (run by the coordinator for each site's key)."""
    return [str(bin_dir() / "flwr"), "supernode", "register", str(public_key), name]
