"""Federation overhead and traffic (issue 5; measured honestly since issue 14).

Overhead: R rounds of K simulated sites (each S local steps of batch B) in Flower's simulation
engine, against the same R*K*S steps of batch B trained centrally over the union of the same
records. Both sides get the same compute: one torch thread, one site at a time
(``federation.client_cpus`` = all cores, so Ray runs one ClientApp at once), and each runs in
processes of its own (the central run is a fresh ``python`` of this file, so both pay their
interpreter and torch import). Site stores are built once, before any clock starts; every
repeat starts from an empty run (no checkpoint to resume). The repeats interleave the two
(central, federated, federated, central, ...), so a change in the shared machine's load hits
both alike; the central process runs in a session of its own, as the engine's training does
(SuperExec's), because Linux's scheduler autogroups share the CPU between sessions. Measured per
repeat:

* wall seconds, and CPU seconds of every process involved: the federated side's are this
  process's own (``RUSAGE_SELF``) plus the CPU counter of each process below it -- the guard,
  SuperLink, SuperExec, the simulation process, Ray's daemons and workers, ``flwr run`` --
  read from /proc every 0.25 s until the process is gone (:class:`CpuSampler`; a process's
  last 0.25 s is missed, so this is a lower bound). ``RUSAGE_CHILDREN`` is not used there: it
  counts a process only if every parent above it waited for it, and in one repeat it reported
  17.6 s where the repeat before had 40.1 s. The central side is one process, reaped by this
  one: its ``RUSAGE_CHILDREN``;
* with start-up: the whole ``simulate`` call against the whole central process;
* without start-up: rounds 2..R, from the end of round 1 to the end of round R (metrics.jsonl
  ``time``: round-1 checkpoint write and every gap between rounds included) against (R-1)/R of
  the central training loop (its own ``RUSAGE_SELF``).

Reported: each repeat's figures and the median ratios federated / central (target <= 1.2 without
start-up).

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
                                          [--patients 200] [--repeats 3] [--out DIR] [--keep]
    python benchmarks/bench_federation.py --quality [--patients 300] [--epochs 4] [--batch 32]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

from clef_core.config import load_config
from clef_core.data.augment import ViewConfig
from clef_core.encoders.config import make_config
from clef_core.pipeline import prepare_site
from clef_core.task import build_model, make_dataset
from clef_core.train.config import LossConfig, TrainConfig
from clef_core.train.trainer import Trainer, seed_everything
from simulations.guard import descendants
from simulations.run import simulate
from simulations.sites import prepare_federation

TARGET = 1.2
SCALES = ("small", "medium", "large")


def experiment(args: argparse.Namespace) -> dict:
    """One site at a time (a ClientApp asks for every core), one torch thread each (the client's
    simulation default): the same compute as the single-threaded central run."""
    return load_config("simulate-small", [
        f"synth.patients={args.patients}", f"federation.sites={args.sites}", f"federation.rounds={args.rounds}",
        f"federation.local_steps={args.steps}", f"train.batch_size={args.batch or 16}", "federation.eval_every=0",
        f"federation.min_available_nodes={args.sites}", f"federation.min_train_nodes={args.sites}",
        f"federation.client_cpus={os.cpu_count() or 1}",
        "federation.keep_checkpoints=0", "federation.lr_schedule=\"constant\""])


def cpu_seconds(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def descendants_cpu() -> dict[tuple[int, int], float]:
    """(pid, start tick) -> own CPU seconds (utime + stime, /proc) of every live descendant of
    this process; the start tick keeps a reused pid apart."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for pid in descendants(os.getpid()):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        out[(pid, int(fields[19]))] = (int(fields[11]) + int(fields[12])) / tick  # stat fields 22, 14, 15
    return out


def reset_run(out: Path) -> None:
    """Forget the previous repeat's rounds (keep the split and the sites' prepared stores)."""
    for name in ("checkpoints", ".flwr"):
        shutil.rmtree(out / name, ignore_errors=True)
    for name in ("metrics.jsonl", "status.json", "final_model.pt", "summary.png", "experiment.toml"):
        (out / name).unlink(missing_ok=True)


