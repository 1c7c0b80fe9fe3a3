"""Expected run time of a `clef study` config that cannot be run here (study-gpu): every part's cost
per step or unit measured on this machine (one torch thread) at the config's model, rate and sizes,
times the number of steps or units the config implies.

    python benchmarks/bench_study_estimate.py [--config study-gpu] [--gpu-speedup 30] [--set k=v ...]

Measured per unit (1 thread): synthesising and preparing a patient (on a 64-patient cohort),
loading one pretraining batch (two augmented views), one optimizer step of the encoder on a
batch (forward + backward + AdamW, 2 x batch windows), one fine-tune step, embedding a window,
one grid probe at each fraction's labelled size, one paired bootstrap. Counts: trained arm-seeds x
steps (min of train.max_steps and epochs x patients / batch), fine-tune units x steps, probe units
(distinct labelled sets), windows embedded, bootstraps. Printed: the CPU time of every part on one
thread, then the wall time expected with the config's parallelism: the encoder's steps divided by
--gpu-speedup (an assumption, not a measurement: one GPU against one CPU thread), batch loading
over train.num_workers processes, the stores over max(study.workers, study.threads) processes, the
probes over study.threads threads, the rest as measured.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def timed(fn, repeats: int = 1, warm_up: bool = True) -> float:
    """Seconds per call of ``fn`` (the mean of ``repeats`` calls, after one warm-up call)."""
    if warm_up:
        fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def measure(cfg: dict, work: Path) -> dict[str, float]:
    """Per-unit seconds on one thread at the config's model and rate."""
    import torch

    from clef_core.encoders import build_encoder
    from clef_core.evaluation.embed import embed
    from clef_core.evaluation.finetune import FinetuneConfig, finetune
    from clef_core.evaluation.label_efficiency import fit_logistic_grid, paired_bootstrap
    from clef_core.pipeline import default_cohort, prepare_site
    from clef_core.train.config import TrainConfig
    from clef_core.data.augment import ViewConfig
    from clef_core.task import make_dataset, make_loader

    torch.set_num_threads(1)
    small = {**cfg, "synth": {**cfg["synth"], "patients": 64}}
    t0 = time.perf_counter()
    cohort = default_cohort(work / "c", small)
    t1 = time.perf_counter()
    site = prepare_site(cohort, work / "c", small, progress=False)
    t2 = time.perf_counter()
    out = {"synth_per_patient": (t1 - t0) / 64, "store_per_patient": (t2 - t1) / 64,
           "ecgs_per_patient": site.summary()["records"] / 64}
    tc = TrainConfig(**{**cfg["train"], "num_workers": 0})
    dataset = make_dataset(ViewConfig(**cfg["views"]), site, 0)
    out["load_batch"] = timed(lambda: next(iter(make_loader(dataset, tc, 0))), 2)
    T = int(round(cfg["preprocess"]["window_s"] * cfg["preprocess"]["sample_rate"]))
    torch.manual_seed(0)
    enc = build_encoder(**cfg["model"]).train()
    opt = torch.optim.AdamW(enc.parameters(), lr=1e-3)
    x = torch.randn(2 * tc.batch_size, 1, T)

    def step() -> None:
        loss = enc(x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    out["train_step"] = timed(step, 2)
    st = cfg["study"]
    xw = np.random.default_rng(0).normal(size=(2 * st["finetune_batch"], T)).astype(np.float32)
    yw = (np.random.default_rng(1).random((len(xw), 6)) < 0.3).astype(float)
    ft = FinetuneConfig(epochs=1, lr=1e-3, batch_size=st["finetune_batch"])
    out["finetune_step"] = timed(lambda: finetune(enc, xw, yw, "binary", list("abcdef"), ft)) / 2
    out["embed_window"] = timed(lambda: embed(enc.eval(), xw)) / len(xw)
    d = int(enc.emb_dim)
    pool_rows = out["ecgs_per_patient"] * st["eval_patients"] * (1 - st["val_fraction"] - st["test_fraction"])
    rng = np.random.default_rng(2)
    for frac in st["label_fractions"]:
        n = max(int(pool_rows * frac), int(st["min_patients"] * out["ecgs_per_patient"]))
        xp, yp = rng.normal(size=(n, d)), (rng.random((n, 6)) < 0.3).astype(float)
        out[f"probe_{frac:g}"] = timed(lambda: fit_logistic_grid(xp, yp, st["l2_grid"]))
    n_test = int(out["ecgs_per_patient"] * st["eval_patients"] * st["test_fraction"])
    units = len(st["seeds"]) * st["subsamples"]
    yt = (rng.random((n_test, 5)) < 0.3).astype(float)
    a = [rng.normal(size=(n_test, 5)) for _ in range(units)]
    out["bootstrap"] = timed(lambda: paired_bootstrap(a, a[::-1], yt, np.arange(n_test) // 2, n_boot=st["bootstrap"]), 1, warm_up=False)
    return out


def plan(cfg: dict, m: dict[str, float], gpu_speedup: float) -> list[tuple[str, float, float, str]]:
    """(part, one-thread CPU seconds, expected wall seconds, how) for every part of the study."""
    from clef_core.evaluation.study import COMPARISONS, SIGNAL_OFF_ARMS, UNTRAINED_ARMS
    from clef_core.evaluation.study_finetune import finetune_epochs

    st, tr = cfg["study"], cfg["train"]
    arms, seeds = st["arms"], len(st["seeds"])
    signal_off = any(a in SIGNAL_OFF_ARMS for a in arms)  # a second pretraining cohort (synth.risk_signal = 0)
    patients = cfg["synth"]["patients"] * (1 + signal_off) + st["eval_patients"]
    steps_per_arm = tr["epochs"] * math.ceil(cfg["synth"]["patients"] / tr["batch_size"])
    steps_per_arm = min(steps_per_arm, tr["max_steps"]) if tr.get("max_steps") else steps_per_arm
    trained = sum(a not in UNTRAINED_ARMS for a in arms) * seeds
    encoders = sum(a != "features" for a in arms) * seeds
    tuned = [a for a in arms if a != "features" and (not st.get("finetune_arms") or a in st["finetune_arms"])]
    arm_seeds = encoders + ("features" in arms)
    pool_rows = m["ecgs_per_patient"] * st["eval_patients"] * (1 - st["val_fraction"] - st["test_fraction"])
    ft_steps = 0
    for frac in st["finetune_fractions"]:
        rows = max(int(pool_rows * frac), int(st["min_patients"] * m["ecgs_per_patient"]))
        ft_steps += finetune_epochs(rows, st["finetune_steps"], st["finetune_batch"]) * math.ceil(rows / st["finetune_batch"])
    ft_steps *= len(tuned) * seeds * st["finetune_subsamples"]
    windows = m["ecgs_per_patient"] * st["eval_patients"] * 2 + (39_600 / st["mitdb_stride_s"] if st["mitdb"] else 0)
    probes = arm_seeds * sum(m[f"probe_{f:g}"] * (1 if f >= 1 else st["subsamples"]) for f in st["label_fractions"])
    pairs = sum(a in arms and b in arms for a, b in COMPARISONS)
    ft_pairs = sum(a in tuned and b in tuned for a, b in COMPARISONS)
    boots = pairs * len(st["label_fractions"]) + ft_pairs * len(st["finetune_fractions"])
    store_workers = max(st["workers"], st["threads"])
    loaders = max(tr.get("num_workers", 0), 1)
    rows = [
        ("synthesise cohorts", m["synth_per_patient"] * patients, m["synth_per_patient"] * patients,
         f"{patients} patients x {m['synth_per_patient']:.3f} s"),
        ("prepare stores", m["store_per_patient"] * patients, m["store_per_patient"] * patients / store_workers,
         f"{patients} patients x {m['store_per_patient']:.3f} s, {store_workers} processes"),
        ("load pretraining batches", m["load_batch"] * trained * steps_per_arm, m["load_batch"] * trained * steps_per_arm / loaders,
         f"{trained} arm-seeds x {steps_per_arm} steps x {m['load_batch']:.2f} s, {loaders} loader processes"),
        ("pretraining steps (encoder)", m["train_step"] * trained * steps_per_arm, m["train_step"] * trained * steps_per_arm / gpu_speedup,
         f"{trained} x {steps_per_arm} steps x {m['train_step']:.2f} s, / {gpu_speedup:g} (assumed GPU speedup)"),
        ("fine-tune steps (encoder)", m["finetune_step"] * ft_steps, m["finetune_step"] * ft_steps / gpu_speedup,
         f"{ft_steps} steps x {m['finetune_step']:.2f} s, / {gpu_speedup:g}"),
        ("embeddings", m["embed_window"] * windows * encoders, m["embed_window"] * windows * encoders / gpu_speedup,
         f"{encoders} encoders x {windows:.0f} windows x {1000 * m['embed_window']:.1f} ms, / {gpu_speedup:g}"),
        ("probes", probes, probes / st["threads"], f"{arm_seeds} arm-seeds x (fractions x subsamples), {st['threads']} threads"),
        ("bootstraps", m["bootstrap"] * boots, m["bootstrap"] * boots / st["workers"],
         f"{boots} x {m['bootstrap']:.1f} s ({len(st['seeds']) * st['subsamples']} units, {st['bootstrap']} resamples)"),
    ]
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="study-gpu")
    ap.add_argument("--gpu-speedup", type=float, default=30.0,
                    help="assumed speed of one GPU over one CPU thread for the encoder's steps (not measured here)")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    args = ap.parse_args(argv)
    from clef_core.config import load_config

    cfg = load_config(args.config, args.overrides)
    with tempfile.TemporaryDirectory() as tmp:
        m = measure(cfg, Path(tmp))
    rows = plan(cfg, m, args.gpu_speedup)
    print(f"clef study --config {args.config}: {cfg['model']['scale']} Net1D at {cfg['preprocess']['sample_rate']} Hz, "
          f"measured on {os.cpu_count()} shared cores (load average {os.getloadavg()[0]:.1f}), one torch thread")
    print("| part | CPU, 1 thread | expected wall | how |\n|---|---|---|---|")
    for name, cpu, wall, how in rows:
        print(f"| {name} | {cpu / 60:.1f} min | {wall / 60:.1f} min | {how} |")
    total_cpu, total_wall = sum(r[1] for r in rows), sum(r[2] for r in rows)
    print(f"| total | {total_cpu / 3600:.1f} h | {total_wall / 60:.0f} min | |")
    others = {f: sum(r[2] for r in plan(cfg, m, f)) for f in (10.0, 100.0)}
    print(f"expected wall at an assumed GPU speedup of 10x / {args.gpu_speedup:g}x / 100x over one CPU thread: "
          f"{others[10.0] / 60:.0f} / {total_wall / 60:.0f} / {others[100.0] / 60:.0f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
