"""The clef model checkpoint: round trip, clear errors, Opacus prefixes, task heads."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from clef_core.checkpoint import (
    FORMAT_VERSION,
    CheckpointError,
    add_head,
    load_model,
    read_checkpoint,
    save_model,
)
from clef_core.encoders import build_encoder

T = 1000  # a short input keeps the encoder fast; Net1D pools over time, so any length works
PREPROCESS = {"sample_rate": 500, "window_s": 10.0, "bandpass": [0.67, 40.0], "order": 5, "leads": ["I", "II"]}
PROVENANCE = {"data": {"source": "unit-test"}, "loss": {"tau": 0.07}, "privacy": None}


@pytest.fixture(scope="module")
def encoder() -> nn.Module:
    torch.manual_seed(0)
    return build_encoder("small").eval()


@pytest.fixture()
def saved(tmp_path, encoder):
    return save_model(tmp_path / "model.pt", encoder, preprocess=PREPROCESS, provenance=PROVENANCE)


def _x(n: int = 3) -> torch.Tensor:
    return torch.randn(n, 1, T, generator=torch.Generator().manual_seed(1))


def test_round_trip_gives_the_same_embeddings(saved, encoder):
    loaded = load_model(saved)
    assert loaded.format_version == FORMAT_VERSION
    assert not loaded.encoder.training
    assert loaded.encoder_config["scale"] == "small"
    assert loaded.preprocess == PREPROCESS
    assert loaded.input == {"channels": 1, "lead": "any", "normalize": "zscore-per-window", "samples": 5000,
                            "sample_rate": 500}
    assert loaded.provenance["data"] == {"source": "unit-test"}
    assert loaded.provenance["privacy"] is None
    assert "created" in loaded.provenance and "clef_version" in loaded.provenance
    assert loaded.heads == {}
    with torch.no_grad():
        torch.testing.assert_close(loaded.encoder(_x()), encoder(_x()), rtol=0, atol=0)


def test_file_holds_only_plain_values_and_tensors(saved):
    payload = torch.load(saved, weights_only=True)  # would raise on any pickled object
    assert payload["format"] == "clef-model"


def test_save_is_atomic_and_leaves_no_temporary_files(saved):
    assert [p.name for p in saved.parent.iterdir()] == ["model.pt"]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda p: p.pop("format"), "not a clef model checkpoint: no 'format' key"),
        (lambda p: p.update(format="something-else"), "format is 'something-else', expected 'clef-model'"),
        (lambda p: p.update(format="clef-train-state"), "use final_model.pt, not the training state"),
        (lambda p: p.update(format_version=2), "format version 2 is not supported (expected 1)"),
        (lambda p: p.pop("preprocess"), "missing key 'preprocess'"),
        (lambda p: p["encoder"].update(norm="batch"), "weights don't match the encoder config (scale='small', norm='batch')"),
        (lambda p: p["encoder"].update(bogus=1), "the stored encoder config cannot be built: unknown encoder config key"),
        (lambda p: p["encoder"].update(stem=8), "shape mismatch(es) (e.g. '"),
        (lambda p: p["state_dict"].pop(next(iter(p["state_dict"]))), "1 tensor(s) missing (e.g. '"),
    ],
)
def test_bad_files_are_named_with_what_is_wrong(saved, mutate, message):
    payload = torch.load(saved, weights_only=True)
    mutate(payload)
    torch.save(payload, saved)
    with pytest.raises(CheckpointError) as info:
        load_model(saved)
    assert message in str(info.value)
    assert str(saved) in str(info.value)


def test_bare_state_dict_and_missing_file_are_refused(tmp_path, encoder):
    bare = tmp_path / "bare.pt"
    torch.save(encoder.state_dict(), bare)
    with pytest.raises(CheckpointError, match="looks like a bare state_dict"):
        load_model(bare)
    with pytest.raises(CheckpointError, match="no such file"):
        load_model(tmp_path / "absent.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="not a readable torch file"):
        load_model(junk)
    pickled = tmp_path / "pickled.pt"
    torch.save({"format": "clef-model", "obj": torch.nn.Identity()}, pickled)
    with pytest.raises(CheckpointError, match="holds objects other than plain values and tensors: .*Identity"):
        load_model(pickled)


def test_opacus_prefix_is_stripped_on_save_and_on_load(tmp_path, encoder, saved):
    from opacus import GradSampleModule

    wrapped = GradSampleModule(build_encoder("small"))
    wrapped._module.load_state_dict(encoder.state_dict())
    assert all(k.startswith("_module.") for k in wrapped.state_dict())
    path = save_model(tmp_path / "dp.pt", wrapped, preprocess=PREPROCESS, provenance=PROVENANCE)
    assert not any(k.startswith("_module.") for k in read_checkpoint(path)["state_dict"])

    # a file written by hand from a wrapped model's state_dict still loads
    payload = torch.load(saved, weights_only=True)
    payload["state_dict"] = {f"_module.{k}": v for k, v in payload["state_dict"].items()}
    torch.save(payload, saved)
    with torch.no_grad():
        torch.testing.assert_close(load_model(saved).encoder(_x()), encoder(_x()), rtol=0, atol=0)
        torch.testing.assert_close(load_model(path).encoder(_x()), encoder(_x()), rtol=0, atol=0)


def test_heads_are_saved_loaded_and_replaced(saved, encoder, tmp_path):
    emb = encoder.emb_dim
    head = nn.Linear(emb, 3)
    add_head(saved, "rhythm", head, ["af", "normal", "other"], meta={"lead": "I", "task": "classification"})
    loaded = load_model(saved)
    got = loaded.heads["rhythm"]
    assert got.labels == ["af", "normal", "other"] and got.kind == "linear"
    assert got.meta == {"lead": "I", "task": "classification"}
    z = torch.randn(4, emb)
    with torch.no_grad():
        torch.testing.assert_close(got.module(z), head(z), rtol=0, atol=0)

    add_head(saved, "rhythm", nn.Linear(emb, 1), ["af"])  # same name replaces
    add_head(saved, "age", nn.Linear(emb, 1), ["age"])
    heads = load_model(saved).heads
    assert sorted(heads) == ["age", "rhythm"] and heads["rhythm"].labels == ["af"]

    both = save_model(tmp_path / "with_heads.pt", encoder, preprocess=PREPROCESS, provenance=PROVENANCE,
                      heads={"sex": (nn.Linear(emb, 1), ["female"])})
    assert load_model(both).heads["sex"].labels == ["female"]


def test_bad_heads_are_refused(saved, encoder):
    with pytest.raises(CheckpointError, match="3 outputs but 2 labels"):
        add_head(saved, "x", nn.Linear(encoder.emb_dim, 3), ["a", "b"])
    with pytest.raises(CheckpointError, match=f"takes 7 inputs but the encoder .* embeds to {encoder.emb_dim}"):
        add_head(saved, "x", nn.Linear(7, 1), ["a"])
    with pytest.raises(CheckpointError, match="Sequential is not supported"):
        add_head(saved, "x", nn.Sequential(nn.Linear(encoder.emb_dim, 1)), ["a"])


def test_provenance_must_be_plain_and_weights_finite(tmp_path, encoder):
    with pytest.raises(TypeError, match=r"provenance\.bad: object cannot be stored"):
        save_model(tmp_path / "m.pt", encoder, preprocess=PREPROCESS, provenance={"bad": object()})
    broken = build_encoder("small")
    with torch.no_grad():
        next(broken.parameters()).fill_(math.nan)
    with pytest.raises(CheckpointError, match="non-finite weights"):
        save_model(tmp_path / "m.pt", broken, preprocess=PREPROCESS, provenance=PROVENANCE)
    assert not (tmp_path / "m.pt").exists()