class CpuSampler:
    """The CPU time of every process below this one, sampled every ``period`` seconds in a thread.

    Each process's own CPU counter (it starts at 0) is read until the process is gone, so the
    sum of the last readings is the CPU all of them used, whoever reaps them; what a process
    does in its last ``period`` is missed. ``between(t0, t1)``: the CPU spent from t0
    to t1, each process's counter interpolated between its readings."""

    def __init__(self, period: float = 0.25) -> None:
        self.period = period
        self.series: dict[tuple[int, int], list[tuple[float, float]]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        now = time.time()
        for key, cpu in descendants_cpu().items():
            self.series.setdefault(key, []).append((now, cpu))

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            self._sample()

    def __enter__(self) -> CpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def total(self) -> float:
        return sum(points[-1][1] for points in self.series.values())

    def between(self, t0: float, t1: float) -> float:
        spent = 0.0
        for points in self.series.values():
            times, cpus = [t for t, _ in points], [c for _, c in points]
            at = np.interp([t0, t1], [times[0] - self.period, *times], [0.0, *cpus])  # 0 before it appeared
            spent += float(at[1] - at[0])
        return spent


def federated_repeat(cfg: dict, out: Path, rounds: int) -> dict:
    """One whole simulate call; the CPU of rounds 2..R is read between the end of round 1 and of
    round R (metrics.jsonl ``time``)."""
    reset_run(out)
    cpu0, wall0 = cpu_seconds(resource.RUSAGE_SELF), time.perf_counter()
    with CpuSampler() as sampler:
        result = simulate(cfg, out)
    wall = time.perf_counter() - wall0
    cpu = cpu_seconds(resource.RUSAGE_SELF) - cpu0 + sampler.total()
    rows = result.rounds
    if len(rows) != rounds:
        raise RuntimeError(f"{out}: {len(rows)} rounds in metrics.jsonl, expected {rounds}")
    return {"wall": wall, "cpu": cpu, "examples": int(sum(r["train"].get("examples", 0) for r in rows)),
            "steady_wall": rows[-1]["time"] - rows[0]["time"],
            "steady_cpu": sampler.between(rows[0]["time"], rows[-1]["time"]), "loss": rows[-1]["train_loss"],
            "rows": rows}


def central_repeat(args: argparse.Namespace, out: Path) -> dict:
    """This file with ``--central OUT`` in a fresh process: the same steps, one torch thread."""
    cmd = [sys.executable, __file__, "--central", str(out), "--sites", str(args.sites), "--rounds", str(args.rounds),
           "--steps", str(args.steps), "--batch", str(args.batch or 16), "--patients", str(args.patients)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    cpu0, wall0 = cpu_seconds(resource.RUSAGE_CHILDREN), time.perf_counter()
    # a session of its own: with the scheduler's autogroups (Linux default) CPU is shared between
    # sessions, and the engine's training runs in a session of its own too (SuperExec's)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True, start_new_session=True)
    inner = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"wall": time.perf_counter() - wall0, "cpu": cpu_seconds(resource.RUSAGE_CHILDREN) - cpu0, **inner}


def central_child(args: argparse.Namespace) -> None:
    """The central side's process: train R*K*S steps over the sites' records, print JSON."""
    cfg = experiment(args)
    fed = prepare_federation(cfg, args.central)
    cpu0 = cpu_seconds(resource.RUSAGE_SELF)
    loop, loss, _, examples = central_training(cfg, fed.sites, 1, steps=args.rounds * args.sites * args.steps)
    print(json.dumps({"loop_wall": loop, "loop_cpu": cpu_seconds(resource.RUSAGE_SELF) - cpu0, "loss": loss,
                      "examples": examples}))


def central_training(cfg: dict, sites: list, threads: int, *, steps: int = 0,
                     epochs: int = 0) -> tuple[float, float, torch.nn.Module, int]:
    """Train one encoder over the union of the sites' patients for ``steps`` steps (or
    ``epochs`` epochs); returns wall seconds, the last loss, the encoder and the examples seen."""
    torch.set_num_threads(threads)
    train_cfg = TrainConfig(**cfg["train"])
    datasets = [make_dataset(ViewConfig(**cfg["views"]), prepare_site(s.data_dir, s.work_dir, cfg), train_cfg.seed) for s in sites]
    union = torch.utils.data.ConcatDataset(datasets)
    seed_everything(train_cfg.seed)
    trainer = Trainer(build_model(make_config(**cfg["model"])), LossConfig(**cfg["loss"]), train_cfg)
    start, done, epoch, loss, examples = time.perf_counter(), 0, 0, math.nan, 0
    while (steps and done < steps) or (epochs and epoch < epochs):
        for d in datasets:
            d.set_epoch(epoch)
        loader = torch.utils.data.DataLoader(union, batch_size=train_cfg.batch_size, shuffle=True,
                                             generator=torch.Generator().manual_seed(epoch))
        stats = trainer.train_epoch(loader, lr=train_cfg.lr, max_steps=(steps - done) if steps else None)
        done, epoch, loss, examples = done + stats.steps, epoch + 1, stats.loss, examples + stats.examples
    return time.perf_counter() - start, loss, trainer.model, examples


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
    parser.add_argument("--patients", type=int, default=None,
                        help="default 200 (overhead: every site has >= steps x batch patients, so all batches are "
                             "full on both sides), 300 (--quality)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved central/federated pairs")
    parser.add_argument("--out", type=Path, default=None, help="run folder (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary run folder")
    parser.add_argument("--quality", action="store_true", help="run the (slow) quality comparison instead")
    parser.add_argument("--epochs", type=int, default=4, help="--quality: total epochs (= federated rounds)")
    parser.add_argument("--central", type=Path, help=argparse.SUPPRESS)  # the central side's own process
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if args.quality:
        args.patients = args.patients or 300
        quality(args)
        return
    args.patients = args.patients or 200
    if args.central is not None:
        central_child(args)
        return
    out = args.out or Path(tempfile.mkdtemp(prefix="bench-federation-"))
    try:
        overhead(args, out)
    finally:
        if args.out is None and not args.keep:
            shutil.rmtree(out, ignore_errors=True)


def overhead(args: argparse.Namespace, out: Path) -> None:
    cfg = experiment(args)
    t0 = time.perf_counter()  # data preparation is not what is measured: build every site's store first
    fed = prepare_federation(cfg, out)
    for site in fed.sites:
        prepare_site(site.data_dir, site.work_dir, cfg)
    prep = time.perf_counter() - t0
    total_steps = args.rounds * args.sites * args.steps
    print(f"\n== federation overhead: {args.sites} sites x {args.rounds} rounds x {args.steps} steps (batch "
          f"{args.batch or 16}, {args.patients} patients) against the same {total_steps} steps centrally; one torch "
          f"thread and one site at a time on both sides; {os.cpu_count()} cores shared with other work "
          f"(load average {os.getloadavg()[0]:.1f} at the start)")
    print(f"site store preparation (before any clock): {prep:.1f} s; {args.repeats} interleaved repeats", flush=True)
    header = (f"{'repeat':<7} {'side':<10} {'examples':>8} {'wall s':>7} {'CPU s':>7} {'wall s, no start-up':>20} "
              f"{'CPU s, no start-up':>19}")
    print(header)
    print("-" * len(header))
    ratios: dict[str, list[float]] = {k: [] for k in ("wall", "cpu", "steady_wall", "steady_cpu")}
    steady = (args.rounds - 1) / args.rounds
    rows = []
    for i in range(args.repeats):
        order = ("central", "federated") if i % 2 == 0 else ("federated", "central")
        got = {}
        for side in order:
            if side == "central":
                c = central_repeat(args, out)
                got[side] = {**c, "steady_wall": c["loop_wall"] * steady, "steady_cpu": c["loop_cpu"] * steady}
            else:
                got[side] = federated_repeat(cfg, out, args.rounds)
                rows = got[side]["rows"]
            g = got[side]
            print(f"{i + 1:<7} {side:<10} {g['examples']:>8} {g['wall']:>7.1f} {g['cpu']:>7.1f} "
                  f"{g['steady_wall']:>20.1f} "
                  f"{g['steady_cpu']:>19.1f}", flush=True)
        for key in ratios:
            ratios[key].append(got["federated"][key] / got["central"][key])
    med = {k: statistics.median(v) for k, v in ratios.items()}
    spread = {k: f"{min(v):.2f}-{max(v):.2f}" for k, v in ratios.items()}
    print(f"\nratio federated / central, median of {args.repeats} (range):")
    print(f"  with start-up:    wall {med['wall']:.2f}x ({spread['wall']}), CPU {med['cpu']:.2f}x ({spread['cpu']})")
    print(f"  without start-up: wall {med['steady_wall']:.2f}x ({spread['steady_wall']}), "
          f"CPU {med['steady_cpu']:.2f}x ({spread['steady_cpu']})  "
          f"({'meets' if med['steady_wall'] <= TARGET else 'misses'} the {TARGET}x target)")
    traffic(args, cfg, out, rows)


def traffic(args: argparse.Namespace, cfg: dict, out: Path, rows: list[dict]) -> None:
    counts = parameter_counts()
    # one round's update: the global weights of round R-1 -> round R (a site's reply is as far off)
    first = torch.load(out / "checkpoints" / f"round_{args.rounds - 1:05d}.pt", weights_only=True)["arrays"]
    last = torch.load(out / "checkpoints" / f"round_{args.rounds:05d}.pt", weights_only=True)["arrays"]
    errors = quantisation_errors({k: v.numpy() for k, v in first.items()}, {k: v.numpy() for k, v in last.items()})
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
        _, _, central, _ = central_training(base, union, os.cpu_count() or 1, epochs=args.epochs)
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
