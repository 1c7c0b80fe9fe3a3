"""Patient-level DP-SGD: step cost against the ordinary step, and what privacy costs in accuracy.

Step cost (always): the small encoder (GroupNorm, as DP requires), the same random batches of
N patients (2N views of (1, T)) through
  plain   Trainer step: forward 2N views -> in-batch CLEF loss -> backward -> clip -> AdamW
  dp      PatientDPSGD step: embed the public bank (no grad) -> per-patient gradients of the
          decoupled loss (torch.func vmap) -> clip per patient -> noise -> AdamW
interleaved step by step so both see the same machine load; the ratio is median(dp) / median(plain)
in wall and process CPU time (target <= 1.5). ``--refresh k`` also times re-embedding the bank
every k steps.

Probe (``--probe``): the synthetic cohort (``--patients``) split into pretraining patients and a
held-out probe set; the encoder left at its random initialisation (the untrained baseline every
row is read against), pretrained for ``--epochs`` passes without DP, with the DP
objective and (almost) no noise -- the zero-noise control: each patient against the public bank,
clipped, Poisson-sampled, sigma 1e-6 -- and with DP at epsilon = 1, 3, 8 (delta 1e-5; the noise
multiplier is solved for by bisection on the RDP accountant given q and the steps), for each of
``--seeds``; then a linear probe (server.probe: grouped 5-fold logistic regression, mean AUROC
over the synthetic labels) scores each on the held-out patients. "no DP" vs the control is what
the DP objective costs; the control vs each epsilon is what the noise costs; every row vs
"untrained" (paired by seed: same initial weights) is what pretraining gives at all. ``--runs``
picks the rows (default all).

    python benchmarks/bench_privacy.py [--batch 32] [--bank 64] [--steps 6] [--refresh 4] [--chunk 16] [--threads 1]
    python benchmarks/bench_privacy.py --probe --no-cost --patients 600 --epochs 3 --batch 32 --bank 64 --seeds 0 1
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from clef_core.data.augment import ViewConfig  # noqa: E402
from clef_core.data.noise import NoiseBank  # noqa: E402
from clef_core.data.preprocess import PreprocessConfig  # noqa: E402
from clef_core.encoders import build_encoder  # noqa: E402
from clef_core.privacy.accounting import epsilon, noise_for_epsilon, steps_per_epoch  # noqa: E402
from clef_core.privacy.bank import synthetic_bank  # noqa: E402
from clef_core.privacy.dpsgd import PatientDPSGD  # noqa: E402
from clef_core.train import LossConfig, TrainConfig, Trainer  # noqa: E402

T = 5000
DELTA = 1e-5


def batches(k: int, n: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(k):
        base = torch.randn(n, 1, T, generator=g)
        risk = torch.rand(n, generator=g) * 0.3
        risk[::3] = math.nan
        out.append({"view1": base + 0.1 * torch.randn(n, 1, T, generator=g),
                    "view2": base + 0.1 * torch.randn(n, 1, T, generator=g),
                    "risk": risk, "completeness": torch.where(torch.isnan(risk), 0.4, 1.0)})
    return out


def timed(fn) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def step_cost(args: argparse.Namespace) -> None:
    bank = synthetic_bank(args.bank, 0, PreprocessConfig(), ViewConfig(), NoiseBank(500, ""))
    data = batches(args.steps + 1, args.batch)
    cfg = TrainConfig(lr=1e-4, device="cpu")
    torch.manual_seed(0)
    plain = Trainer(build_encoder("small", "group"), LossConfig(), cfg)
    torch.manual_seed(0)
    private = Trainer(build_encoder("small", "group"), LossConfig(), cfg)
    variants = {"dp": PatientDPSGD(private, bank, noise_multiplier=1.0, clip_norm=1.0, bank_refresh=1,
                                  vmap_chunk=args.chunk)}
    if args.refresh > 1:
        variants[f"dp refresh {args.refresh}"] = PatientDPSGD(private, bank, noise_multiplier=1.0, clip_norm=1.0,
                                                              bank_refresh=args.refresh, vmap_chunk=args.chunk)
    times: dict[str, list[tuple[float, float]]] = {"plain": [], **{k: [] for k in variants}}
    for i, batch in enumerate(data):
        b = batch
        t_plain = timed(lambda: plain.train_epoch([b]))
        t_dp = {k: timed(lambda dp=dp: dp.step(b, args.batch)) for k, dp in variants.items()}
        if i == 0:
            continue  # warm-up (allocations, vmap tracing)
        times["plain"].append(t_plain)
        for k, t in t_dp.items():
            times[k].append(t)
    base_wall = statistics.median(t[0] for t in times["plain"])
    base_cpu = statistics.median(t[1] for t in times["plain"])
    print(f"small encoder (GroupNorm), batch {args.batch} patients (2 views, T={T}), bank {args.bank}, "
          f"{args.steps} timed steps, {torch.get_num_threads()} thread(s)")
    print(f"{'step':<16}{'wall s':>9}{'cpu s':>9}{'x plain (wall)':>16}{'x plain (cpu)':>15}")
    for name, ts in times.items():
        wall, cpu = statistics.median(t[0] for t in ts), statistics.median(t[1] for t in ts)
        print(f"{name:<16}{wall:9.3f}{cpu:9.3f}{wall / base_wall:16.2f}{cpu / base_cpu:15.2f}")


CONTROL_SIGMA = 1e-6
UNTRAINED = "untrained"
RUNS = ("untrained", "nodp", "control", "eps")


def probe(args: argparse.Namespace) -> None:
    from clef_core.config import load_config
    from clef_core.pipeline import default_cohort, prepare_site
    from clef_core.task import make_dataset, make_loader
    from server.probe import ProbeSet, linear_probe

    work = Path(args.work or tempfile.mkdtemp(prefix="bench-privacy-"))
    cfg = load_config(None, [f"synth.patients={args.patients}", "synth.sites=1", "model.norm=\"group\""])
    started = time.perf_counter()
    site = prepare_site(default_cohort(work, cfg), work, cfg)
    full = ProbeSet.from_site(site)
    dataset = make_dataset(ViewConfig(**cfg["views"]), site, seed=0)
    rng = np.random.default_rng(0)
    subjects = np.asarray(dataset.subject_ids)
    held = set(rng.choice(subjects, size=len(subjects) // 4, replace=False))
    train_idx = [i for i, s in enumerate(subjects) if s not in held]
    keep = np.isin(full.groups, list(held))
    probe_set = ProbeSet(full.x[keep], full.y[keep], full.groups[keep], full.labels)
    train = torch.utils.data.Subset(dataset, train_idx)
    q = min(1.0, args.batch / len(train))
    steps = args.epochs * steps_per_epoch(q)
    print(f"cohort: {len(subjects)} patients ({time.perf_counter() - started:.0f} s to build); pretraining on "
          f"{len(train)}, probing {int(keep.sum())} held-out records; {args.epochs} epochs = {steps} steps at "
          f"q = {q:.3f}, delta = {DELTA:g}, clip 1.0, lr {args.lr}")
    bank = synthetic_bank(args.bank, 0, PreprocessConfig.from_dict(dict(site.store.preprocess)),
                          ViewConfig(**cfg["views"]), NoiseBank(500, cfg["views"]["noise_dir"]))
    train_cfg = TrainConfig(**{**cfg["train"], "batch_size": args.batch, "lr": args.lr, "device": "cpu"})
    rows: dict[str, list[tuple[float, float, float, float]]] = {}
    # the zero-noise control: the DP objective (each patient against the public bank, clipped per
    # patient, Poisson batches) with no meaningful noise -- it separates what the objective costs
    # from what the noise costs (PatientDPSGD refuses sigma = 0, so 1e-6: noise std 1e-6 C)
    plans = [("untrained", "untrained", UNTRAINED), ("nodp", "no DP", None), ("control", "DP objective, sigma ~ 0", CONTROL_SIGMA),
             *(("eps", f"{e:g}", e) for e in args.epsilons)]
    plans = [(name, target) for run, name, target in plans if run in args.runs]
    for seed in args.seeds:
        for name, target in plans:
            torch.manual_seed(seed)
            trainer = Trainer(build_encoder("small", "group"), LossConfig(**cfg["loss"]),
                              dataclasses.replace(train_cfg, seed=seed))
            t0 = time.perf_counter()
            if target is UNTRAINED:  # random init, the same weights the trained rows of this seed start from
                sigma, spent = math.nan, math.nan
            elif target is None:
                for e in range(args.epochs):
                    trainer.train_epoch(make_loader(train, trainer.train_cfg, e), lr=args.lr)
                sigma, spent = 0.0, math.inf
            else:
                sigma = CONTROL_SIGMA if target == CONTROL_SIGMA else noise_for_epsilon(target, q, steps, DELTA)
                dp = PatientDPSGD(trainer, bank, noise_multiplier=sigma, clip_norm=1.0, bank_refresh=args.refresh,
                                  vmap_chunk=args.chunk, seed=seed)
                dataset.set_epoch(0)
                dp.run(train, steps=steps, sample_rate=q, lr=args.lr)
                spent = epsilon([(sigma, q, steps)], DELTA)
            score = linear_probe(trainer.model.eval(), probe_set, seed=0).get("probe_auroc", math.nan)
            rows.setdefault(name, []).append((sigma, spent, score, time.perf_counter() - t0))
            print(f"  seed {seed} {name}: probe AUROC {score:.3f} ({time.perf_counter() - t0:.0f} s)", flush=True)
    base = np.array([r[2] for r in rows["untrained"]]) if "untrained" in rows else None
    print(f"{'epsilon':>24}{'sigma':>8}{'eps spent':>11}{'probe AUROC':>18}{'vs untrained':>14}{'seconds':>9}   "
          f"({len(args.seeds)} seed(s): mean +- SD; vs untrained: mean paired difference)")
    for name, runs in rows.items():
        sigma, spent = runs[0][0], runs[0][1]
        scores = np.array([r[2] for r in runs])
        sd = f" +- {scores.std(ddof=1):.3f}" if len(scores) > 1 else ""
        spent_text = "-" if math.isnan(spent) else "inf" if math.isinf(spent) else (">1e6" if spent > 1e6 else f"{spent:.2f}")
        sigma_text = "-" if not math.isfinite(sigma) else f"{sigma:.2g}"
        gain = "-" if base is None or name == "untrained" else f"{(scores - base).mean():+.3f}"
        print(f"{name:>24}{sigma_text:>8}{spent_text:>11}{scores.mean():>11.3f}{sd:<7}{gain:>14}"
              f"{np.mean([r[3] for r in runs]):9.0f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=32, help="patients per step (expected batch under DP)")
    p.add_argument("--bank", type=int, default=64, help="public negatives")
    p.add_argument("--steps", type=int, default=6, help="timed steps")
    p.add_argument("--refresh", type=int, default=4, help="also time a bank re-embedded every k steps (1: skip)")
    p.add_argument("--chunk", type=int, default=16, help="patients per vmap chunk (0: whole batch)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--probe", action="store_true", help="also run the epsilon -> linear-probe AUROC table")
    p.add_argument("--no-cost", action="store_true", help="skip the step-cost table")
    p.add_argument("--patients", type=int, default=600)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--epsilons", type=float, nargs="+", default=[1.0, 3.0, 8.0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="pretraining seeds (initial weights, batches, DP sampling and noise)")
    p.add_argument("--runs", nargs="+", choices=RUNS, default=list(RUNS),
                   help="probe rows: untrained (random init), nodp, control (DP objective, sigma ~ 0), eps (each --epsilons)")
    p.add_argument("--work", default="", help="folder for the synthetic cohort and store (default: a temp dir)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if not args.no_cost:
        step_cost(args)
    if args.probe:
        probe(args)


if __name__ == "__main__":
    main()
