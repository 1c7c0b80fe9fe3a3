"""The run folder of every resumable command (clef_core/run_folder.py): NaN-safe JSON, metrics
reconciled with the saved state after a crash, status.json, and run folders of the old layout."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch

from clef_core.checkpoint import load_model
from clef_core.run_folder import RunFolder, covered, dumps, json_safe
from clef_core.train import pretrain
from clef_core.train.trainer import Trainer


def test_json_safe_writes_nan_and_infinity_as_null_and_array_numbers_as_python_numbers():
    value = {"a": math.nan, "b": [1.0, -math.inf, (np.float32(2.5), np.int64(3))], 4: np.array([1.0, np.nan]),
             "t": torch.tensor(0.5), "nested": {"x": np.float64("inf"), "ok": "NaN"}}
    assert json_safe(value) == {"a": None, "b": [1.0, None, [2.5, 3]], "4": [1.0, None], "t": 0.5,
                                "nested": {"x": None, "ok": "NaN"}}
    assert dumps({"loss": math.nan, "lr": 1e-3}) == '{"loss": null, "lr": 0.001}'
    assert json.loads(dumps(value))["b"] == [1.0, None, [2.5, 3]]  # strict JSON: no NaN token to choke a reader


def test_metrics_past_the_saved_state_and_a_line_cut_by_a_crash_are_dropped(tmp_path):
    folder = RunFolder(tmp_path / "run")
    epoch1 = [{"kind": "step", "epoch": 1, "step": 1, "train_loss": 0.9},
              {"kind": "step", "epoch": 1, "step": 2, "train_loss": math.nan},
              {"kind": "epoch", "epoch": 1, "step": 2, "train_loss": 0.8}]
    for line in epoch1 + [{"kind": "step", "epoch": 2, "step": 3, "train_loss": 0.7}]:
        folder.append_metrics(line)
    with open(folder.metrics, "a", encoding="utf-8") as fh:
        fh.write('{"kind": "step", "epoch": 2, "st')  # the crash, mid-line, before epoch 2's state was saved
    assert folder.truncate_metrics(covered(epoch=1, step=2)) == 3
    want = [{**line, "train_loss": None if math.isnan(line["train_loss"]) else line["train_loss"]} for line in epoch1]
    assert folder.read_metrics() == want
    assert folder.last_metric("train_loss", kind="epoch") == 0.8
    assert sorted(p.name for p in folder.root.iterdir()) == ["metrics.jsonl"]  # no temporary file left
    assert RunFolder(tmp_path / "fresh").truncate_metrics(covered(0, 0)) == 0
    assert not (tmp_path / "fresh" / "metrics.jsonl").exists()


def test_one_line_per_round_and_a_lost_line_restored_from_the_checkpoint(tmp_path):
    folder = RunFolder(tmp_path)
    # written before this module (json.dumps allowed NaN): round 2 twice, round 4 never checkpointed
    folder.metrics.write_text('{"round": 1, "train_loss": NaN}\n{"round": 2, "train_loss": 0.5}\n'
                              '{"round": 2, "train_loss": 0.4}\n{"round": 4, "train_loss": 0.2}\n', encoding="utf-8")
    restored = {"round": 3, "train_loss": 0.3}  # checkpointed, its line lost in the crash
    assert folder.truncate_metrics(lambda line: line["round"] <= 3, restore=[restored], key="round") == 3
    assert folder.read_metrics() == [{"round": 1, "train_loss": None}, {"round": 2, "train_loss": 0.4}, restored]
    assert "NaN" not in folder.metrics.read_text(encoding="utf-8")


def test_status_follows_the_run(tmp_path):
    folder = RunFolder(tmp_path)
    assert folder.read_status() == {}
    with folder.tracking_status(epoch=0, epochs=2) as status:
        assert folder.read_status() == {"state": "running", "epoch": 0, "epochs": 2}
        status.update(epoch=2, loss=math.nan)
    assert folder.read_status() == {"state": "complete", "epoch": 2, "epochs": 2, "loss": None}
    with pytest.raises(ValueError), folder.tracking_status(epoch=2):
        raise ValueError("no usable patients")
    assert folder.read_status() == {"state": "failed", "epoch": 2, "error": "ValueError: no usable patients"}
    with pytest.raises(KeyboardInterrupt), folder.tracking_status(epoch=1):
        raise KeyboardInterrupt
    assert folder.read_status()["state"] == "interrupted" and "again to resume" in folder.read_status()["note"]


def test_a_state_is_resumed_or_the_run_starts_over(tmp_path):
    folder = RunFolder(tmp_path)
    assert folder.resume_state("state.pt", resume=True) is None
    folder.save_state({"step": torch.tensor(3)}, "state.pt")
    folder.append_metrics({"step": 3})
    assert int(folder.resume_state("state.pt", resume=True)["step"]) == 3
    assert folder.resume_state("state.pt", resume=False) is None
    assert not (tmp_path / "state.pt").exists() and not folder.metrics.exists()
    (tmp_path / "state.pt").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match=r"state\.pt: unreadable"):
        folder.resume_state("state.pt", resume=True)


def _cfg(base: dict, **train) -> dict:
    cfg = copy.deepcopy(base)
    cfg["train"].update({"max_steps": 0, "batch_size": 16, "schedule": "sgdr", **train})  # sgdr: epochs may grow
    return cfg


def test_central_pretraining_writes_its_status_and_an_interrupted_run_resumes(tmp_path, tiny_site, tiny_config,
                                                                               monkeypatch):
    original, calls = Trainer.train_epoch, {"n": 0}

    def stop_in_second_epoch(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("Ctrl-C")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "train_epoch", stop_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        pretrain(_cfg(tiny_config, epochs=2), run_dir=tmp_path, site=tiny_site, progress=False)
    assert RunFolder(tmp_path).read_status()["state"] == "interrupted"
    monkeypatch.setattr(Trainer, "train_epoch", original)
    result = pretrain(_cfg(tiny_config, epochs=2), run_dir=tmp_path, site=tiny_site, progress=False)
    assert result.resumed_from_epoch == 1
    assert RunFolder(tmp_path).read_status() == {"state": "complete", "epoch": 2, "step": result.steps, "epochs": 2,
                                                 "final_model": str(result.final_model)}


def test_a_run_folder_of_the_old_layout_resumes(tmp_path, tiny_site, tiny_config):
    """A folder written before clef_core.run_folder: train_state.pt and metrics.jsonl (no
    status.json), a crash having left a line past the state (with a NaN token) and a cut line."""
    straight = pretrain(_cfg(tiny_config, epochs=2), run_dir=tmp_path / "straight", site=tiny_site, progress=False)
    old = tmp_path / "old"
    pretrain(_cfg(tiny_config, epochs=1), run_dir=old, site=tiny_site, progress=False)
    (old / "status.json").unlink()
    with open(old / "metrics.jsonl", "a", encoding="utf-8") as fh:
        fh.write('{"kind": "step", "epoch": 2, "step": 99, "train_loss": NaN, "lr": 0.001}\n{"kind": "epoch", "ep')
    resumed = pretrain(_cfg(tiny_config, epochs=2), run_dir=old, site=tiny_site, progress=False)
    assert resumed.resumed_from_epoch == 1 and resumed.steps == straight.steps
    a, b = load_model(straight.final_model).encoder.state_dict(), load_model(resumed.final_model).encoder.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    lines = RunFolder(old).read_metrics()
    assert [(line["kind"], line["epoch"]) for line in lines] == [("epoch", 1), ("epoch", 2)]
    straight_lines = RunFolder(tmp_path / "straight").read_metrics()
    assert [line["train_loss"] for line in lines] == [line["train_loss"] for line in straight_lines]
    assert RunFolder(old).read_status()["state"] == "complete"
