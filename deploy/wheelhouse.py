"""Offline install: a lock file of exact versions and a wheelhouse a hospital carries inside.

* ``requirements-lock.txt`` (repo root) pins every distribution ``clef-fl`` needs at run time:
  the closure of pyproject's ``[project].dependencies`` (with their extras and environment
  markers) over the *installed* distributions of the working environment -- what was tested,
  nothing else that happens to sit in the venv. Regenerate it after changing dependencies:
  ``clef wheelhouse --write-lock`` (from the project's venv).
* ``clef wheelhouse --out DIR`` on a machine with index access runs
  ``pip download -r requirements-lock.txt -d DIR`` and ``pip wheel . -w DIR --no-deps``; inside
  the hospital: ``pip install --no-index --find-links DIR clef-fl``.
"""

from __future__ import annotations

import re
import sys
import tomllib
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "requirements-lock.txt"
PROJECT = "clef-fl"
HEADER = ("# Exact versions of everything clef-fl needs at run time (the closure of pyproject's\n"
          "# [project].dependencies over the tested environment). Regenerate: clef wheelhouse --write-lock\n"
          "# Offline install: docs/deployment.md (clef wheelhouse --out DIR; pip install --no-index ...).\n")


class LockError(RuntimeError):
    """The lock file cannot be made or does not fit pyproject.toml."""


def project_requirements(pyproject: Path = REPO / "pyproject.toml") -> list[Requirement]:
    with open(pyproject, "rb") as fh:
        return [Requirement(r) for r in tomllib.load(fh)["project"]["dependencies"]]


def _applies(req: Requirement, extras: Iterable[str]) -> bool:
    if req.marker is None:
        return True
    env = default_environment()
    return any(req.marker.evaluate({**env, "extra": e}) for e in (list(extras) or [""]))


def closure(requirements: Iterable[Requirement]) -> dict[str, str]:
    """canonical name -> installed version of every distribution ``requirements`` pull in."""
    pinned: dict[str, str] = {}
    seen: set[tuple[str, frozenset[str]]] = set()
    stack = [(r, frozenset()) for r in requirements]
    while stack:
        req, parent_extras = stack.pop()
        if not _applies(req, parent_extras):
            continue
        name = canonicalize_name(req.name)
        key = (name, frozenset(req.extras))
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            raise LockError(f"{req.name} (required as {req}) is not installed in {sys.prefix}") from None
        if not req.specifier.contains(dist.version, prereleases=True):
            raise LockError(f"installed {req.name} {dist.version} does not satisfy {req}")
        pinned[name] = dist.version
        for text in dist.requires or []:
            stack.append((Requirement(text), frozenset(req.extras)))
    return pinned


def lock_text(pinned: dict[str, str]) -> str:
    return HEADER + "".join(f"{name}=={pinned[name]}\n" for name in sorted(pinned))


def write_lock(path: Path = LOCK) -> Path:
    path.write_text(lock_text(closure(project_requirements())), encoding="utf-8")
    return path


def read_lock(path: Path = LOCK) -> dict[str, str]:
    """canonical name -> version of every ``name==version`` line."""
    pinned = {}
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)", line)
        if not match:
            raise LockError(f"{path}:{number}: expected name==version, got {line!r}")
        pinned[canonicalize_name(match.group(1))] = match.group(2)
    return pinned


def check_lock(path: Path = LOCK, pyproject: Path = REPO / "pyproject.toml") -> list[str]:
    """Problems of the lock against pyproject.toml: an unpinned dependency (or extra), a pin
    outside the dependency's range. Empty = consistent."""
    pinned = read_lock(path)
    problems = []
    for req in project_requirements(pyproject):
        if not _applies(req, ()):
            continue
        name = canonicalize_name(req.name)
        if name not in pinned:
            problems.append(f"{req} is not pinned")
        elif not req.specifier.contains(pinned[name], prereleases=True):
            problems.append(f"{name}=={pinned[name]} does not satisfy {req}")
        for extra in req.extras:
            dist = metadata.distribution(req.name)
            for text in dist.requires or []:
                sub = Requirement(text)
                if sub.marker is not None and sub.marker.evaluate({**default_environment(), "extra": extra}) \
                        and not sub.marker.evaluate({**default_environment(), "extra": ""}) \
                        and canonicalize_name(sub.name) not in pinned:
                    problems.append(f"{sub.name} (extra [{extra}] of {req.name}) is not pinned")
    return problems


def download_commands(out: Path, lock: Path = LOCK, project: Path = REPO,
                      pip_args: Iterable[str] = ()) -> list[list[str]]:
    """The two commands that fill a wheelhouse: the locked dependencies, then clef-fl's own wheel."""
    pip = [sys.executable, "-m", "pip"]
    return [[*pip, "download", "-r", str(lock), "-d", str(out), *pip_args],
            [*pip, "wheel", str(project), "-w", str(out), "--no-deps", *pip_args]]


def install_command(wheelhouse: str | Path = "DIR") -> list[str]:
    return ["pip", "install", "--no-index", "--find-links", str(wheelhouse), PROJECT]
