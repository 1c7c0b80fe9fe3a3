"""One versioned model-checkpoint format for every tool.

``clef pretrain``, ``clef simulate`` (``final_model.pt``), ``clef evaluate`` and the edge
export all read and write the same file: a ``torch.save``'d dict made only of plain
Python values and tensors, so it loads with ``torch.load(weights_only=True)``::

    {
      "format": "clef-model",
      "format_version": 1,
      "encoder": {...},        # the encoder's config (scale, norm, emb_dim, ...): enough to rebuild it
      "state_dict": {...},     # the encoder's weights
      "preprocess": {...},     # how raw ECG becomes the store: sample_rate, window_s, bandpass, leads, ...
                               # (the data layer's PreprocessConfig.to_dict(), kept verbatim)
      "input": {...},          # what one encoder input is: 1 channel of `samples` samples, any one lead,
                               # z-scored per window
      "heads": {name: {"kind": "linear", "labels": [...], "state_dict": {...}, "meta": {...}}},
      "provenance": {...},     # data, cohort summary, loss and train settings, privacy spent, version, time
    }

Every reader goes through :func:`load_model`, which checks the format name and version and
says exactly what is wrong.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from clef_core.atomic import atomic_torch_save

FORMAT = "clef-model"
FORMAT_VERSION = 1
REQUIRED_KEYS = ("format", "format_version", "encoder", "state_dict", "preprocess", "heads", "provenance")
OPACUS_PREFIX = "_module."


class CheckpointError(ValueError):
    """A file is not a readable clef model checkpoint; the message names the file and the problem."""


@dataclasses.dataclass
class LoadedHead:
    """A task head saved next to the encoder: ``module`` maps embeddings to ``len(labels)`` outputs."""

    name: str
    kind: str
    labels: list[str]
    module: nn.Module
    meta: dict[str, Any]


@dataclasses.dataclass
class LoadedModel:
    encoder: nn.Module
    encoder_config: dict[str, Any]
    preprocess: dict[str, Any]
    heads: dict[str, LoadedHead]
    provenance: dict[str, Any]
    format_version: int
    input: dict[str, Any] = dataclasses.field(default_factory=dict)


# ----------------------------------------------------------------------------- plain values


def to_plain(value: Any, where: str = "value") -> Any:
    """Convert ``value`` to plain Python types (dict/list/str/int/float/bool/None) or tensors.

    Keeps checkpoints loadable with ``weights_only=True``: paths become strings, numpy scalars
    Python numbers, dataclasses dicts, datetimes ISO strings. Anything else is an error, so an
    unpicklable-in-safe-mode object never sneaks into a checkpoint.
    """
    if value is None or type(value) in (bool, int, float, str):
        return value
    for plain in (bool, int, float, str):  # subclasses (e.g. torch's TorchVersion) would be pickled as such
        if isinstance(value, plain):
            return plain(value)
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (Path, os.PathLike)):
        return os.fspath(value)
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_plain(dataclasses.asdict(value), where)
    if isinstance(value, Mapping):
        return {str(k): to_plain(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value) if isinstance(value, (set, frozenset)) else value
        return [to_plain(v, f"{where}[{i}]") for i, v in enumerate(items)]
    raise TypeError(f"{where}: {type(value).__name__} cannot be stored in a clef checkpoint (plain types only)")


# ----------------------------------------------------------------------------- encoders


def unwrap(module: nn.Module) -> nn.Module:
    """The bare model inside an Opacus ``GradSampleModule`` (attribute ``_module``) or similar wrapper."""
    while isinstance(inner := getattr(module, "_module", None), nn.Module):
        module = inner
    return module


def strip_prefix(state_dict: Mapping[str, torch.Tensor], prefix: str = OPACUS_PREFIX) -> dict[str, torch.Tensor]:
    """Remove a wrapper prefix (Opacus writes ``_module.``) from every key that has it, repeatedly."""
    out = {}
    for key, tensor in state_dict.items():
        while key.startswith(prefix):
            key = key[len(prefix):]
        out[key] = tensor
    return out


def encoder_config_of(encoder: nn.Module) -> dict[str, Any]:
    """The encoder's config as a plain dict (``encoder.config`` must be a dataclass or a mapping)."""
    bare = unwrap(encoder)
    config = getattr(bare, "config", None)
    if config is None:
        raise CheckpointError(f"{type(bare).__name__} has no .config: only clef_core encoders can be saved")
    return to_plain(config, "encoder.config")


def build_encoder_from_config(config: Mapping[str, Any]) -> nn.Module:
    """Rebuild an encoder (random weights) from the config stored in a checkpoint."""
    from clef_core.encoders import encoder_from_config

    return encoder_from_config(dict(config))


