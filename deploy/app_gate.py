"""The site's app gate: a run's ClientApp bundle (FAB) runs only if it IS the hospital's installed clef-fl.

The code that trains on a hospital's patients arrives with the run: Flower ships the
researcher's app bundle to every SuperNode, and ``flwr-clientapp`` imports it. Flower 1.42's own
check (``flower-supernode --trusted-entities``) accepts only bundles signed through Flower Hub,
which an offline hospital cannot reach, and refuses every locally built bundle. So the site
verifies the bundle itself, against the one version of clef-fl its IT team installed and
reviewed (from the wheelhouse):

* ``clef supernode --site-config site.toml`` starts ``flower-supernode`` with this gate first on
  its ``PATH``: the SuperNode's executor launches ``flwr-clientapp`` by name, and the gate's
  ``flwr-clientapp`` (:func:`main`) is a thin wrapper around Flower's own entry point;
* before the bundle's first module is imported, :class:`AppGate` (an import hook) compares every
  file of the installed bundle (``$FLWR_HOME/apps/<publisher>.<name>.<version>.<hash>/``) with the
  installed clef-fl, byte for byte, and checks that the ClientApp component is
  ``client.client_app:app``. Anything else -- an altered file, an extra module, another entry
  point, a sourceless ``*.pyc`` -- is refused: the import fails with one fixed text
  (:data:`REFUSAL`, whatever the reason: which file differs would tell a coordinator what exists
  on the site's disk); ``app-gate.log`` records every bundle allowed or refused, with the reason;
* a verified bundle is only a token: every module Flower asks for is imported from the
  installed tree, never from the bundle. So bytecode in the bundle's ``__pycache__`` (which
  Python would otherwise run instead of the identical source; the SuperLink's ServerApp writes
  such files when it shares ``$FLWR_HOME`` on a one-host trial) is never executed;
* the gate's process, and every process it starts, keeps its own bytecode in a site-owned folder
  (``sys.pycache_prefix`` / ``PYTHONPYCACHEPREFIX`` = ``<work-dir>/app-gate/pycache``).

So a coordinator cannot run different code at the site: the only ClientApp that trains there is
the hospital's installed one, whose privacy policy comes from the site file.

This is the project's one adapter onto Flower's process layout; it checks that the installed
Flower is the tested one (:data:`TESTED_FLOWER`).
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import logging
import os
import sys
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

TESTED_FLOWER = "1.42.0"
CLIENTAPP = "client.client_app:app"
SHIM_NAME = "flwr-clientapp"
LOG_NAME = "app-gate.log"
BUNDLE_META = (".info", "pyproject.toml")  # written by `flwr build`, not code
PACKAGED_CONFIGS = ("clef_core", "configs")  # the wheel carries configs/ as clef_core/configs/
PYCACHE = "pycache"  # the gate's own bytecode folder, beside the shim
REFUSAL = "app bundle refused by the site: it is not the site's installed clef-fl"
BYTECODE_SUFFIXES = (".pyc", ".pyo")

log = logging.getLogger("clef.app_gate")


class BundleRefused(ImportError):
    """The run's app bundle is not the site's installed clef-fl."""


def code_root() -> Path:
    """The folder holding the installed ``clef_core``, ``client``, ... packages (site-packages,
    or the source tree of an editable install), found without importing them."""
    spec = importlib.util.find_spec("clef_core")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("clef-fl is not installed in this environment")
    return Path(next(iter(spec.submodule_search_locations))).resolve().parent


def installed_twin(rel: Path, root: Path) -> Path:
    """Where the bundle file ``rel`` lives in the installed clef-fl."""
    if rel.parts[0] == "configs" and (root / Path(*PACKAGED_CONFIGS)).is_dir():
        return root / Path(*PACKAGED_CONFIGS) / Path(*rel.parts[1:])
    return root / rel


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def verify_bundle(app_dir: Path, root: Path) -> str:
    """"" when every file of the installed bundle ``app_dir`` is byte-identical to the installed
    clef-fl under ``root`` and its ClientApp is :data:`CLIENTAPP`; else what is wrong."""
    try:
        config = tomllib.loads((app_dir / "pyproject.toml").read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        return f"no readable pyproject.toml ({exc})"
    component = config.get("tool", {}).get("flwr", {}).get("app", {}).get("components", {}).get("clientapp")
    if component != CLIENTAPP:
        return f"its ClientApp is {component!r}, not the installed {CLIENTAPP!r}"
    checked = 0
    for path in sorted(app_dir.rglob("*")):
        rel = path.relative_to(app_dir)
        if rel.parts[0] in BUNDLE_META or (path.is_dir() and not path.is_symlink()):
            continue
        if "__pycache__" in rel.parts:
            continue  # never read: modules come from the installed tree (AppGate), bytecode from the gate's own folder
        if path.suffix in BYTECODE_SUFFIXES:
            return f"{rel.as_posix()} is bytecode (a bundle ships source only)"
        if not path.is_file():
            return f"{rel.as_posix()} is not a regular file"
        twin = installed_twin(rel, root)
        if not twin.is_file():
            return f"{rel.as_posix()} is not part of the installed clef-fl"
        if _digest(path) != _digest(twin):
            return f"{rel.as_posix()} differs from the installed clef-fl"
        checked += 1
    if not checked:
        return "the bundle holds no code"
    return ""


class AppGate(importlib.abc.MetaPathFinder):
    """An import hook for the modules Flower imports from an installed app bundle: the whole
    bundle must pass :func:`verify_bundle` (checked once per bundle folder), and then the module
    is imported from the installed tree instead -- no byte of the bundle is ever executed, so
    nothing it carries beside the checked sources (a ``__pycache__`` included) can run."""

    def __init__(self, apps_root: Path, root: Path) -> None:
        self.apps_root = Path(apps_root).resolve()
        self.root = root
        self.verdicts: dict[Path, str] = {}

    def bundle_of(self, origin: Path) -> Path | None:
        try:
            rel = origin.resolve().relative_to(self.apps_root)
        except ValueError:
            return None
        return self.apps_root / rel.parts[0] if len(rel.parts) > 1 else None

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        origin = getattr(spec, "origin", None) if spec is not None else None
        bundle = self.bundle_of(Path(origin)) if origin and origin not in ("built-in", "frozen") else None
        if bundle is None:
            return None  # not bundle code: the normal finders handle it
        if bundle not in self.verdicts:
            self.verdicts[bundle] = verify_bundle(bundle, self.root)
            if self.verdicts[bundle]:
                log.error("REFUSED app bundle %s: %s", bundle.name, self.verdicts[bundle])
            else:
                log.info("app bundle %s is the installed clef-fl (%s): allowed", bundle.name, self.root)
        if self.verdicts[bundle]:
            raise BundleRefused(REFUSAL)
        # verified: the bundle is only a token; the module comes from the installed tree
        rel = Path(origin).resolve().relative_to(bundle.resolve())
        container = rel.parent.parent if rel.name == "__init__.py" else rel.parent
        installed = importlib.machinery.PathFinder.find_spec(fullname, [str(self.root / container)])
        if installed is None or installed.origin is None or self.bundle_of(Path(installed.origin)) is not None:
            log.error("REFUSED app bundle %s: module %s has no installed twin", bundle.name, fullname)
            raise BundleRefused(REFUSAL)
        return installed


def check_flower_version() -> str:
    from importlib.metadata import version

    found = version("flwr")
    if found != TESTED_FLOWER:
        raise RuntimeError(f"flwr {found} is installed; the app gate is tested with flwr {TESTED_FLOWER} "
                           f"(install requirements-lock.txt)")
    return found


def apps_root() -> Path:
    """Where Flower installs app bundles: ``$FLWR_HOME/apps`` (default ``~/.flwr/apps``)."""
    return Path(os.environ.get("FLWR_HOME", Path.home() / ".flwr")).expanduser() / "apps"


def install(root: Path | None = None) -> AppGate:
    gate = AppGate(apps_root(), root or code_root())
    sys.meta_path.insert(0, gate)
    return gate


def main() -> None:
    """The gate's ``flwr-clientapp``: Flower's own entry point behind :class:`AppGate`."""
    log_file = os.environ.get("CLEF_APP_GATE_LOG")
    handler: logging.Handler = logging.FileHandler(log_file) if log_file else logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    check_flower_version()
    own_bytecode(Path(os.environ.get(PYCACHE_ENV, "") or Path.home() / ".clef" / "app-gate" / PYCACHE))
    install()
    from flwr.supernode.cli import flwr_clientapp

    flwr_clientapp()


PYCACHE_ENV = "PYTHONPYCACHEPREFIX"


def own_bytecode(folder: Path) -> None:
    """Python's bytecode for this process and its children in ``folder`` (site-owned), never in a
    ``__pycache__`` beside the source: a bundle's bytecode is neither read nor written."""
    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    sys.pycache_prefix = str(folder)
    os.environ[PYCACHE_ENV] = str(folder)


def write_gate(folder: Path, log_file: Path) -> Path:
    """``folder/flwr-clientapp``: the executable that runs :func:`main` with this interpreter and
    ``folder/pycache`` as its bytecode folder."""
    folder.mkdir(parents=True, exist_ok=True)
    shim = folder / SHIM_NAME
    shim.write_text(f"#!{sys.executable}\nimport os, sys\nos.environ['CLEF_APP_GATE_LOG'] = {str(log_file)!r}\n"
                    f"os.environ[{PYCACHE_ENV!r}] = {str(folder.resolve() / PYCACHE)!r}\n"
                    f"from deploy.app_gate import main\nsys.exit(main())\n", encoding="utf-8")
    shim.chmod(0o755)
    return folder


def gate_environment(folder: Path, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``env`` (default: this process's) with the gate first on PATH, then this environment's bin/,
    and the gate's bytecode folder as every Python process's (:func:`own_bytecode`)."""
    from deploy.commands import bin_dir

    base = dict(os.environ if env is None else env)
    return {**base, "PATH": os.pathsep.join([str(folder), str(bin_dir()), base.get("PATH", "")]),
            PYCACHE_ENV: str(Path(folder).resolve() / PYCACHE)}
