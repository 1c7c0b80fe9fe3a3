"""`clef export` / `clef infer` end to end on the shared tiny checkpoint and real records.

The int8 TFLite part needs the export venv (litert-torch) and is skipped with the command to
create it when that venv is absent; the tflite-runtime check needs the edge venv likewise.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from edge.export.exporter import EDGE_VENV_CMD, EXPORT_VENV_CMD, ExportOptions, export_model, torch_embed
from edge.export.gate import MIN_CENTRED_COSINE, fidelity
from edge.runtime import EdgePipeline, load_spec

REPO = Path(__file__).resolve().parents[1]
EXPORT_VENV = Path(os.environ.get("CLEF_EXPORT_VENV", REPO / ".venv-export"))
EDGE_VENV = Path(os.environ.get("CLEF_EDGE_VENV", REPO / ".venv-edge"))
FAST = dict(windows_per_record=1, cuts=0)  # 34 calibration / 16 held-out windows: enough to exercise the path


def clef(*args: str, python: Path | None = None, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run([str(python or sys.executable), "-m", "clef", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600, **kw)


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory, tiny_checkpoint, shared_data):
    """One full export of the tiny checkpoint (int8 TFLite included when the export venv exists)."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("export")
    opts = ExportOptions(calibration=shared_data / "ecg", tflite=(EXPORT_VENV / "bin" / "python").exists(), **FAST)
    report = export_model(tiny_checkpoint, out, opts, log=lambda _: None)
    return out, report


def test_to_2d_is_exact(tiny_checkpoint):
    pytest.importorskip("clef_core.encoders")
    from clef_core.checkpoint import load_model
    from edge.export.litert.to2d import to_2d

    enc = load_model(tiny_checkpoint).encoder
    x = torch.randn(2, 1, 4999) * 3  # odd length: the shortcut pools' zero padding is read
    with torch.no_grad():
        assert (enc(x) - to_2d(enc)(x[:, :, None, :])).abs().max() < 1e-5
        # the stem's and first block's conv + Swish in channel slices (TFLM arena): exact too
        split = to_2d(enc, split_parts=2)
        assert len(split.stem.convs) == 2 and len(split.blocks[0].conv1.convs) == 2
        assert (enc(x) - split(x[:, :, None, :])).abs().max() < 1e-5
        # at a fixed length the embedding is pooled by a depthwise conv (a bias slot for the
        # int8 export's bias correction): the same mean, shifted by exactly the bias it is given
        pooled = to_2d(enc, split_parts=2, window_samples=4999)
        assert (enc(x) - pooled(x[:, :, None, :])).abs().max() < 1e-5
        shift = torch.linspace(-1, 1, enc.emb_dim)
        pooled.pool.set_bias(shift)
        assert (enc(x) + shift - pooled(x[:, :, None, :])).abs().max() < 1e-5


def test_gate_thresholds_and_centring():
    rng = np.random.default_rng(0)
    common = rng.normal(size=(1, 64)) * 10  # a large shared component, as real embeddings have
    ref = common + rng.normal(size=(20, 64))
    good = ref + rng.normal(size=ref.shape) * 0.02
    bad = common + rng.normal(size=(20, 64))  # unrelated windows: raw cosine is still high
    assert fidelity(ref, good).gate == "pass"
    f = fidelity(ref, bad)
    assert f.gate == "fail" and f.cosine_min > 0.9 and f.centred_cosine_min < 0.5
    head = {"labels": ["a"], "weight": [[1.0] * 64], "bias": [0.0], "activation": "sigmoid"}
    assert fidelity(ref, ref, {"h": head}).head_agreement == {"h": 1.0}


