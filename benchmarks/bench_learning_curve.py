"""Learning curve: probe AUROC after 0 / 100 / 300 / 1,000 / 3,000 pretraining steps (issue 18, item 3).

For every loss (``--losses``: the study's arms ``ntxent``, ``clef``, ``clef_repaired``, ``placebo``),
budget (``--steps``) and seed, one pretraining run of exactly that many optimizer steps, with the
experiment's whole recipe (its learning-rate schedule runs over the budget: a 100-step point is a
finished 100-step run, not the first 100 steps of a longer one); 0 steps is the random-init encoder
of the seed (the study's ``untrained`` arm). ``--variant NAME=k=v;k=v`` adds a config variant (e.g.
the paper's views) run through the same budgets, for the pilots that chose the defaults.

Scoring is ``clef study``'s (clef_core.evaluation.study): its pretraining and evaluation cohorts,
its patient split, :func:`probe_all` (frozen logistic probe per label, L2 chosen on validation, test
AUROC, ``--fractions`` of the pool x ``--subsamples`` label subsamples) and
:func:`paired_differences` (paired bootstrap over seed x subsample units and test patients).
Differences: every budget against step 0 (pretraining vs random init), every budget against the
previous one (does the curve fall?), and each loss against the first at the same budget.

Each run caches its encoder, run folder and embeddings under OUT/<variant>/steps<N>/arms/, so an
interrupted benchmark resumes where it stopped. Writes OUT/learning_curve.csv (probe rows),
OUT/differences.csv, OUT/learning_curve.png and the markdown report (OUT/learning_curve.md and
``--results``).

    nice -n 5 python benchmarks/bench_learning_curve.py --out runs/learning-curve [--config study-cpu]
        [--steps 0 100 300 1000 3000] [--losses ntxent clef] [--seeds 0 1] [--longest-seeds 1] [--workers 2]
        [--variant paper='views.pairing="same_window";views.crop_s=0'] [--set k=v ...]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import datetime as dt
import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

LOSSES = ("ntxent", "clef", "clef_repaired", "placebo")
DEFAULT = "default"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--config", default="study-cpu")
    ap.add_argument("--steps", type=int, nargs="+", default=[0, 100, 300, 1000, 3000])
    ap.add_argument("--losses", nargs="+", default=["ntxent", "clef"], choices=LOSSES)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--longest-seeds", type=int, default=0,
                    help="the largest budget runs only the first K seeds (0: all); its comparisons pair those seeds")
    ap.add_argument("--longest-losses", nargs="+", default=[], choices=LOSSES,
                    help="the largest budget runs only these losses (default: all)")
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.1, 1.0])
    ap.add_argument("--subsamples", type=int, default=5)
    ap.add_argument("--workers", type=int, default=1, help="runs in this many processes of 1 torch thread")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=k=v;k=v",
                    help="a config variant beside the experiment as it is (repeatable)")
    ap.add_argument("--no-default", action="store_true", help="run only the --variant configs")
    ap.add_argument("--results", type=Path, default=None, help="also write the report here")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    args = ap.parse_args(argv)
    if any(s < 0 for s in args.steps):
        ap.error("--steps must be >= 0")
    return args


def variants(args: argparse.Namespace) -> dict[str, list[str]]:
    """Variant name -> its ``--set``-style overrides (on top of the experiment and ``--set``)."""
    out: dict[str, list[str]] = {} if args.no_default else {DEFAULT: []}
    for spec in args.variant:
        name, sep, sets = spec.partition("=")
        if not sep or not name or name in out:
            raise SystemExit(f"--variant {spec!r}: expected a new NAME=k=v;k=v")
        out[name] = [s for s in sets.split(";") if s.strip()]
    if not out:
        raise SystemExit("nothing to run: --no-default without --variant")
    return out


def budget_config(cfg: dict[str, Any], steps: int, patients: int) -> dict[str, Any]:
    """``cfg`` trained for exactly ``steps`` optimizer steps (enough epochs, then the step cap)."""
    out = copy.deepcopy(cfg)
    per_epoch = math.ceil(patients / int(out["train"]["batch_size"]))
    out["train"].update({"max_steps": steps, "epochs": max(1, math.ceil(steps / per_epoch))})
    return out


def arm_name(variant: str, loss: str, steps: int, n_variants: int) -> str:
    base = "untrained" if steps == 0 else f"{loss}@{steps}"
    return base if n_variants == 1 else f"{variant}:{base}"


def prepare(cfg: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """The study's cohorts, task, evidence inputs and split (cached under OUT/data)."""
    from clef_core.evaluation.label_efficiency import three_way_split
    from clef_core.evaluation.labelled_data import synthetic_site
    from clef_core.evaluation.study import StudyConfig
    from clef_core.evaluation.tasks import evidence_inputs, synthetic_task
    from clef_core.experiment import Experiment
    from clef_core.prepared_site import default_cohort, prepare_site

    study = StudyConfig(**{**cfg["study"], "label_fractions": tuple(args.fractions), "subsamples": args.subsamples,
                           "seeds": tuple(args.seeds), "workers": args.workers, "threads": 1})
    data = args.out / "data"
    exp = Experiment.from_dict(cfg)
    site = prepare_site(default_cohort(data / "pretrain", exp), data / "pretrain", exp, workers=args.workers)
    settings = dataclasses.replace(exp.evaluate, synth_seed=study.eval_seed, synth_patients=study.eval_patients)
    eval_site = synthetic_site(exp, settings, data, workers=args.workers)
    lead = settings.lead.split(",")[0].strip()
    task = synthetic_task(eval_site, lead, list(study.labels) or None)
    pool, val, test = three_way_split(task.groups, study.val_fraction, study.test_fraction, study.eval_seed)
    return {"site": site, "study": study, "task": task, "evidence": evidence_inputs(eval_site, lead),
            "pool": pool, "val": val, "test": test, "patients": int(site.summary()["subjects"])}


