"""`clef diagnose`: do CLEF's clinical weights act on real batches? (clef_core.weight_diagnostics)"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from pathlib import Path

from clef.cli import add_config_arguments, config_from_args
from clef.commands._site import prepare_cohort_site
from clef_core.run_folder import dumps

NAME = "diagnose"
HELP = "weight statistics of CLEF batches: pairs with risk, weight spread, Spearman vs risk / completeness, placebo gradient cosine"



def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--cohort", metavar="DIR", type=Path, help="cohort folder (default: synthesise [synth])")
    parser.add_argument("--work", metavar="DIR", type=Path, default=Path("runs/diagnose"),
                        help="where the cohort's table and store are cached (default runs/diagnose)")
    parser.add_argument("--checkpoint", metavar="CKPT", type=Path,
                        help="encoder for the gradient cosine (default: the [model] encoder at its random init)")
    parser.add_argument("--batches", type=int, default=10, help="batches of train.batch_size patients (default 10)")
    parser.add_argument("--oracle", action="store_true",
                        help="weights read the synthetic cohort's hidden risk factor h (truth.csv) for every record, as "
                             "clef study's oracle arm")
    parser.add_argument("--json", metavar="FILE", type=Path, help="also write the numbers here")


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    import torch

    from clef_core.checkpoint import CheckpointError, load_model
    from clef_core.config import merge, overrides_to_dict
    from clef_core.evaluation.study_truth import oracle_site
    from clef_core.train.config import LossConfig, TrainConfig
    from clef_core.data.augment import ViewConfig
    from clef_core.encoders.config import make_config
    from clef_core.task import build_model, make_dataset, make_loader
    from clef_core.weight_diagnostics import STATS, diagnose

    try:
        site = prepare_cohort_site(NAME, args.cohort, args.work, cfg, progress=False)
        site = oracle_site(site) if args.oracle else site
        train_cfg = TrainConfig(**cfg["train"])
        torch.manual_seed(train_cfg.seed)
        encoder = load_model(args.checkpoint).encoder if args.checkpoint else build_model(make_config(**cfg["model"]))
        configured = LossConfig(**cfg["loss"])
        repaired = merge(cfg, overrides_to_dict(cfg["study"]["repaired"]), strict=True)["loss"]
        settings = {"paper defaults": LossConfig(), "repaired (study.repaired)": LossConfig(**repaired)}
        if configured not in settings.values():
            settings["configured [loss]"] = configured
        loader = make_loader(make_dataset(ViewConfig(**cfg["views"]), site, train_cfg.seed), train_cfg, epoch=0)
        result = diagnose(loader, settings, encoder.eval(), max_batches=args.batches, seed=train_cfg.seed)
    except (FileNotFoundError, ValueError, KeyError, CheckpointError) as exc:
        print(f"clef diagnose: {exc}", file=sys.stderr)
        return 1
    names = list(settings)
    from clef_core.risk import RiskSettings

    risk = RiskSettings.from_config(cfg)
    pre = site.summary()
    print(f"{site.root}{' (oracle: risk = hidden factor h)' if args.oracle else ''}: {args.batches} batches of "
          f"{train_cfg.batch_size} patients; "
          f"encoder {'= ' + str(args.checkpoint) if args.checkpoint else 'at random init'}")
    print(f"clinical risk: {risk.describe()}; risk known for {pre['risk_known']:.0%} of records")
    print(f"{'statistic':26s}" + "".join(f"{n:>28s}" for n in names))
    for stat in STATS:
        print(f"{stat:26s}" + "".join(f"{_fmt(result[n][stat]):>28s}" for n in names))
    if args.json:
        payload = {"settings": {n: dataclasses.asdict(c) for n, c in settings.items()}, "statistics": result,
                   "risk": dataclasses.asdict(risk),
                   "batches": args.batches, "batch_size": train_cfg.batch_size, "cohort": str(site.root),
                   "oracle": args.oracle}
        args.json.write_text(dumps(payload, indent=2), encoding="utf-8")
    return 0


def _fmt(v: float) -> str:
    return "n/a" if not math.isfinite(v) else f"{v:.4g}"
