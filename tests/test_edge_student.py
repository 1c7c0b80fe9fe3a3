"""The wearable student: tiny scale, distillation (resumable), export and its TFLite Micro budget."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.signal import resample_poly

from clef_core.checkpoint import load_model
from clef_core.distill import Decimate, DistillTrainer, decimation_factor, distill
from clef_core.encoders import build_encoder, count_parameters

DISTILL_SET = {"steps": 8, "batch_size": 8, "stat_views": 16, "seed": 0}


def _cfg(tiny_config, **changes):
    cfg = copy.deepcopy(tiny_config)
    cfg["distill"].update({**DISTILL_SET, **changes})
    return cfg


@pytest.fixture(scope="module")
def student_run(tmp_path_factory, tiny_config, tiny_site, tiny_checkpoint):
    torch.set_num_threads(1)
    run = tmp_path_factory.mktemp("student")
    return distill(_cfg(tiny_config), teacher_path=tiny_checkpoint, run_dir=run, site=tiny_site, progress=False)


def test_tiny_scale():
    enc = build_encoder("tiny")
    assert (enc.config.stem, enc.config.emb_dim, enc.config.se_reduction) == (16, 128, 4)
    assert count_parameters(enc) == 95_612
    assert enc(torch.randn(2, 1, 2500)).shape == (2, 128)
    assert enc.stage_list[-1].block_list[0].se.se_fc1.out_features == 128 // 4
    assert build_encoder("small").config.se_reduction == 2  # the published scales are unchanged
    with pytest.raises(ValueError, match="se_reduction"):
        build_encoder("tiny", se_reduction=32)


@pytest.mark.parametrize("q", [2, 4, 5])
def test_decimate_is_resample_poly(q):
    x = np.random.default_rng(q).standard_normal((2, 5000))
    got = Decimate(q)(torch.tensor(x, dtype=torch.float32)[:, None]).numpy()[:, 0]
    assert np.abs(got - resample_poly(x, 1, q, axis=-1)).max() < 1e-5


def test_decimate_keeps_the_module_methods():
    """Its padding attribute once shadowed ``nn.Module.half`` (an int where a method belongs)."""
    assert Decimate(4).half().fir.dtype == torch.float16


def test_rate_must_divide_teacher_rate():
    assert decimation_factor(500, 250) == 2 and decimation_factor(500, 125) == 4
    with pytest.raises(ValueError, match="300 Hz"):
        decimation_factor(500, 300)


def test_student_checkpoint(student_run, tiny_checkpoint):
    lm = load_model(student_run.student)
    assert lm.encoder_config["scale"] == "tiny" and lm.encoder.emb_dim == 128
    assert lm.preprocess["sample_rate"] == 250 and lm.input["samples"] == 2500
    assert lm.provenance["kind"] == "distill" and lm.provenance["teacher"]["checkpoint"] == str(tiny_checkpoint)
    assert student_run.steps == DISTILL_SET["steps"] and np.isfinite(student_run.final_loss)
    lines = [json.loads(x) for x in (student_run.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [4, 8]  # 30 patients, batch 8: 4 steps per epoch
    # the loss starts near 1 (unit-scaled centred target) and the student learns something
    assert lines[-1]["train_loss"] < 1.5


def test_resume_after_interruption_gives_the_same_student(tmp_path, tiny_config, tiny_site, tiny_checkpoint,
                                                         student_run, monkeypatch):
    torch.set_num_threads(1)
    calls = {"n": 0}
    original = DistillTrainer.train_epoch

    def crash_in_second_epoch(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("simulated crash")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(DistillTrainer, "train_epoch", crash_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        distill(_cfg(tiny_config), teacher_path=tiny_checkpoint, run_dir=tmp_path, site=tiny_site, progress=False)
    monkeypatch.setattr(DistillTrainer, "train_epoch", original)
    resumed = distill(_cfg(tiny_config), teacher_path=tiny_checkpoint, run_dir=tmp_path, site=tiny_site, progress=False)
    assert resumed.resumed_from_step == 4 and resumed.steps == 8
    a, b = load_model(student_run.student).encoder.state_dict(), load_model(resumed.student).encoder.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)

    with pytest.raises(ValueError, match="other settings"):
        distill(_cfg(tiny_config, sample_rate=125), teacher_path=tiny_checkpoint, run_dir=tmp_path,
                site=tiny_site, progress=False)


def test_cli_errors_name_the_input(tmp_path, capsys):
    from clef.cli import main

    assert main(["distill", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "o")]) == 1
    assert "nope.pt" in capsys.readouterr().err
    assert main(["distill", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "o"), "--set", "distill.steps=0"]) == 1
    assert "distill.steps" in capsys.readouterr().err


def test_student_int8_fits_tflite_micro(student_run, shared_data, tmp_path):
    from edge.export.exporter import ExportOptions
    from edge.student import ARENA_BUDGET_KIB, MODEL_BUDGET_KIB, export_student

    # tflite-runtime is left out (edge_venv absent) to keep the test short; clef distill checks it
    # calibration as a list of folders (the API allows several): the arena's window read it as one Path
    opts = ExportOptions(calibration=[shared_data / "ecg"], windows_per_record=1, cuts=1,
                         edge_venv=tmp_path / "no-edge-venv")
    if not (opts.export_venv / "bin" / "python").exists():
        pytest.skip(f"no export venv at {opts.export_venv} (litert-torch + tflite-micro; see docs/edge.md)")
    report = export_student(student_run.student, tmp_path, opts, log=lambda m: None)
    s = report["student"]
    assert s["file"] == ("student_int8.tflite" if report["gate"] == "pass" else "student_int8.rejected.tflite")
    assert (tmp_path / s["file"]).is_file() and (tmp_path / "preprocess.json").is_file()
    assert json.loads((tmp_path / "preprocess.json").read_text())["sample_rate"] == 250
    assert set(report["models"]) == {"student.onnx", "student_int8.onnx", "student_int8.tflite"}
    assert 0 < s["arena_kib"] <= ARENA_BUDGET_KIB and 0 < s["size_kb"] <= MODEL_BUDGET_KIB
    assert s["within_budget"] and report["models"]["student_int8.tflite"]["conversion"]["full_integer"]
    assert json.loads((tmp_path / "export_report.json").read_text())["student"] == s


def test_bench_student_cites_the_small_encoder_as_bench_edge_printed_it(tmp_path):
    """bench_student.py's teacher column (int8 size, TFLM arena, gate) is read from the edge
    benchmark's result file, not typed into the script; a missing file gives "-"."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from bench_student import small_encoder_figures

    edge_md = tmp_path / "edge.md"
    edge_md.write_text(
        "| model / runtime | size KiB | ms per 10 s window | centred cos min | rel L2 | cos min |\n"
        "| tflite-runtime int8 (model_int8.tflite), XNNPACK int8 kernels (the runtime's default) "
        "| 552.0 | 2.17 | 0.9840 | 0.0421 | 0.9962 |\n"
        "TFLite Micro arena: **287.0 KiB** (293857 B); reference kernels 75.9 ms/window\n")
    figures = small_encoder_figures(edge_md)
    assert figures["size_kb"].startswith("552.0 ") and figures["arena_kib"].startswith("287.0 ")
    assert figures["gate"].startswith("0.984 / 0.042 ")
    assert small_encoder_figures(tmp_path / "absent.md") == {"size_kb": "-", "arena_kib": "-", "gate": "-"}
