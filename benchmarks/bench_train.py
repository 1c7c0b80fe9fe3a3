"""Training throughput per encoder scale on this CPU, and the training loop's overhead.

For each scale the same random batches (N patients -> 2N views of (1, T)) go through
  bare     zero_grad -> forward -> CLEF loss -> backward -> AdamW step (the irreducible work)
  trainer  Trainer.train_epoch: the same plus schedule, gradient-norm/clipping, checks, stats
interleaved step by step in one run, so both see the same machine load; the overhead is
median(trainer step) / median(bare step) - 1 (target: within 10 %), in wall and process CPU time
(CPU time is the steadier figure on a shared machine). Throughput is views/s of
the trainer. ``large`` (296M parameters) is built only with --large: it reports its parameter
count and one forward/backward at batch 2.

    python benchmarks/bench_train.py [--scales small,medium] [--batch 8] [--steps 12] [--threads 1] [--data 60] [--large]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch

from clef_core.encoders import build_encoder
from clef_core.loss import clef_loss
from clef_core.train import LossConfig, TrainConfig, Trainer

T = 5000  # 10 s at 500 Hz, the model input


def make_batches(n_batches: int, n: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_batches):
        base = torch.randn(n, 1, T, generator=g)
        risk = torch.rand(n, generator=g, dtype=torch.float64)
        risk[::3] = math.nan
        out.append({
            "view1": base + 0.1 * torch.randn(n, 1, T, generator=g),
            "view2": base + 0.1 * torch.randn(n, 1, T, generator=g),
            "risk": risk,
            "completeness": torch.rand(n, generator=g, dtype=torch.float64),
        })
    return out


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def bare_step(model: torch.nn.Module, opt: torch.optim.Optimizer, b: dict[str, torch.Tensor], cfg: LossConfig) -> None:
    opt.zero_grad(set_to_none=True)
    z = model(torch.cat([b["view1"], b["view2"]]))
    loss = clef_loss(z, b["risk"].float(), b["completeness"].float(), tau=cfg.tau, alpha=cfg.alpha,
                     use_mask=cfg.use_mask, weight_norm=cfg.weight_norm, align_weight=cfg.align_weight)
    loss.backward()
    opt.step()


def bench_scale(scale: str, batch: int, steps: int) -> dict[str, float]:
    loss_cfg, train_cfg = LossConfig(), TrainConfig(device="cpu", lr=1e-4)
    torch.manual_seed(0)
    bare_model = build_encoder(scale)
    torch.manual_seed(0)
    trainer = Trainer(build_encoder(scale), loss_cfg, train_cfg)
    bare_opt = torch.optim.AdamW(bare_model.parameters(), lr=train_cfg.lr, weight_decay=train_cfg.weight_decay)
    batches = make_batches(steps + 1, batch)

    # warm-up (allocator, kernels) on the first batch, not timed
    bare_step(bare_model, bare_opt, batches[0], loss_cfg)
    trainer.train_epoch(batches[:1])
    times: dict[str, list[tuple[float, float]]] = {"bare": [], "trainer": []}
    for i, b in enumerate(batches[1:]):
        for which in (("bare", "trainer") if i % 2 == 0 else ("trainer", "bare")):
            wall, cpu = time.perf_counter(), time.process_time()
            if which == "bare":
                bare_step(bare_model, bare_opt, b, loss_cfg)
            else:
                trainer.train_epoch([b])
            times[which].append((time.perf_counter() - wall, time.process_time() - cpu))
    med = {k: [statistics.median(t[j] for t in v) for j in (0, 1)] for k, v in times.items()}
    return {
        "params": n_params(bare_model),
        "bare_s": med["bare"][0],
        "trainer_s": med["trainer"][0],
        "views_per_s": 2 * batch / med["trainer"][0],
        "overhead_wall": med["trainer"][0] / med["bare"][0] - 1,
        "overhead_cpu": med["trainer"][1] / med["bare"][1] - 1,
    }


def fwd_bwd_once(scale: str, batch: int) -> dict[str, float]:
    torch.manual_seed(0)
    start = time.perf_counter()
    model = build_encoder(scale)
    built = time.perf_counter() - start
    b = make_batches(1, batch)[0]
    start = time.perf_counter()
    z = model(torch.cat([b["view1"], b["view2"]]))
    clef_loss(z, b["risk"].float(), b["completeness"].float()).backward()
    return {"params": n_params(model), "build_s": built, "fwd_bwd_s": time.perf_counter() - start}


def bench_data(patients: int, batch: int) -> dict[str, float]:
    """Views/s that the data path (store -> PretrainDataset views -> DataLoader, 0 workers) delivers
    on a freshly synthesised cohort: tells whether loading would starve the encoder."""
    import tempfile

    from clef_core.config import load_config
    from clef_core.pipeline import default_cohort, prepare_site
    from clef_core.data.augment import ViewConfig
    from clef_core.task import make_dataset, make_loader

    cfg = load_config(overrides=[f"synth.patients={patients}", f"train.batch_size={batch}"])
    with tempfile.TemporaryDirectory() as work:
        site = prepare_site(default_cohort(work, cfg), work, cfg, progress=False)
        dataset = make_dataset(ViewConfig(**cfg["views"]), site, seed=0)
        loader = make_loader(dataset, TrainConfig(**cfg["train"]), epoch=0)
        start = time.perf_counter()
        n = sum(2 * b["view1"].shape[0] for b in loader)
        return {"views": n, "views_per_s": n / (time.perf_counter() - start)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", default="small,medium")
    parser.add_argument("--batch", type=int, default=8, help="patients per batch for small (2x views)")
    parser.add_argument("--medium-batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=12, help="timed steps for small")
    parser.add_argument("--medium-steps", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data", type=int, default=60, metavar="PATIENTS",
                        help="also time the data path on a synthetic cohort of this many patients (0: skip)")
    parser.add_argument("--large", action="store_true", help="also build large and time one forward/backward at batch 2")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), input (2N, 1, {T})")
    print("overhead = median(loop step) / median(bare step) - 1, in wall time and in this process's CPU time")
    print(f"{'scale':8s} {'params':>11s} {'batch':>5s} {'bare s/step':>12s} {'loop s/step':>12s} {'views/s':>8s} "
          f"{'ovh wall':>9s} {'ovh cpu':>8s}")
    for scale in args.scales.split(","):
        batch = args.batch if scale == "small" else args.medium_batch
        steps = args.steps if scale == "small" else args.medium_steps
        r = bench_scale(scale, batch, steps)
        print(f"{scale:8s} {r['params']:>11,d} {batch:>5d} {r['bare_s']:>12.3f} {r['trainer_s']:>12.3f} "
              f"{r['views_per_s']:>8.1f} {100 * r['overhead_wall']:>8.1f}% {100 * r['overhead_cpu']:>7.1f}%")
    if args.data:
        r = bench_data(args.data, args.batch)
        print(f"data path: {r['views']} views at {r['views_per_s']:.0f} views/s (store -> augmented views -> batches, 0 workers)")
    if args.large:
        r = fwd_bwd_once("large", 2)
        print(f"large    {r['params']:>11,d} params; built in {r['build_s']:.1f} s; "
              f"one forward/backward at batch 2 (4 views): {r['fwd_bwd_s']:.1f} s")


if __name__ == "__main__":
    main()
