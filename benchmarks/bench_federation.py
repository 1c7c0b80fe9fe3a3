"""Federation overhead and traffic (issue 5).

Overhead: R rounds of K simulated sites (each S local steps of batch B, in Flower's simulation
engine, ``federation.client_cpus`` CPUs per site) against the same R*K*S steps of batch B trained
centrally over the union of the same records in this process, with as many torch threads as the
simulation runs sites at once. Site stores are built before either clock starts. Reported:
start-up (launch to the end of round 1, minus one steady round: SuperLink, Ray, actors, imports)
and the steady-state ratio  sum(seconds of rounds 2..R) * R / (R - 1) / central seconds
(target <= 1.2).

Traffic: per site and round the global weights go out and the site's weights come back:
parameters x 4 bytes each way in float32 (measured on the wire in the run: ``bytes_sent`` /
``bytes_received`` of metrics.jsonl, which include the tensor names). Lower precision: float16
halves it, int8 (per-tensor symmetric, of the update w_site - w_global) quarters it; the error
each adds is measured on a real round's update.

Quality (``--quality``, slow): centralised pretraining against federated FedAvg on an IID and a
non-IID (by ECG cart) split of the same synthetic patients, at equal total epochs (E central
epochs = E rounds of one local epoch), scored by the server's linear probe (held-out patients,
synthetic downstream labels), overall and per site (probe on each site's own patients), plus
leave-one-site-out: FedAvg without the last site, probed on that site's patients.

    python benchmarks/bench_federation.py [--sites 3] [--rounds 4] [--steps 3] [--batch 16]
                                          [--patients 150] [--out DIR] [--keep]
    python benchmarks/bench_federation.py --quality [--patients 300] [--epochs 4] [--batch 32]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from clef_core.config import load_config
from clef_core.pipeline import prepare_site
from clef_core.train.config import LossConfig, TrainConfig
from clef_core.train.loop import build_model, make_dataset
from clef_core.train.trainer import Trainer, seed_everything
from simulations.run import simulate
from simulations.sites import prepare_federation

TARGET = 1.2
SCALES = ("small", "medium", "large")


def experiment(args: argparse.Namespace) -> dict:
    return load_config("simulate-small", [
        f"synth.patients={args.patients}", f"federation.sites={args.sites}", f"federation.rounds={args.rounds}",
        f"federation.local_steps={args.steps}", f"train.batch_size={args.batch or 16}", "federation.eval_every=0",
        f"federation.min_available_nodes={args.sites}", f"federation.min_train_nodes={args.sites}",
        "federation.keep_checkpoints=0", "federation.lr_schedule=\"constant\""])


def central_training(cfg: dict, sites: list, threads: int, *, steps: int = 0,
                     epochs: int = 0) -> tuple[float, float, torch.nn.Module]:
    """Train one encoder over the union of the sites' patients for ``steps`` steps (or
    ``epochs`` epochs); returns wall seconds, the last loss and the encoder."""
    torch.set_num_threads(threads)
    train_cfg = TrainConfig(**cfg["train"])
    datasets = [make_dataset(cfg, prepare_site(s.data_dir, s.work_dir, cfg), train_cfg.seed) for s in sites]
    union = torch.utils.data.ConcatDataset(datasets)
    seed_everything(train_cfg.seed)
    trainer = Trainer(build_model(cfg), LossConfig(**cfg["loss"]), train_cfg)
    start, done, epoch, loss = time.perf_counter(), 0, 0, math.nan
    while (steps and done < steps) or (epochs and epoch < epochs):
        for d in datasets:
            d.set_epoch(epoch)
        loader = torch.utils.data.DataLoader(union, batch_size=train_cfg.batch_size, shuffle=True,
                                             generator=torch.Generator().manual_seed(epoch))
        stats = trainer.train_epoch(loader, lr=train_cfg.lr, max_steps=(steps - done) if steps else None)
        done, epoch, loss = done + stats.steps, epoch + 1, stats.loss
    return time.perf_counter() - start, loss, trainer.model


def parameter_counts() -> dict[str, int]:
    from clef_core.encoders import build_encoder

    counts = {}
    for scale in SCALES:
        with torch.device("meta"):
            counts[scale] = sum(p.numel() for p in build_encoder(scale=scale).parameters())
    return counts


def quantisation_errors(before: dict[str, np.ndarray], after: dict[str, np.ndarray]) -> dict[str, float]:
    """Relative L2 error of the new weights when sent as float16 weights, float16 update, int8 update."""
    keys = [k for k in before if np.issubdtype(before[k].dtype, np.floating)]
    w = np.concatenate([after[k].ravel() for k in keys]).astype(np.float64)
    d = w - np.concatenate([before[k].ravel() for k in keys]).astype(np.float64)
    norm_d = np.linalg.norm(d)
    fp16_w = np.concatenate([after[k].astype(np.float16).astype(np.float64).ravel() for k in keys])
    fp16_d = d.astype(np.float16).astype(np.float64)
    int8 = []
    for k in keys:
        dk = (after[k].astype(np.float64) - before[k].astype(np.float64)).ravel()
        scale = np.abs(dk).max() / 127 if dk.size and np.abs(dk).max() > 0 else 1.0
        int8.append(np.round(dk / scale) * scale)
    int8_d = np.concatenate(int8)
    return {
        "update_norm_over_weight_norm": float(norm_d / np.linalg.norm(w)),
        "fp16_weights_error_over_update": float(np.linalg.norm(fp16_w - w) / norm_d),
        "fp16_update_error_over_update": float(np.linalg.norm(fp16_d - d) / norm_d),
        "int8_update_error_over_update": float(np.linalg.norm(int8_d - d) / norm_d),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sites", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=4, help=">= 2")
    parser.add_argument("--steps", type=int, default=3, help="local steps per site and round")
    parser.add_argument("--batch", type=int, default=None, help="default 16 (overhead), 32 (--quality)")
    parser.add_argument("--patients", type=int, default=None, help="default 150 (overhead), 300 (--quality)")
    parser.add_argument("--out", type=Path, default=None, help="run folder (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary run folder")
    parser.add_argument("--quality", action="store_true", help="run the (slow) quality comparison instead")
    parser.add_argument("--epochs", type=int, default=4, help="--quality: total epochs (= federated rounds)")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if args.quality:
        args.patients = args.patients or 300
        quality(args)
        return
    args.patients = args.patients or 150
    out = args.out or Path(tempfile.mkdtemp(prefix="bench-federation-"))
    cfg = experiment(args)
    try:
        # data preparation is not what is measured: build every site's store first
        t0 = time.perf_counter()
        fed = prepare_federation(cfg, out)
        for site in fed.sites:
            prepare_site(site.data_dir, site.work_dir, cfg)
        prep = time.perf_counter() - t0

        result = simulate(cfg, out)
        rows = result.rounds
        steady = [r["seconds"] for r in rows[1:]]
        steady_round = float(np.mean(steady)) if steady else math.nan
        fed_rounds = sum(steady) * args.rounds / max(len(steady), 1)
        startup = result.seconds - sum(r["seconds"] for r in rows) + (rows[0]["seconds"] - steady_round)

        cores = os.cpu_count() or 1
        parallel = max(1, min(args.sites, int(cores // float(cfg["federation"]["client_cpus"]))))
        total_steps = args.rounds * args.sites * args.steps
        central, central_loss, _ = central_training(cfg, fed.sites, parallel, steps=total_steps)
        ratio = fed_rounds / central

        counts = parameter_counts()
        # one round's update: the global weights of round R-1 -> round R (a site's reply is as far off)
        first = torch.load(out / "checkpoints" / f"round_{args.rounds - 1:05d}.pt", weights_only=True)["arrays"]
        last = torch.load(out / "checkpoints" / f"round_{args.rounds:05d}.pt", weights_only=True)["arrays"]
        errors = quantisation_errors({k: v.numpy() for k, v in first.items()}, {k: v.numpy() for k, v in last.items()})

        print(f"\n== federation overhead: {args.sites} sites x {args.rounds} rounds x {args.steps} steps "
              f"(batch {args.batch or 16}, {args.patients} patients, {cores} cores, {parallel} sites at once)")
        print(f"site store preparation (not timed below): {prep:.1f} s")
        print(f"start-up (SuperLink, Ray, actors, imports): {startup:.1f} s; round 1: {rows[0]['seconds']:.1f} s")
        print(f"steady round: {steady_round:.2f} s; {args.rounds} rounds at that pace: {fed_rounds:.1f} s "
              f"(last train loss {rows[-1]['train_loss']:.4f})")
        print(f"central, same {total_steps} steps over the same records, {parallel} torch threads: "
              f"{central:.1f} s (last loss {central_loss:.4f})")
        print(f"ratio federated / central after start-up: {ratio:.2f}x "
              f"({'meets' if ratio <= TARGET else 'misses'} the {TARGET}x target)")

        measured = rows[-1]["bytes_sent"] / rows[-1]["sampled"]
        print("\n== traffic per site per round (each way)")
        print(f"{'scale':<7} {'params':>12} {'float32':>10} {'float16':>10} {'int8 update':>12}")
        for scale, n in counts.items():
            print(f"{scale:<7} {n:>12,} {n * 4 / 1e6:>8.1f}MB {n * 2 / 1e6:>8.1f}MB {n / 1e6:>10.1f}MB")
        print(f"measured on the wire ({cfg['model']['scale']}): {measured / 1e6:.2f} MB out, "
              f"{rows[-1]['bytes_received'] / rows[-1]['accepted'] / 1e6:.2f} MB back per site and round")
        print(f"K sites x R rounds x 2 ways, small: {2 * args.sites * args.rounds * measured / 1e6:.1f} MB this run")
        print(f"error added by lower precision, relative to one round's update (round {args.rounds - 1} -> "
              f"{args.rounds}): " + json.dumps({k: round(v, 6) for k, v in errors.items()}))
        print("  (float16 weights round each weight to ~5e-4 of its size: harmless while an update is large "
              "next to that, lossy once updates shrink; float16/int8 updates scale with the update itself)")
    finally:
        if args.out is None and not args.keep:
            shutil.rmtree(out, ignore_errors=True)


def probe_site(encoder: torch.nn.Module, site_dir: Path, work: Path, cfg: dict) -> float:
    from server.probe import ProbeSet, linear_probe

    probe = ProbeSet.from_site(prepare_site(site_dir, work, cfg))
    return linear_probe(encoder, probe).get("probe_auroc", math.nan) if probe is not None else math.nan


def quality(args: argparse.Namespace) -> None:
    from clef_core.checkpoint import load_model
    from clef_core.pipeline import default_cohort
    from clef_core.federation.sites import SiteSpec
    from simulations.partition import Split, SplitSpec, split_cohort

    root = args.out or Path(tempfile.mkdtemp(prefix="bench-federation-quality-"))
    base = load_config("simulate-small", [
        f"synth.patients={args.patients}", f"synth.sites={args.sites}", f"federation.sites={args.sites}",
        f"federation.rounds={args.epochs}", "federation.local_epochs=1", "federation.local_steps=0",
        f"train.batch_size={args.batch or 32}", "federation.eval_every=0", "federation.holdout=0.25",
        f"federation.min_available_nodes={args.sites - 1}", f"federation.min_train_nodes={args.sites - 1}",
        "federation.lr_schedule=\"constant\""])
    results: dict[str, dict[str, float]] = {}
    try:
        cohort = default_cohort(root, base)
        splits = {kind: split_cohort(cohort, root / f"split-{kind}", SplitSpec(kind=kind, sites=args.sites, holdout=0.25))
                  for kind in ("iid", "cart")}
        holdout = splits["iid"].holdout.dir  # the same held-out patients in both splits (same seed)

        def score(name: str, encoder: torch.nn.Module, split: Split) -> None:
            row = {"overall": probe_site(encoder, holdout, root / "work" / "holdout", base)}
            for site in split.sites:
                row[site.site_id] = probe_site(encoder, site.dir, root / "work" / f"{split.root.name}-{site.site_id}", base)
            results[name] = row
            print(f"{name:<22} " + "  ".join(f"{k} {v:.3f}" for k, v in row.items()), flush=True)

        def federated(name: str, split: Split, sites: list) -> None:
            cfg = json.loads(json.dumps(base))
            cfg["federation"]["eval_dir"] = str(holdout)
            result = simulate(cfg, root / name, site_dirs=[s.dir for s in sites])
            score(name, load_model(result.final_model).encoder, split)

        print(f"\n== quality: {args.patients} synthetic patients, {args.sites} sites, {args.epochs} epochs "
              "(central epochs = federated rounds x 1 local epoch); linear-probe AUROC, mean over labels", flush=True)
        iid, cart = splits["iid"], splits["cart"]
        union = [SiteSpec(s.site_id, s.dir, root / "work" / f"central-{s.site_id}") for s in iid.sites]
        _, _, central = central_training(base, union, os.cpu_count() or 1, epochs=args.epochs)
        score("central", central, iid)
        federated("fedavg-iid", iid, iid.sites)
        federated("fedavg-cart", cart, cart.sites)
        left = iid.sites[-1]
        federated("fedavg-iid-loso", iid, iid.sites[:-1])
        ref = results["central"]["overall"]
        print("\ngap to central, overall AUROC: " + ", ".join(
            f"{name} {row['overall'] - ref:+.3f}" for name, row in results.items() if name != "central"))
        print(f"leave-one-site-out: {left.site_id} scores {results['fedavg-iid-loso'][left.site_id]:.3f} when left out "
              f"of pretraining, {results['fedavg-iid'][left.site_id]:.3f} when in it")
    finally:
        if args.out is None and not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
