"""Central vs federated vs DP at equal examples, with a zero-noise control (issue 12, item 6).

One pretraining cohort (the ``--config`` experiment's [synth], default study-cpu: the risk-linked
cohort), one encoder ([model], ``model.norm = "group"`` for every arm because DP refuses
BatchNorm), one batch size, and the same number of passes over the same patients (``--passes``):

  central        ``clef pretrain`` on the whole cohort for P epochs
  federated      ``clef simulate``: the cohort split IID into ``--sites`` sites (no hold-out),
                 FedAvg, P rounds of one local epoch each (Flower's simulation engine)
  federated_dp0  as federated with patient-level DP-SGD at every site and sigma = 1e-6: the DP
                 objective (each patient against the public bank, clipped per patient, Poisson
                 batches) without its noise
  federated_dp   the same at the noise multiplier that spends ``--epsilon`` (delta 1e-5) at the
                 smallest site over the P rounds (:func:`clef_core.privacy.accounting.noise_for_epsilon`)

so federated - central is what federation costs, federated_dp0 - federated what the DP objective
costs, and federated_dp - federated_dp0 what the noise costs. Examples (patients per
optimizer step, expected under Poisson sampling, summed over steps and sites) are counted from each run and printed: the claim of
"equal examples" is checked, not assumed. One learning-rate shape for all: a cosine over the P
passes (central: SGDR with a period of P epochs, per step; federated: the server's cosine over
rounds, constant within a round).

Scoring: the protocol of ``clef study`` (clef_core.evaluation.study): a separate evaluation cohort
(study.eval_patients, seed study.eval_seed) split by patient into pool / validation / test; a frozen
linear probe per label at each of ``--fractions`` of the pool, ``--subsamples`` label subsamples,
L2 chosen on validation, test AUROC; headline = mean over the non-saturated labels; paired
differences with a bootstrap CI over (seed x subsample) units and test patients.

Each arm and seed caches its embeddings (OUT/arms/<arm>_s<seed>/embeddings.npz) and its run folder,
so an interrupted benchmark resumes. Writes OUT/regimes.md (printed) and OUT/regimes.csv.

    python benchmarks/bench_regimes.py --out runs/bench-regimes [--config study-cpu] [--seeds 0 1]
        [--passes 4] [--sites 3] [--epsilon 8] [--fractions 0.1 1.0] [--subsamples 5] [--set k=v ...]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ARMS = ("central", "federated", "federated_dp0", "federated_dp")
COMPARISONS = (("federated", "central"), ("federated_dp0", "federated"), ("federated_dp", "federated_dp0"),
               ("federated_dp", "central"))
CONTROL_SIGMA = 1e-6
DELTA = 1e-5


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--config", default="study-cpu")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--passes", type=int, default=4, help="epochs (central) = rounds of one local epoch (federated)")
    ap.add_argument("--sites", type=int, default=3)
    ap.add_argument("--epsilon", type=float, default=8.0, help="what federated_dp spends at its smallest site")
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.1, 1.0])
    ap.add_argument("--subsamples", type=int, default=5)
    ap.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    return ap.parse_args(argv)


def experiment(args: argparse.Namespace) -> dict[str, Any]:
    from clef_core.config import load_config

    return load_config(args.config, ['model.norm="group"', "train.max_steps=0", f"train.epochs={args.passes}",
                                     *args.overrides])


def federation_config(cfg: dict[str, Any], args: argparse.Namespace, seed: int, sigma: float | None,
                      budget: float) -> dict[str, Any]:
    out = copy.deepcopy(cfg)
    out["train"]["seed"] = seed
    out["federation"].update({
        "strategy": "fedavg", "rounds": args.passes, "local_epochs": 1, "local_steps": 0, "sites": args.sites,
        "split": "iid", "holdout": 0.0, "eval_every": 0, "fraction_train": 1.0, "fraction_evaluate": 0.0,
        "min_train_nodes": args.sites, "min_available_nodes": args.sites, "client_cpus": 1})
    out["privacy"] = {**out["privacy"], "mode": "off"} if sigma is None else {
        **out["privacy"], "mode": "patient", "noise_multiplier": sigma, "delta": DELTA, "budget_epsilon": budget}
    return out


def dp_noise(cfg: dict[str, Any], site_sizes: list[int], args: argparse.Namespace) -> tuple[float, float, int]:
    """(sigma, q, steps) that spend ``--epsilon`` at the smallest site over the whole run."""
    from clef_core.privacy.accounting import noise_for_epsilon, sample_rate, steps_per_epoch

    q = sample_rate(min(site_sizes), int(cfg["train"]["batch_size"]))
    steps = args.passes * steps_per_epoch(q)
    return noise_for_epsilon(args.epsilon, q, steps, DELTA), q, steps


def central_config(cfg: dict[str, Any], args: argparse.Namespace, seed: int) -> dict[str, Any]:
    """P epochs of ``clef pretrain`` under one cosine over the run (SGDR period = P epochs), the shape
    of the federated schedule (a cosine over the P rounds)."""
    out = copy.deepcopy(cfg)
    out["train"].update({"seed": seed, "warm_restart_t0": args.passes, "warm_restart_tmult": 1})
    out["privacy"] = {**out["privacy"], "mode": "off"}
    return out


def train_central(cfg: dict[str, Any], site: Any, folder: Path) -> tuple[Path, dict[str, Any]]:
    from clef_core.experiment import Experiment
    from clef_core.run_folder import RunFolder
    from clef_core.train import pretrain

    result = pretrain(Experiment.from_dict(cfg), run_dir=folder / "run", site=site, progress=False)
    metrics = RunFolder(folder / "run").read_metrics()
    examples = sum(float(m.get("examples", 0)) for m in metrics if m.get("kind", "epoch") == "epoch")
    return result.final_model, {"steps": int(result.steps), "examples": examples, "seconds": float(result.seconds)}


def train_federated(cfg: dict[str, Any], site_dirs: list[Path], folder: Path) -> tuple[Path, dict[str, Any]]:
    from clef_core.experiment import Experiment
    from simulations.run import simulate

    result = simulate(Experiment.from_dict(cfg), folder / "run", site_dirs=site_dirs)
    steps = examples = epsilon = 0.0
    for row in result.rounds:
        for site in row.get("sites", []):
            if site.get("status") == "accepted":
                steps += float(site.get("steps", 0.0))
                examples += float(site.get("examples", 0.0))
        epsilon = max(epsilon, float(row.get("epsilon") or 0.0))
    return result.final_model, {"steps": steps, "examples": examples, "seconds": float(result.seconds),
                                "epsilon": epsilon, "rounds": len(result.rounds)}


def arm_embeddings(arm: str, seed: int, cfg: dict[str, Any], args: argparse.Namespace, data: dict[str, Any],
                   x_eval: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
    """Train (or load) one arm and seed; the evaluation windows' embeddings and what the run did."""
    from clef_core.checkpoint import load_model
    from clef_core.evaluation.embed import embed

    if arm == "central":
        run_cfg, sigma = central_config(cfg, args, seed), None
    else:
        sigma = {"federated": None, "federated_dp0": CONTROL_SIGMA, "federated_dp": data["sigma"]}[arm]
        run_cfg = federation_config(cfg, args, seed, sigma, args.epsilon if arm == "federated_dp" else 0.0)
    key = json.dumps({k: v for k, v in run_cfg.items() if k != "study"}, sort_keys=True, default=str)  # [study]: scoring only
    folder = args.out / "arms" / f"{arm}_s{seed}"
    cache = folder / "embeddings.npz"
    if cache.is_file():
        saved = np.load(cache, allow_pickle=False)
        if "config" not in saved or str(saved["config"]) != key:
            raise SystemExit(f"{folder} was trained with other settings than this run's: use another --out")
        return saved["emb"], json.loads(str(saved["info"]))
    folder.mkdir(parents=True, exist_ok=True)
    if arm == "central":
        model, info = train_central(run_cfg, data["site"], folder)
    else:
        model, info = train_federated(run_cfg, data["site_dirs"], folder)
        if sigma is not None:
            info["sigma"] = sigma
    emb = embed(load_model(model).encoder, x_eval, batch_size=int(cfg["evaluate"]["batch_size"]))
    tmp = folder / "embeddings.tmp.npz"
    np.savez(tmp, emb=emb, info=json.dumps(info), config=key)
    tmp.replace(cache)
    return emb, info