# ----------------------------------------------------------------------------- heads

HEAD_KINDS = ("linear",)


def head_entry(head: nn.Module, labels: list[str], *, meta: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The stored form of a task head. Only ``nn.Linear`` heads are supported (kind "linear");
    fold any feature scaling of a probe into its weights before saving."""
    head = unwrap(head)
    if not isinstance(head, nn.Linear):
        raise CheckpointError(f"head of type {type(head).__name__} is not supported (kinds: {', '.join(HEAD_KINDS)})")
    labels = [str(label) for label in labels]
    if head.out_features != len(labels):
        raise CheckpointError(f"head has {head.out_features} outputs but {len(labels)} labels were given")
    return {
        "kind": "linear",
        "labels": labels,
        "in_features": head.in_features,
        "out_features": head.out_features,
        "state_dict": {k: v.detach().cpu().clone() for k, v in strip_prefix(head.state_dict()).items()},
        "meta": to_plain(dict(meta or {}), "head.meta"),
    }


def _build_head(name: str, entry: Mapping[str, Any], where: str) -> LoadedHead:
    kind = entry.get("kind")
    if kind not in HEAD_KINDS:
        raise CheckpointError(f"{where}: head '{name}' has unknown kind {kind!r} (supported: {', '.join(HEAD_KINDS)})")
    for key in ("labels", "in_features", "out_features", "state_dict"):
        if key not in entry:
            raise CheckpointError(f"{where}: head '{name}' is missing key '{key}'")
    module = nn.Linear(int(entry["in_features"]), int(entry["out_features"]))
    try:
        module.load_state_dict(strip_prefix(entry["state_dict"]))
    except RuntimeError as exc:
        raise CheckpointError(f"{where}: head '{name}' weights don't match its shape: {_first_line(exc)}") from exc
    return LoadedHead(name=name, kind=kind, labels=list(entry["labels"]), module=module.eval(), meta=dict(entry.get("meta", {})))


# ----------------------------------------------------------------------------- files


def save_model(
    path: str | Path,
    encoder: nn.Module,
    *,
    preprocess: Mapping[str, Any],
    heads: Mapping[str, Mapping[str, Any] | tuple[nn.Module, list[str]]] | None = None,
    provenance: Mapping[str, Any],
    input_spec: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``encoder`` (plus optional heads) in the clef model format, atomically.

    ``heads`` maps a name to either ``(module, labels)`` or an entry made by :func:`head_entry`.
    ``provenance`` should say where the weights came from (data, loss/train settings, privacy
    spent); ``clef_version`` and ``created`` are added when absent. ``input_spec`` describes one
    model input; the default (:func:`default_input_spec`) is what every clef encoder is trained on.
    """
    heads_out = {}
    for name, head in (heads or {}).items():
        heads_out[str(name)] = head_entry(*head) if isinstance(head, tuple) else dict(head)
    state = {k: v.detach().cpu().clone() for k, v in strip_prefix(unwrap(encoder).state_dict()).items()}
    if not is_finite_state(state):
        raise CheckpointError(f"{path}: refusing to save an encoder with non-finite weights")
    prov = to_plain(dict(provenance), "provenance")
    prov.setdefault("clef_version", clef_version())
    prov.setdefault("created", dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "encoder": encoder_config_of(encoder),
        "state_dict": state,
        "preprocess": to_plain(dict(preprocess), "preprocess"),
        "input": to_plain(dict(input_spec or default_input_spec(preprocess)), "input_spec"),
        "heads": heads_out,
        "provenance": prov,
    }
    return atomic_torch_save(payload, path)


def default_input_spec(preprocess: Mapping[str, Any]) -> dict[str, Any]:
    """One lead (any of the 12 in pretraining), one window at the model rate, z-scored per window
    (``(x - mean) / std`` over the window, as the pretraining views)."""
    spec: dict[str, Any] = {"channels": 1, "lead": "any", "normalize": "zscore-per-window"}
    if "sample_rate" in preprocess and "window_s" in preprocess:
        spec["samples"] = int(round(float(preprocess["sample_rate"]) * float(preprocess["window_s"])))
        spec["sample_rate"] = preprocess["sample_rate"]
    return spec


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The raw checkpoint dict after format/version/key checks (no model is built)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path}: not a readable torch file (not a torch.save archive)")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        detail = next((line.strip() for line in str(exc).splitlines() if "Unsupported global" in line), _first_line(exc))
        raise CheckpointError(f"{path}: not a clef model checkpoint (it holds objects other than plain values and "
                              f"tensors: {detail})") from exc
    except (RuntimeError, EOFError, OSError) as exc:
        raise CheckpointError(f"{path}: not a readable torch file ({_first_line(exc)})") from exc
    if not isinstance(payload, dict) or "format" not in payload:
        hint = " (it looks like a bare state_dict)" if isinstance(payload, dict) else ""
        raise CheckpointError(f"{path}: not a clef model checkpoint: no 'format' key{hint}")
    if payload["format"] != FORMAT:
        hint = "; use final_model.pt, not the training state" if payload["format"] == "clef-train-state" else ""
        raise CheckpointError(f"{path}: not a clef model checkpoint: format is {payload['format']!r}, "
                              f"expected {FORMAT!r}{hint}")
    version = payload.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{path}: clef-model format version {version} is not supported "
                              f"(expected {FORMAT_VERSION}); upgrade clef-fl or re-export the model")
    for key in REQUIRED_KEYS:
        if key not in payload:
            raise CheckpointError(f"{path}: missing key '{key}'")
    return payload


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> LoadedModel:
    """Read a checkpoint written by :func:`save_model`; the encoder is returned in eval mode."""
    payload = read_checkpoint(path, map_location)
    config = dict(payload["encoder"])
    try:
        encoder = build_encoder_from_config(config)
    except (TypeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{path}: the stored encoder config cannot be built: {_first_line(exc)}") from exc
    state = strip_prefix(payload["state_dict"])
    mismatch = describe_mismatch(encoder.state_dict(), state)
    if mismatch:
        raise CheckpointError(f"{path}: weights don't match the encoder config "
                              f"(scale={config.get('scale')!r}, norm={config.get('norm')!r}): {mismatch}")
    encoder.load_state_dict(state)
    heads = {name: _build_head(name, entry, str(path)) for name, entry in payload["heads"].items()}
    return LoadedModel(
        encoder=encoder.to(map_location).eval(),
        encoder_config=config,
        preprocess=dict(payload["preprocess"]),
        heads={name: LoadedHead(h.name, h.kind, h.labels, h.module.to(map_location), h.meta) for name, h in heads.items()},
        provenance=dict(payload["provenance"]),
        format_version=int(payload["format_version"]),
        input=dict(payload.get("input") or default_input_spec(payload["preprocess"])),
    )


def add_head(
    path: str | Path,
    name: str,
    head: nn.Module,
    labels: list[str],
    *,
    meta: Mapping[str, Any] | None = None,
    out: str | Path | None = None,
) -> Path:
    """Store a trained head ``name`` (replacing one of that name) in the checkpoint at ``path``
    (or a copy at ``out``), atomically. ``meta`` can record the task (e.g. lead, metric, kind of
    target); the head's input size must equal the encoder's embedding size."""
    payload = read_checkpoint(path)
    entry = head_entry(head, labels, meta=meta)
    emb_dim = payload["encoder"].get("emb_dim")
    if emb_dim is not None and entry["in_features"] != emb_dim:
        raise CheckpointError(f"head '{name}' takes {entry['in_features']} inputs but the encoder in {path} "
                              f"embeds to {emb_dim}")
    payload["heads"] = {**payload["heads"], str(name): entry}
    return atomic_torch_save(payload, out or path)


def clef_version() -> str:
    try:
        from importlib.metadata import version

        return version("clef-fl")
    except Exception:  # not installed (running from a source tree)
        return "0+unknown"


def describe_mismatch(expected: Mapping[str, torch.Tensor], given: Mapping[str, torch.Tensor]) -> str:
    """"" when ``given`` fits ``expected`` key for key and shape for shape, else what differs."""
    problems = []
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    shapes = [k for k in expected if k in given and tuple(given[k].shape) != tuple(expected[k].shape)]
    if missing:
        problems.append(f"{len(missing)} tensor(s) missing (e.g. '{missing[0]}')")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected tensor(s) (e.g. '{unexpected[0]}')")
    if shapes:
        k = shapes[0]
        problems.append(f"{len(shapes)} shape mismatch(es) (e.g. '{k}' is {tuple(given[k].shape)}, "
                        f"the config needs {tuple(expected[k].shape)})")
    return "; ".join(problems)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def is_finite_state(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """True when every floating tensor in ``state_dict`` is finite."""
    return all(bool(torch.isfinite(t).all()) for t in state_dict.values() if t.is_floating_point())


__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "CheckpointError",
    "LoadedHead",
    "LoadedModel",
    "add_head",
    "atomic_torch_save",
    "build_encoder_from_config",
    "default_input_spec",
    "encoder_config_of",
    "head_entry",
    "load_model",
    "read_checkpoint",
    "save_model",
    "strip_prefix",
    "to_plain",
    "unwrap",
]
