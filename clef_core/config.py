"""One configuration system for every command.

An experiment is a TOML file in ``configs/``. Every command starts from
``configs/default.toml``, merges the user's file over it, then applies
``--set section.key=value`` overrides. Values given with ``--set`` are parsed as
TOML literals (``3``, ``0.1``, ``true``, ``"text"``, ``[1, 2]``); anything that is
not a TOML literal is kept as a plain string.

Flower's run_config is flat (``{"loss.tau": 0.07}``); :func:`flatten` and
:func:`unflatten` convert between the two forms so that ``flwr run . -c`` and
``clef ... --set`` accept the same keys.
"""

from __future__ import annotations

import copy
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

PACKAGE_ROOT = Path(__file__).resolve().parent
CONFIG_DIRS = (PACKAGE_ROOT.parent / "configs", PACKAGE_ROOT / "configs")


class ConfigError(ValueError):
    """A configuration file or override is malformed or names an unknown key."""


def configs_dir() -> Path:
    """The folder that holds the shipped experiment files."""
    for candidate in CONFIG_DIRS:
        if (candidate / "default.toml").is_file():
            return candidate
    raise ConfigError(f"configs/default.toml not found in any of {[str(c) for c in CONFIG_DIRS]}")


def resolve_config_path(name: str | Path) -> Path:
    """Accept a path, or the bare name of a file in ``configs/`` (with or without ``.toml``)."""
    path = Path(name)
    if path.is_file():
        return path
    for candidate in (configs_dir() / path.name, configs_dir() / f"{path.name}.toml"):
        if candidate.is_file():
            return candidate
    raise ConfigError(f"config file not found: {name}")


def read_toml(path: str | Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc


def parse_value(text: str) -> Any:
    """Parse one override value as a TOML literal, else keep it as a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def merge(base: Mapping[str, Any], update: Mapping[str, Any], *, strict: bool, where: str = "") -> dict[str, Any]:
    """Deep-merge ``update`` into a copy of ``base``.

    With ``strict``, a key absent from ``base`` is an error: a typo in a config
    file must not be silently ignored.
    """
    out = copy.deepcopy(dict(base))
    for key, value in update.items():
        dotted = f"{where}{key}"
        if strict and key not in out:
            raise ConfigError(f"unknown config key '{dotted}'")
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value, strict=strict, where=f"{dotted}.")
        else:
            out[key] = copy.deepcopy(value)
    return out


def flatten(cfg: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (the form of Flower's run_config)."""
    flat: dict[str, Any] = {}
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`flatten`."""
    nested: dict[str, Any] = {}
    for dotted, value in flat.items():
        node = nested
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"config key '{dotted}' conflicts with a value at '{part}'")
        node[leaf] = value
    return nested


def overrides_to_dict(overrides: Iterable[str]) -> dict[str, Any]:
    flat = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form section.key=value")
        key, text = item.split("=", 1)
        flat[key.strip()] = parse_value(text.strip())
    return unflatten(flat)


def load_config(file: str | Path | None = None, overrides: Iterable[str] = ()) -> dict[str, Any]:
    """Defaults, then ``file`` (a path or a name in configs/), then ``--set`` overrides."""
    cfg = read_toml(configs_dir() / "default.toml")
    if file is not None:
        path = resolve_config_path(file)
        cfg = merge(cfg, read_toml(path), strict=True)
    return merge(cfg, overrides_to_dict(overrides), strict=True)