def prepare(cfg: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """The pretraining cohort, its IID site split (no hold-out), the evaluation task and its split."""
    from clef_core.evaluation.label_efficiency import three_way_split
    from clef_core.evaluation.labelled_data import synthetic_site
    from clef_core.evaluation.study import StudyConfig
    from clef_core.experiment import Experiment
    from clef_core.evaluation.tasks import synthetic_task
    from clef_core.prepared_site import default_cohort, prepare_site
    from simulations.partition import SplitSpec, split_cohort

    study = StudyConfig(**{**cfg["study"], "label_fractions": tuple(args.fractions), "subsamples": args.subsamples,
                           "seeds": tuple(args.seeds)})
    exp = Experiment.from_dict(cfg)
    cohort = default_cohort(args.out / "data" / "pretrain", exp)
    site = prepare_site(cohort, args.out / "data" / "pretrain", exp)
    split = split_cohort(cohort, args.out / "data" / "split", SplitSpec(kind="iid", sites=args.sites, holdout=0.0))
    settings = dataclasses.replace(exp.evaluate, synth_seed=study.eval_seed, synth_patients=study.eval_patients)
    eval_site = synthetic_site(exp, settings, args.out / "data")
    task = synthetic_task(eval_site, settings.lead.split(",")[0].strip(), list(study.labels) or None)
    pool, val, test = three_way_split(task.groups, study.val_fraction, study.test_fraction, study.eval_seed)
    sizes = [s.patients for s in split.sites]
    sigma, q, steps = dp_noise(cfg, sizes, args)
    return {"site": site, "site_dirs": [s.dir for s in split.sites], "site_sizes": sizes, "study": study,
            "task": task, "pool": pool, "val": val, "test": test, "sigma": sigma, "q": q, "dp_steps": steps}


def score(embeddings: dict[tuple[str, int], np.ndarray], data: dict[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """Probe rows per (arm, seed, fraction, subsample, label) and the paired headline differences,
    as ``clef study`` computes them."""
    from clef_core.evaluation.study import paired_differences, probe_all, split_saturated_labels

    study, task, test = data["study"], data["task"], data["test"]
    rows, test_scores = [], {}
    for (arm, seed), emb in embeddings.items():
        arm_rows, arm_scores = probe_all(emb, task, data["pool"], data["val"], test, study, arm, seed)
        rows += arm_rows
        test_scores.update(arm_scores)
    long = pd.DataFrame(rows)
    labels, _ = split_saturated_labels(long, study)
    y_test = task.y[test][:, [task.labels.index(c) for c in labels]]
    return long, paired_differences(test_scores, task, test, labels, y_test, study, COMPARISONS), labels


def report(long: pd.DataFrame, diffs: pd.DataFrame, labels: list[str], info: dict[tuple[str, int], dict[str, Any]],
           data: dict[str, Any], args: argparse.Namespace, wall: float) -> str:
    from clef_core.evaluation.metrics import mean_sd

    head = (long[long["label"].isin(labels)].groupby(["arm", "seed", "fraction", "subsample"])["auroc"].mean()
            .reset_index())
    fracs = list(data["study"].label_fractions)
    lines = ["| arm | " + " | ".join(f"{100 * f:g} % labels" for f in fracs)
             + " | examples | optimizer steps | sigma | epsilon | train s |", "|---" * (len(fracs) + 6) + "|"]
    for arm in [a for a in ARMS if a in args.arms]:
        cells = []
        for f in fracs:
            sub = head[(head["arm"] == arm) & (head["fraction"] == f)]["auroc"]
            cells.append(mean_sd(sub))
        runs = [v for (a, _), v in info.items() if a == arm]
        eps = [v.get("epsilon", math.nan) for v in runs]
        eps_text = "-" if arm in ("central", "federated") else (
            ">1e6" if np.nanmean(eps) > 1e6 else f"{np.nanmean(eps):.2f}")
        sigma = runs[0].get("sigma")
        lines.append(f"| {arm} | " + " | ".join(cells) + f" | {np.mean([v['examples'] for v in runs]):.0f} | "
                     f"{np.mean([v['steps'] for v in runs]):.0f} | {'-' if sigma is None else f'{sigma:.3g}'} | "
                     f"{eps_text} | {np.mean([v['seconds'] for v in runs]):.0f} |")
    lines += ["", "| comparison | labels | difference | 95 % CI | P(boot > 0) | units |", "|---|---|---|---|---|---|"]
    for r in diffs.itertuples(index=False):
        lines.append(f"| {r.comparison} | {100 * r.fraction:g} % | {r.diff:+.4f} | [{r.ci_low:+.4f}, {r.ci_high:+.4f}] | "
                     f"{r.p_above_0:.2f} | {r.units} |")
    lines += ["", f"Headline: test AUROC of a frozen linear probe, mean over {', '.join(labels)}; mean ± SD over "
              f"{len(args.seeds)} seed(s) x {args.subsamples} label subsamples of {int(data['pool'].sum())} pool ECGs; "
              f"{int(data['test'].sum())} test ECGs. Pretraining: {sum(data['site_sizes'])} patients, "
              f"{args.passes} passes, batch {data['batch']}; {args.sites} IID sites of {data['site_sizes']} patients; "
              f"DP: q = {data['q']:.3f}, {data['dp_steps']} steps per site, delta {DELTA:g}, clip "
              f"{data['clip']:g}, bank {data['bank']}. Examples: patients per optimizer step (expected, q n, under DP) summed over "
              f"steps and sites, mean over seeds. Wall {wall / 60:.1f} min on {os.cpu_count()} cores "
              f"(load {os.getloadavg()[0]:.1f} at the end)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    cfg = experiment(args)
    args.out.mkdir(parents=True, exist_ok=True)
    data = prepare(cfg, args)
    data.update(batch=int(cfg["train"]["batch_size"]), clip=float(cfg["privacy"]["clip_norm"]),
                bank=int(cfg["privacy"]["bank_size"]))
    print(f"regimes: {sum(data['site_sizes'])} pretraining patients in sites {data['site_sizes']}; "
          f"federated_dp sigma {data['sigma']:.3f} for epsilon {args.epsilon:g} (q {data['q']:.3f}, "
          f"{data['dp_steps']} steps)", flush=True)
    embeddings, info = {}, {}
    for arm in [a for a in ARMS if a in args.arms]:
        for seed in args.seeds:
            t0 = time.perf_counter()
            embeddings[(arm, seed)], info[(arm, seed)] = arm_embeddings(arm, seed, cfg, args, data, data["task"].x)
            print(f"regimes: {arm} seed {seed}: {info[(arm, seed)]['examples']:.0f} examples, "
                  f"{time.perf_counter() - t0:.0f} s", flush=True)
    long, diffs, labels = score(embeddings, data)
    long.to_csv(args.out / "regimes.csv", index=False)
    text = report(long, diffs, labels, info, data, args, time.perf_counter() - started)
    (args.out / "regimes.md").write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