def run_unit(ctx: dict[str, Any], unit: tuple[str, str, int, int]) -> dict[str, Any]:
    """Train (or load) one (variant, loss, steps, seed) and embed the evaluation windows."""
    from clef_core.evaluation.study import arm_embeddings
    from clef_core.experiment import Experiment

    variant, loss, steps, seed = unit
    cfg = budget_config(ctx["configs"][variant], steps, ctx["patients"])
    arm = "untrained" if steps == 0 else loss
    folder = ctx["out"] / variant / f"steps{steps}"
    started = time.perf_counter()
    result = arm_embeddings(Experiment.from_dict(cfg), arm, ctx["study"], seed, ctx["site"], ctx["task"].x, ctx["evidence"], folder, False)
    print(f"learning curve: {variant} {arm} {steps} steps seed {seed}: {time.perf_counter() - started:.0f} s "
          f"(train {result.train.get('seconds', 0):.0f} s, final loss {result.train.get('final_loss', math.nan):.3f})",
          flush=True)
    return {"emb": result.emb, "train": result.train, "rho": result.rho_truth}


def comparisons(names: dict[tuple[str, str, int], str], args: argparse.Namespace, vnames: list[str]) -> list[tuple[str, str]]:
    """Budget vs step 0, budget vs the previous budget, loss vs the first loss, variant vs the first
    (trained budgets only: a variant of the views leaves the random-init encoder as it is)."""
    out: list[tuple[str, str]] = []
    steps = sorted(set(args.steps))
    for v in vnames:
        for loss in args.losses:
            trained = [s for s in steps if s > 0]
            if 0 in steps:
                out += [((v, loss, s), (v, loss, 0)) for s in trained]
            out += [((v, loss, b), (v, loss, a)) for a, b in zip(trained, trained[1:])]
        out += [((v, loss, s), (v, args.losses[0], s)) for loss in args.losses[1:] for s in steps if s > 0]
    out += [((v, loss, s), (vnames[0], loss, s)) for v in vnames[1:] for loss in args.losses for s in steps if s > 0]
    return list(dict.fromkeys((names[a], names[b]) for a, b in out if a in names and b in names))