def test_export_writes_models_report_and_gate(tiny_export, tiny_checkpoint):
    out, report = tiny_export
    assert (out / "preprocess.json").is_file() and (out / "model.onnx").is_file()
    spec = load_spec(out / "preprocess.json")
    assert spec.sample_rate == 500 and spec.window_samples == 5000 and spec.leads == ("I", "II")
    on_disk = json.loads((out / "export_report.json").read_text())
    assert on_disk["gate"] == report["gate"] and set(on_disk) >= {"size_kb", "centred_cosine_min", "rel_l2_error", "gate"}
    assert report["models"]["model.onnx"]["max_abs_diff"] < 1e-4
    # report-only fidelity on MIT-BIH lead II windows (Holter, 360 Hz), beside the gate
    assert report["report_data"]["windows"] == 44 and len(report["report_data"]["records"]) == 22
    q = report["models"]["model_int8.onnx"]
    assert q["report_data_fidelity"]["n_windows"] == 44 and "gate" in q["report_data_fidelity"]
    assert q["n_windows"] == report["windows"]["heldout_windows"] > 0
    # held-out windows come from records never used for calibration
    w = report["windows"]
    assert not set(w["calibration_records"]) & set(w["heldout_records"])
    # a model is either under its own name with gate "pass", or renamed with gate "fail"
    for name, entry in report["models"].items():
        if "gate" in entry:
            stem, suffix = name.rsplit(".", 1)
            passed = entry["gate"] == "pass"
            assert (out / name).is_file() == passed
            assert (out / f"{stem}.rejected.{suffix}").is_file() == (not passed)
            ok = entry["centred_cosine_min"] >= 0.97 and entry["rel_l2_error"] <= 0.05
            assert passed == ok


def test_int8_tflite_is_full_integer_and_small(tiny_export):
    out, report = tiny_export
    if "model_int8.tflite" not in report["models"]:
        pytest.skip(f"no export venv at {EXPORT_VENV}: {EXPORT_VENV_CMD}")
    entry = report["models"]["model_int8.tflite"]
    conv = entry["conversion"]
    assert conv["full_integer"] and conv["float_ops"] == [] and "DEQUANTIZE" not in conv["ops"]
    assert conv["input"]["dtype"] == "int8" and conv["output"]["dtype"] == "int8"
    assert entry["size_kb"] <= 600 and report["size_kb"] == entry["size_kb"]
    if isinstance(entry["tflite_runtime_2_14"], str):
        pytest.skip(entry["tflite_runtime_2_14"])
    assert entry["tflite_runtime_2_14"]["n_windows"] == entry["n_windows"]


def test_int8_tflite_passes_the_gate_on_a_weakly_trained_encoder(tiny_export):
    """The shared checkpoint is the small encoder after 3 training steps: its windows barely
    differ, so int8 rounding weighs most. Measured on these 34/16 windows: without the export's
    bias correction (the embedding's quantisation shift, measured on the calibration windows and
    folded into the pooling conv's bias) its int8 .tflite scored centred cosine 0.967, a fail;
    with it 0.981. The threshold is the gate's, unchanged, in every runtime checked."""
    out, report = tiny_export
    if "model_int8.tflite" not in report["models"]:
        pytest.skip(f"no export venv at {EXPORT_VENV}: {EXPORT_VENV_CMD}")
    entry = report["models"]["model_int8.tflite"]
    correction = entry["conversion"]["output_bias_correction"]
    assert correction["windows"] == report["windows"]["calibration_windows"] and correction["max_abs"] > 0
    assert entry["gate"] == "pass" and report["gate"] == "pass", (entry["centred_cosine_min"], entry["rel_l2_error"])
    assert entry["centred_cosine_min"] >= MIN_CENTRED_COSINE
    if isinstance(entry["tflite_runtime_2_14"], dict):
        assert entry["tflite_runtime_2_14"]["gate"] == "pass"


