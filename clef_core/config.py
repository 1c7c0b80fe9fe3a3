"""One configuration system for every command.

An experiment is a TOML file in ``configs/``. Every command starts from
``configs/default.toml``, merges the user's file over it, then applies
``--set section.key=value`` overrides. Values given with ``--set`` are parsed as
TOML literals (``3``, ``0.1``, ``true``, ``"text"``, ``[1, 2]``); anything that is
not a TOML literal is kept as a plain string.

Every value is checked at load time against the type of its default (:func:`check_value`):
``--set federation.rounds=three`` fails before anything runs. An unknown key is an error that
suggests the nearest known keys; a config name that is not found lists the shipped ones.

Flower's run_config is flat (``{"loss.tau": 0.07}``); :func:`flatten` and
:func:`unflatten` convert between the two forms so that ``flwr run . -c`` and
``clef ... --set`` accept the same keys.
"""

from __future__ import annotations

import copy
import difflib
import json
import tomllib
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

PACKAGE_ROOT = Path(__file__).resolve().parent
CONFIG_DIRS = (PACKAGE_ROOT.parent / "configs", PACKAGE_ROOT / "configs")


class ConfigError(ValueError):
    """A configuration file or override is malformed or names an unknown key."""


def require(ok: bool, key: str, value: Any, expected: str) -> None:
    """The one validation step of every config section's ``__post_init__``: a :class:`ConfigError`
    ``"<key> = <value>: expected <expected>"`` unless ``ok`` (``key`` is dotted: ``train.lr``)."""
    if not ok:
        raise ConfigError(f"{key} = {value!r}: expected {expected}")


class ConfigWarning(UserWarning):
    """A configuration that still loads but should be updated (e.g. the old [score2] section)."""


LEGACY_SECTIONS = {"score2": "risk"}  # old section -> the section that absorbed it (same key names)


def upgrade_legacy(update: Mapping[str, Any], where: str) -> dict[str, Any]:
    """``update`` with an old [score2] section read as [risk] (its keys region and missing_policy
    kept; model stays as configured, "score2" by default) and a :class:`ConfigWarning` naming it."""
    out = dict(update)
    for old, new in LEGACY_SECTIONS.items():
        if old in out and isinstance(out[old], Mapping):
            moved = dict(out.pop(old))
            if isinstance(out.get(new), Mapping) and set(moved) & set(out[new]):
                raise ConfigError(f"{where}: both [{old}] and [{new}] set {sorted(set(moved) & set(out[new]))}; keep only [{new}]")
            out[new] = {**moved, **dict(out.get(new, {}))}
            keys = ", ".join(f"{new}.{k}" for k in moved)
            warnings.warn(f"{where}: the [{old}] section is now [{new}] (risk.model = \"score2\" is the default); "
                          f"read as {keys or f'[{new}]'}; rename the section to [{new}]", ConfigWarning, stacklevel=3)
    return out


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
    names = ", ".join(config_names()) or "none"
    raise ConfigError(f"config file not found: {name} (neither a file nor a name in {configs_dir()}; "
                      f"the shipped configs are: {names})")


SITE_TEMPLATE = "site-template"  # configs/site-template.toml is a hospital's site file, not an experiment


def config_names() -> list[str]:
    """The experiment names in ``configs/`` (``default`` is the base of every one)."""
    return sorted(p.stem for p in configs_dir().glob("*.toml") if p.stem != SITE_TEMPLATE)


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

    With ``strict``, a key absent from ``base`` is an error (a typo in a config file must not
    be silently ignored) and every value must have the type of the value it replaces
    (:func:`check_value`).
    """
    out = copy.deepcopy(dict(base))
    for key, value in update.items():
        dotted = f"{where}{key}"
        if strict and key not in out:
            kind = "section" if isinstance(value, Mapping) else "key"
            raise ConfigError(f"unknown config {kind} '{dotted}'{_did_you_mean(dotted, base, where)}")
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value, strict=strict, where=f"{dotted}.")
        elif strict:
            out[key] = check_value(dotted, value, out[key])
        else:
            out[key] = copy.deepcopy(value)
    return out


def _did_you_mean(dotted: str, base: Mapping[str, Any], where: str) -> str:
    known = [f"{where}{k}" for k in base]
    close = difflib.get_close_matches(dotted, known, n=3, cutoff=0.6)
    return f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean (true | false)"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, Mapping):
        return "a section"
    return type(value).__name__


def _same_type(value: Any, default: Any) -> bool:
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    if isinstance(default, Mapping):
        return isinstance(value, Mapping)
    return isinstance(value, type(default))


def check_value(dotted: str, value: Any, default: Any) -> Any:
    """``value`` if it has the type of ``default``, else a :class:`ConfigError` naming the key.

    An integer is accepted where the default is a float (and stored as a float). A list's items
    must have the type of the default's items; the items of an empty default list (folders such
    as ``federation.site_dirs``) must be strings.
    """
    if isinstance(default, Mapping) and not isinstance(value, Mapping):
        raise ConfigError(f"{dotted} is a section, not a value: set its keys, e.g. {dotted}.{next(iter(default))}=...")
    if not _same_type(value, default):
        shown = f" (default {json.dumps(default)})" if not dotted.endswith("]") else ""
        raise ConfigError(f"{dotted} = {value!r}: expected {_type_name(default)}{shown}, got {_type_name(value)}")
    if isinstance(default, float):
        return float(value)
    if isinstance(default, list):
        item = default[0] if default else ""
        return [check_value(f"{dotted}[{i}]", v, item) for i, v in enumerate(value)]
    return copy.deepcopy(value)


def flatten(nested: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (the form of Flower's run_config)."""
    flat: dict[str, Any] = {}
    for key, value in nested.items():
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
        key, text = split_override(item)
        flat[key] = parse_value(text)
    return unflatten(flat)


def split_override(item: str) -> tuple[str, str]:
    if "=" not in item:
        raise ConfigError(f"override '{item}' is not of the form section.key=value")
    key, text = item.split("=", 1)
    return key.strip(), text.strip()


def apply_overrides(nested: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """The nested config dict ``nested`` with ``section.key=value`` overrides applied and checked (:func:`merge`).

    Where the default is a string, the text is taken as it is even when it reads as another
    TOML literal (``--set train.device=0``); quotes around it are removed as TOML does.
    """
    flat: dict[str, Any] = {}
    defaults = flatten(nested)
    for item in overrides:
        key, text = split_override(item)
        section = key.split(".", 1)[0]
        if section in LEGACY_SECTIONS and section not in nested:
            new_key = f"{LEGACY_SECTIONS[section]}.{key.split('.', 1)[1]}" if "." in key else key
            warnings.warn(f"--set {key}: [{section}] is now [{LEGACY_SECTIONS[section]}]; read as {new_key}", ConfigWarning, stacklevel=2)
            key = new_key
        value = parse_value(text)
        if isinstance(defaults.get(key), str) and not isinstance(value, str):
            value = text
        flat[key] = value
    return merge(nested, unflatten(flat), strict=True)


def load_config(file: str | Path | None = None, overrides: Iterable[str] = ()) -> dict[str, Any]:
    """Defaults, then ``file`` (a path or a name in configs/), then ``--set`` overrides."""
    cfg = read_toml(configs_dir() / "default.toml")
    if file is not None:
        path = resolve_config_path(file)
        try:
            cfg = merge(cfg, upgrade_legacy(read_toml(path), str(path)), strict=True)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from exc
    return apply_overrides(cfg, overrides)