def report(long: pd.DataFrame, diffs: pd.DataFrame, labels: list[str], info: dict[str, dict[str, Any]],
           data: dict[str, Any], args: argparse.Namespace, wall: float, cfg: dict[str, Any]) -> str:
    from clef_core.evaluation.metrics import mean_sd

    head = (long[long["label"].isin(labels)].groupby(["arm", "seed", "fraction", "subsample"])["auroc"].mean()
            .reset_index())
    fracs = list(data["study"].label_fractions)
    lines = ["| arm | steps | " + " | ".join(f"{100 * f:g} % labels" for f in fracs)
             + " | final loss | train s / run | rho_truth |", "|---" * (len(fracs) + 5) + "|"]
    for arm in dict.fromkeys(long["arm"]):
        cells = []
        for f in fracs:
            sub = head[(head["arm"] == arm) & (head["fraction"] == f)]["auroc"]
            cells.append(mean_sd(sub))
        runs = info[arm]
        loss = np.nanmean([r.get("final_loss", math.nan) for r in runs]) if any("final_loss" in r for r in runs) else math.nan
        steps = int(np.mean([r.get("steps", 0) for r in runs]))
        rho = np.nanmean([r["rho"] for r in runs])
        lines.append(f"| {arm} | {steps} | " + " | ".join(cells)
                     + f" | {'-' if not math.isfinite(loss) else f'{loss:.3f}'} | "
                     f"{np.mean([r.get('seconds', 0.0) for r in runs]):.0f} | {rho:.3f} |")
    lines += ["", "| comparison | labels | difference | 95 % CI | P(boot > 0) | units |", "|---|---|---|---|---|---|"]
    for r in diffs.itertuples(index=False):
        lines.append(f"| {r.comparison} | {100 * r.fraction:g} % | {r.diff:+.4f} | [{r.ci_low:+.4f}, {r.ci_high:+.4f}] | "
                     f"{r.p_above_0:.2f} | {r.units} |")
    task, test = data["task"], data["test"]
    v, t = cfg["views"], cfg["train"]
    lines += ["", f"Headline: test AUROC of a frozen linear probe, mean over {', '.join(labels)}; mean ± SD over "
              f"{len(args.seeds)} seed(s)"
              + (f" ({args.longest_seeds} at {max(args.steps)} steps)" if args.longest_seeds else "")
              + (f" ({', '.join(args.longest_losses)} only at {max(args.steps)} steps)" if args.longest_losses else "")
              + f" x {args.subsamples} label subsamples of {len(np.unique(task.groups[data['pool']]))} "
              f"pool patients; {len(np.unique(task.groups[test]))} test patients; paired differences with a bootstrap "
              f"95 % CI over (seed x subsample) units and test patients (clef study's probe_all / paired_differences). "
              f"Pretraining: {data['patients']} patients (--config {args.config}), {cfg['model']['scale']} Net1D "
              f"(norm {cfg['model']['norm']}) at {cfg['preprocess']['sample_rate']} Hz, batch {t['batch_size']}, lr "
              f"{t['lr']:g}, schedule {t['schedule']} (warm-up {t['warmup_fraction']:g}), loss tau {cfg['loss']['tau']:g}; "
              f"views {v['pairing']} {v['crop_s']:g} s, noise {v['noise_scale']} "
              f"({v['noise_snr_db']:g} dB / {v['noise_rms']:g} mV), mask_p {v['mask_p']:g}, rrc_p {v['rrc_p']:g}, "
              f"flip_p {v['flip_p']:g}" + (f"; --set {' '.join(args.overrides)}" if args.overrides else "")
              + (f"; variants {', '.join(args.variant)}" if args.variant else "") + ". "
              f"Wall {wall / 60:.1f} min ({args.workers} worker(s)) on this {os.cpu_count()}-core {platform.machine()} "
              f"machine, shared (load {os.getloadavg()[0]:.1f} at the end), "
              f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC."]
    return "\n".join(lines) + "\n"


def plot(long: pd.DataFrame, labels: list[str], names: dict[tuple[str, str, int], str], path: Path,
         fracs: list[float]) -> Path:
    """AUROC vs steps (symlog x), one line per (variant, loss) and label fraction, ± SD bars."""
    from clef_core.evaluation.plots import _pyplot

    plt = _pyplot()
    head = (long[long["label"].isin(labels)].groupby(["arm", "seed", "fraction", "subsample"])["auroc"].mean()
            .reset_index())
    fig, axes = plt.subplots(1, len(fracs), figsize=(5 * len(fracs), 4), squeeze=False)
    lines = sorted({(v, loss) for v, loss, _ in names})
    for ax, frac in zip(axes[0], fracs):
        for v, loss in lines:
            xs, ys, es = [], [], []
            for (vv, ll, s), arm in sorted(names.items(), key=lambda kv: kv[0][2]):
                if (vv, ll) != (v, loss):
                    continue
                sub = head[(head["arm"] == arm) & (head["fraction"] == frac)]["auroc"]
                xs.append(s)
                ys.append(sub.mean())
                es.append(sub.std(ddof=1) if len(sub) > 1 else 0.0)
            ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=loss if v == DEFAULT else f"{v}: {loss}")
        ax.set_xscale("symlog", linthresh=100)
        ax.set_xlabel("pretraining steps")
        ax.set_ylabel("probe AUROC (headline)")
        ax.set_title(f"{100 * frac:g} % labels")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"learning curve: mean over {', '.join(labels)}", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    import torch

    from clef_core.config import load_config, merge, overrides_to_dict
    from clef_core.evaluation.study import paired_differences, probe_all, split_saturated_labels
    from clef_core.evaluation.study_workers import map_units

    args = parse_args(argv)
    torch.set_num_threads(1)
    started = time.perf_counter()
    cfg = load_config(args.config, args.overrides)
    vsets = variants(args)
    configs = {name: merge(cfg, overrides_to_dict(sets), strict=True) if sets else cfg for name, sets in vsets.items()}
    vnames = list(configs)
    args.out.mkdir(parents=True, exist_ok=True)
    data = prepare(cfg, args)
    print(f"learning curve: data ready in {time.perf_counter() - started:.0f} s ({data['patients']} pretraining "
          f"patients, {len(data['task'])} evaluation ECGs)", flush=True)

    steps = sorted(set(args.steps), reverse=True)  # longest first: the workers finish together
    def seeds_at(s: int) -> list[int]:
        return args.seeds[:args.longest_seeds] if args.longest_seeds and s == steps[0] and s > 0 else args.seeds

    def losses_at(s: int) -> list[str]:
        return [x for x in args.losses if x in args.longest_losses] if args.longest_losses and s == steps[0] and s > 0 \
            else args.losses

    units = list(dict.fromkeys((v, args.losses[0] if s == 0 else loss, s, seed) for s in steps for v in vnames
                               for loss in losses_at(s) for seed in seeds_at(s)))
    ctx = {**data, "configs": configs, "out": args.out}
    results = dict(zip(units, map_units(run_unit, ctx, units, args.workers, 1)))

    names = {(v, loss, s): arm_name(v, loss, s, len(vnames)) for v in vnames for loss in args.losses for s in steps
             if s == 0 or loss in losses_at(s)}
    rows, scores, info = [], {}, {}
    for (v, loss, s, seed), res in results.items():
        arm = arm_name(v, loss, s, len(vnames))
        arm_rows, arm_scores = probe_all(res["emb"], data["task"], data["pool"], data["val"], data["test"],
                                         data["study"], arm, seed)
        rows += arm_rows
        scores.update(arm_scores)
        info.setdefault(arm, []).append({**res["train"], "rho": res["rho"]})
    long = pd.DataFrame(rows)
    order = [names[k] for k in ((v, loss, s) for v in vnames for loss in args.losses for s in sorted(set(args.steps)))
             if k in names]
    long["arm"] = pd.Categorical(long["arm"], categories=list(dict.fromkeys(order)), ordered=True)
    long = long.sort_values(["arm", "seed", "fraction", "subsample"]).astype({"arm": str})
    labels, _ = split_saturated_labels(long, data["study"])
    task, test = data["task"], data["test"]
    y_test = task.y[test][:, [task.labels.index(c) for c in labels]]
    diffs = paired_differences(scores, task, test, labels, y_test, data["study"], tuple(comparisons(names, args, vnames)))
    long.to_csv(args.out / "learning_curve.csv", index=False)
    diffs.to_csv(args.out / "differences.csv", index=False)
    png = plot(long, labels, names, args.out / "learning_curve.png", list(args.fractions))
    text = "# Learning curve\n\n" + report(long, diffs, labels, info, data, args, time.perf_counter() - started,
                                           configs[vnames[0]]) + f"\nPlot: {png}\n"
    (args.out / "learning_curve.md").write_text(text, encoding="utf-8")
    if args.results is not None:
        args.results.parent.mkdir(parents=True, exist_ok=True)
        args.results.write_text(text, encoding="utf-8")
    (args.out / "summary.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                                       "labels": labels, "seconds": time.perf_counter() - started},
                                                      indent=2), encoding="utf-8")
    print(text, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