def test_tflite_runtime_runs_int8_on_its_xnnpack_int8_kernels(tiny_export, tmp_path, shared_data):
    """In tflite-runtime 2.14 an int8 model gets the wheel's own XNNPACK delegate with its int8
    kernels on (edge/runtime/xnnpack.py); it agrees with the builtin int8 kernels to a couple of
    output quantisation steps. (Speed is bench_edge.py's business, not a test's.)"""
    out, _ = tiny_export
    model = tflite_file(out)
    if not (EDGE_VENV / "bin" / "python").exists():
        pytest.skip(f"no edge venv at {EDGE_VENV}: {EDGE_VENV_CMD}")
    np.save(tmp_path / "w.npy", np.random.default_rng(0).standard_normal((4, 5000)).astype(np.float32))
    code = ("import sys, json, numpy as np; sys.path.insert(0, sys.argv[1]); from edge.runtime.model import EdgeModel\n"
            "w = np.load(sys.argv[3]); fast = EdgeModel(sys.argv[2], runtime='tflite-runtime')\n"
            "ref = EdgeModel(sys.argv[2], runtime='tflite-runtime', xnnpack_int8=False)\n"
            "d = max(float(np.abs(fast.embed(x) - ref.embed(x)).max()) for x in w)\n"
            "print(json.dumps({'kernels': [fast.kernels, ref.kernels], 'max_diff': d, 'step': fast.output_quant[0]}))\n"
            "del fast, ref\n")
    proc = subprocess.run([str(EDGE_VENV / "bin" / "python"), "-c", code, str(REPO), str(model), str(tmp_path / "w.npy")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["kernels"] == ["xnnpack-int8", "default"]
    assert res["max_diff"] <= 2.01 * res["step"], res


def test_split_stem_at_250hz_fits_the_tflm_arena_target(tiny_checkpoint, tmp_path, shared_data):
    """--split-parts 2 on the small encoder at 250 Hz (2500-sample windows): the stem's and first
    block's conv + Swish in channel slices convert to a full-integer file with two CONCATENATIONs
    and no QUANTIZE (one scale for a cat, its slices and its readers), the squeeze-excitations as
    FULLY_CONNECTED (TFLM keeps no per-channel multipliers for them), its embeddings match the
    float encoder, and the real TFLM interpreter runs it in <= 160 KiB (164.0 KiB before the
    squeeze-excitations left CONV_2D)."""
    if not (EXPORT_VENV / "bin" / "python").exists():
        pytest.skip(f"no export venv at {EXPORT_VENV}: {EXPORT_VENV_CMD}")
    from edge.export.calibration import real_windows
    from edge.export.preprocess_json import build_preprocess_json
    from edge.runtime import spec_from_dict

    spec = spec_from_dict(build_preprocess_json({"sample_rate": 250}))
    sets = real_windows(shared_data / "ecg", spec, windows_per_record=1, cuts=0)
    assert sets.calibration.shape[1] == 2500
    np.save(tmp_path / "cal.npy", sets.calibration)
    np.save(tmp_path / "held.npy", sets.heldout)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([str(EXPORT_VENV / "bin" / "python"), "-m", "edge.export.litert.convert", "--checkpoint",
                           str(tiny_checkpoint), "--calibration", str(tmp_path / "cal.npy"), "--heldout",
                           str(tmp_path / "held.npy"), "--out", str(tmp_path / "m.tflite"), "--embeddings",
                           str(tmp_path / "emb.npy"), "--report", str(tmp_path / "r.json"), "--per-tensor",
                           "--split-parts", "2"], cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    info = json.loads((tmp_path / "r.json").read_text())
    assert info["full_integer"] and info["ops"]["CONCATENATION"] == 2 and "QUANTIZE" not in info["ops"]
    assert info["ops"]["FULLY_CONNECTED"] == 20 and info["ops"].get("TRANSPOSE", 0) <= 2, info["ops"]
    from clef_core.checkpoint import load_model

    ref = torch_embed(load_model(tiny_checkpoint).encoder, sets.heldout)
    assert fidelity(ref, np.load(tmp_path / "emb.npy")).rel_l2_error < 0.1
    arena = tflm_arena(tmp_path / "m.tflite", sets.heldout[0], tmp_path)
    assert arena["arena_bytes"] <= 160 * 1024, arena


def tflm_arena(model: Path, window: np.ndarray, tmp_path: Path) -> dict:
    """benchmarks/tflm_arena.py on one window (skips when tflite-micro is not installed)."""
    probe = subprocess.run([str(EXPORT_VENV / "bin" / "python"), "-c", "import tflite_micro"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("tflite-micro is not installed in the export venv (.venv-export/bin/pip install tflite-micro)")
    np.save(tmp_path / "w.npy", np.asarray(window, dtype=np.float32))
    proc = subprocess.run([str(EXPORT_VENV / "bin" / "python"), str(REPO / "benchmarks" / "tflm_arena.py"), str(model),
                           str(tmp_path / "w.npy")], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_int8_tflite_runs_in_tflite_micro(tiny_export, tmp_path):
    """The real TFLM interpreter (reference kernels) runs the file: op set and versions are
    microcontroller-compatible; the smallest arena is reported (measured ~300 KiB for small)."""
    out, _ = tiny_export
    arena = tflm_arena(tflite_file(out), np.random.default_rng(0).standard_normal(5000), tmp_path)
    assert 100 < arena["arena_kib"] < 400


def tflite_file(out: Path) -> Path:
    for name in ("model_int8.tflite", "model_int8.rejected.tflite"):
        if (out / name).is_file():
            return out / name
    pytest.skip(f"no int8 tflite was built (export venv: {EXPORT_VENV_CMD})")


def test_infer_onnx_prints_one_json_line_per_window(tiny_export, shared_data):
    out, _ = tiny_export
    model = out / "model.onnx"
    proc = clef("infer", str(model), str(shared_data / "wfdb" / "s0010_re"), "--lead", "II")
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["start_s"] for r in lines] == [0.0, 10.0, 20.0]  # 38.4 s at 1000 Hz
    assert all(len(r["embedding"]) == 256 and r["lead"] == "II" for r in lines)
    # the same numbers as the library pipeline on the same samples
    from clef_core.data.records import read_record

    rec = read_record(shared_data / "wfdb" / "s0010_re")
    lib = list(EdgePipeline(model).run(rec.signal[rec.leads.index("II")].astype(np.float64), rec.fs))
    assert np.allclose([r["embedding"] for r in lib], [r["embedding"] for r in lines], atol=1e-5)


def test_infer_bad_record_is_one_line_naming_it(tiny_export, tmp_path):
    out, _ = tiny_export
    bad = tmp_path / "broken"
    (tmp_path / "broken.hea").write_text("broken 1 500 5000\nbroken.dat 16 200 16 0 0 0 0 I\n")
    (tmp_path / "broken.dat").write_bytes(b"\x00\x01\x02")  # far too short
    proc = clef("infer", str(out / "model.onnx"), str(bad))
    assert proc.returncode != 0 and proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1 and "broken" in proc.stderr
    proc = clef("infer", str(out / "model.onnx"), str(tmp_path / "missing"))
    assert proc.returncode != 0 and "missing" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_tflite_runs_in_numpy1_edge_venv_via_clef_infer(tiny_export, shared_data, tmp_path):
    """`clef infer` itself (not just the runtime) in the numpy<2 + tflite-runtime venv, on a .npy lead."""
    out, _ = tiny_export
    model = tflite_file(out)
    if not (EDGE_VENV / "bin" / "python").exists():
        pytest.skip(f"no edge venv at {EDGE_VENV}: {EDGE_VENV_CMD}")
    import wfdb

    x, f = wfdb.rdsamp(str(shared_data / "mitdb" / "101"), channels=[0], sampto=360 * 35)
    np.save(tmp_path / "lead.npy", x[:, 0])
    proc = clef("infer", str(model), str(tmp_path / "lead.npy"), "--fs", "360", "--runtime", "tflite-runtime",
                python=EDGE_VENV / "bin" / "python")
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["start_s"] for r in lines] == [0.0, 10.0, 20.0]
    # and ai-edge-litert's / the float model's view of the same windows agree with the gate's numbers
    spec = load_spec(out / "preprocess.json")
    from edge.runtime import windows_of

    wins = np.stack([w.x for w in windows_of(x[:, 0], 360, spec)])
    from clef_core.checkpoint import load_model

    ref = torch_embed(load_model(json.loads((out / "export_report.json").read_text())["checkpoint"]).encoder, wins)
    got = np.array([r["embedding"] for r in lines])
    assert np.linalg.norm(got - ref) / np.linalg.norm(ref) < 0.2  # int8 vs float, loose: 3 windows of a tiny model
    # a WFDB record without wfdb installed (the runtime's numpy reader), lead II by default
    proc = clef("infer", str(model), str(shared_data / "ecg" / "JS20004"), python=EDGE_VENV / "bin" / "python")
    assert proc.returncode == 0, proc.stderr
    (line,) = [json.loads(x) for x in proc.stdout.splitlines()]
    assert line["lead"] == "I" and line["start_s"] == 0.0 and len(line["embedding"]) == 256
    # the runtime folder copied alone, as onto a device, with its own command line
    device = tmp_path / "device"
    shutil.copytree(REPO / "edge" / "runtime", device / "clef_edge", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(model, device / "model.tflite")
    shutil.copy(out / "preprocess.json", device / "preprocess.json")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([str(EDGE_VENV / "bin" / "python"), "-m", "clef_edge", "model.tflite",
                           str(shared_data / "mitdb" / "101"), "--lead", "MLII"],
                          cwd=device, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.splitlines()) == 180  # 30 min 5 s -> 180 windows, streamed


def test_heads_travel_to_the_device_as_predictions(tiny_checkpoint, tmp_path, shared_data):
    """A linear head in the checkpoint -> preprocess.json -> class probabilities from `clef infer`,
    beside the embedding."""
    from clef_core.checkpoint import add_head

    torch.manual_seed(0)
    head = torch.nn.Linear(256, 2)
    ckpt = add_head(tiny_checkpoint, "rhythm", head, ["af", "normal"], meta={"activation": "softmax"},
                    out=tmp_path / "with_head.pt")
    opts = ExportOptions(calibration=shared_data / "ecg", tflite=False, report_data=None, **FAST)
    report = export_model(ckpt, tmp_path / "out", opts, log=lambda _: None)
    assert set(report["models"]["model_int8.onnx"]["head_agreement"]) == {"rhythm"}
    assert report["gate"] == "fail" and "--no-tflite" in report["note"]  # no tflite: never a pass
    proc = clef("infer", str(tmp_path / "out" / "model.onnx"), str(shared_data / "ecg" / "HR06000"))
    assert proc.returncode == 0, proc.stderr
    (res,) = [json.loads(line) for line in proc.stdout.splitlines()]
    probs = res["predictions"]["rhythm"]
    assert len(res["embedding"]) == 256
    assert set(probs) == {"af", "normal"} and abs(sum(probs.values()) - 1) < 1e-5
    from clef_core.checkpoint import load_model
    from clef_core.data.records import read_record
    from edge.runtime import windows_of

    rec = read_record(shared_data / "ecg" / "HR06000")
    (w,) = list(windows_of(rec.signal[0].astype(np.float64), rec.fs, load_spec(tmp_path / "out" / "preprocess.json")))
    with torch.no_grad():
        expect = torch.softmax(head(load_model(ckpt).encoder(torch.from_numpy(w.x[None, None]))), -1)[0]
    assert np.allclose([probs["af"], probs["normal"]], expect.numpy(), atol=1e-4)


def test_heads_run_only_on_their_lead_and_export_chooses_what_ships(tiny_checkpoint, tmp_path, shared_data):
    """A lead-I head is dropped from a lead-II export with a note; a synthetic-label head ships only
    when named; on the device a lead-II head runs on lead-II windows only, with its decision at
    the shipped operating point and a line saying the score is not a calibrated probability."""
    from clef_core.checkpoint import add_head

    from edge.export.exporter import ExportError

    torch.manual_seed(0)
    op = {"af": {"target_sensitivity": 0.9, "threshold": -1.0, "probability_threshold": 0.2689, "sensitivity": 0.9,
                 "specificity": 0.4, "n_pos": 10, "n_neg": 20, "calibrated": False}}
    ckpt = add_head(tiny_checkpoint, "af_II", torch.nn.Linear(256, 1), ["af"],
                    meta={"lead": "II", "task": "mitdb_af", "metric": "auroc", "value": 0.74, "operating_points": op},
                    out=tmp_path / "heads.pt")
    add_head(ckpt, "af_I", torch.nn.Linear(256, 1), ["af"], meta={"lead": "I", "task": "mitdb_af"})
    add_head(ckpt, "synth_II", torch.nn.Linear(256, 2), ["a", "b"], meta={"lead": "II", "task": "synthetic"})
    add_head(ckpt, "af_250", torch.nn.Linear(256, 1), ["af"], meta={"lead": "II", "preprocess": {"sample_rate": 250}})
    add_head(ckpt, "weak_II", torch.nn.Linear(256, 1), ["af"], meta={"lead": "II", "metric": "mean_auroc", "value": 0.55})
    notes: list[str] = []
    opts = ExportOptions(calibration=shared_data / "ecg", tflite=False, report_data=None, leads=("II",), **FAST)
    report = export_model(ckpt, tmp_path / "out", opts, log=notes.append)
    assert set(report["heads"]["shipped"]) == {"af_II"}
    assert "not exported" in report["heads"]["dropped"]["af_I"] and "synthetic" in report["heads"]["dropped"]["synth_II"]
    assert any("head af_I not shipped: fitted on lead I" in n for n in notes), notes
    assert report["heads"]["dropped"]["af_250"] == "fitted on other preprocessing: sample_rate 250 (the model's 500)"
    assert report["heads"]["dropped"]["weak_II"] == ("near chance: validation mean_auroc 0.550 < 0.6 "
                                                     "(--force-heads ships it, labelled near chance)")
    assert report["heads"]["shipped"]["af_II"]["operating_points"]["af"]["sensitivity"] == 0.9

    model = str(tmp_path / "out" / "model.onnx")
    on_ii = clef("infer", model, str(shared_data / "ecg" / "HR06000"), "--lead", "II")
    assert on_ii.returncode == 0, on_ii.stderr
    (res,) = [json.loads(line) for line in on_ii.stdout.splitlines()]
    assert set(res["predictions"]) == {"af_II"}
    assert res["decisions"]["af_II"]["af"] == (res["predictions"]["af_II"]["af"] >= 0.2689)
    assert "head af_II (lead II, validation auroc 0.740): a ranking score, not a calibrated probability" in on_ii.stderr
    on_i = clef("infer", model, str(shared_data / "ecg" / "HR06000"), "--lead", "I")
    (res,) = [json.loads(line) for line in on_i.stdout.splitlines()]
    assert "predictions" not in res and "not run on lead I: af_II (lead II)" in on_i.stderr

    with pytest.raises(ExportError, match="no head nope"):
        export_model(ckpt, tmp_path / "out2", dataclasses.replace(opts, heads=("nope",)), log=lambda _: None)
    report = export_model(ckpt, tmp_path / "out3", dataclasses.replace(opts, heads=("synth_II",)), log=lambda _: None)
    assert set(report["heads"]["shipped"]) == {"synth_II"} and report["heads"]["dropped"]["af_II"] == "not named in --heads"
    # --force-heads ships the near-chance head, labelled in the report and on the device
    forced = dataclasses.replace(opts, heads=("weak_II",), force_heads=True)
    report = export_model(ckpt, tmp_path / "out4", forced, log=lambda _: None)
    assert report["heads"]["shipped"]["weak_II"]["near_chance"] == "near chance: validation mean_auroc 0.550 < 0.6"
    weak = clef("infer", str(tmp_path / "out4" / "model.onnx"), str(shared_data / "ecg" / "HR06000"), "--lead", "II")
    assert weak.returncode == 0, weak.stderr
    assert ("head weak_II (lead II, validation mean_auroc 0.550): NEAR CHANCE (near chance: validation mean_auroc "
            "0.550 < 0.6; shipped with --force-heads)") in weak.stderr


def test_export_without_tflite_venv_says_how_to_make_it(tiny_checkpoint, tmp_path, shared_data):
    opts = ExportOptions(calibration=shared_data / "ecg", export_venv=tmp_path / "no-venv", **FAST)
    with pytest.raises(Exception, match="venv-export"):
        export_model(tiny_checkpoint, tmp_path / "out", opts, log=lambda _: None)
    shutil.rmtree(tmp_path / "out", ignore_errors=True)


def test_edge_auroc_scores_features_exactly_as_clef_evaluate():
    """benchmarks/edge_auroc.py scores int8 embeddings with the probe branch of evaluate_task:
    on the float encoder's own embeddings it must reproduce evaluate_task's metrics exactly."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    from edge_auroc import per_label, probe_metrics

    from clef_core.encoders import build_encoder
    from clef_core.evaluation.embed import embed
    from clef_core.evaluation.run import EvalSettings, evaluate_task
    from clef_core.evaluation.tasks import TaskData

    torch.manual_seed(0)
    torch.set_num_threads(1)
    enc = build_encoder("tiny").eval()
    rng = np.random.default_rng(0)
    y = np.tile(np.arange(4), 12)
    x = (rng.normal(size=(48, 2500)) + y[:, None] * np.sin(np.arange(2500) / 40)[None]).astype(np.float32)
    task = TaskData("mitdb", "multiclass", ["N", "S", "V", "F"], x, y, np.repeat(np.arange(8), 6).astype(str), "II")
    settings = EvalSettings(folds=4)
    ref = evaluate_task(enc, task, settings).metrics
    mine = probe_metrics(embed(enc, x), task, settings)
    assert per_label("multiclass", mine) == (ref["macro_auroc"], ref["auroc"])


def test_edge_auroc_embeds_through_the_device_runtime(tiny_export, tmp_path):
    """edge_auroc's int8 embeddings come from benchmarks/edge_latency.py in each runtime's venv: one
    row per window, equal to the device runtime's own EdgeModel output there."""
    out, report = tiny_export
    model = out / "model_int8.tflite"
    if not model.exists():
        pytest.skip(f"no passing int8 tflite in the shared export ({EXPORT_VENV_CMD})")
    sys.path.insert(0, str(REPO / "benchmarks"))
    from edge_auroc import RUNTIME_PY, int8_embeddings

    rng = np.random.default_rng(0)
    windows = rng.normal(size=(3, load_spec(out / "preprocess.json").window_samples)).astype(np.float32)
    for runtime, py in RUNTIME_PY.items():
        if not py.exists():
            continue
        emb = int8_embeddings(model, windows, runtime, tmp_path / runtime)
        code = ("import sys, numpy as np; sys.path.insert(0, sys.argv[1]); from edge.runtime.model import EdgeModel; "
                "m = EdgeModel(sys.argv[2], runtime=sys.argv[3], num_threads=1); "
                "np.save(sys.argv[5], np.stack([m.embed(x) for x in np.load(sys.argv[4])]))")
        np.save(tmp_path / "w.npy", windows)
        subprocess.run([str(py), "-c", code, str(REPO), str(model), runtime, str(tmp_path / "w.npy"),
                        str(tmp_path / "ref.npy")], check=True, capture_output=True)
        assert emb.shape[0] == 3 and np.array_equal(emb, np.load(tmp_path / "ref.npy"))


def test_calibration_from_several_folders(shared_data):
    """--calibration DATA,DATA: the reference set plus a deployment's own records, named by folder."""
    from edge.export.calibration import real_windows
    from edge.export.preprocess_json import build_preprocess_json
    from edge.runtime import spec_from_dict

    spec = spec_from_dict(build_preprocess_json({}))
    sets = real_windows([shared_data / "ecg", shared_data / "wfdb"], spec, windows_per_record=1, cuts=0)
    names = sets.calibration_records + sets.heldout_records
    assert "wfdb/s0010_re" in names and sum(n.startswith("ecg/") for n in names) == 25
    assert not set(sets.calibration_records) & set(sets.heldout_records)
