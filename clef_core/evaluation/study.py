"""``clef study``: CLEF against its controls and a placebo, at equal compute, over label fractions.

Arms (every trained arm uses the same [train] settings: batch, optimizer, schedule, epochs, step
cap; two augmented views per patient per step):

  untrained      the [model] encoder at its random initialisation (per seed)
  features       46 hand-made lead-I features (:mod:`clef_core.evaluation.handmade`), no training
  ntxent         loss.kind = ntxent (SimCLR)
  clef           the configured [loss] (the paper's defaults unless the experiment changes them)
  clef_repaired  [loss] + study.repaired overrides (default: rank risk scaling, mean-one weights, no M,
                 unknown pairs at the batch's mean D, D^4, no alignment term; docs/evaluation.md)
  placebo        clef_repaired with (risk, completeness) shuffled among the batch's patients every step
  placebo_known  clef_repaired with the risks shuffled among the batch's known-risk patients only
                 (which records lack a risk, and completeness, kept): the risk values' own effect
  oracle         clef_repaired weighted by the synthetic cohort's hidden risk factor h (truth.csv) in
                 place of SCORE2, known for every record (:mod:`clef_core.evaluation.study_truth`)
  clef_signal_off / ntxent_signal_off   negative control: clef_repaired / ntxent pretrained on the
                 same cohort with synth.risk_signal = 0 (no risk in the waveform: CLEF has nothing to
                 find, so clef_signal_off - ntxent_signal_off should be 0)
  supervised     the encoder trained on the pretraining cohort's labels (masked BCE), then probed

Data: pretraining on the [synth] cohort (seed synth.seed); evaluation on another cohort of the same
generator (study.eval_patients, seed study.eval_seed), one window per ECG on ``evaluate.lead``,
split by patient into pool / validation / test once for all arms. For every arm, seed, label
fraction f and label subsample j: a frozen linear probe (logistic, one per label) is fitted on the
first max(ceil(f n_pool), study.min_patients) pool patients of subsample j, its L2 chosen per
label from study.l2_grid on the validation patients (all labelled), and scored on the test
patients (AUROC). The headline is the mean AUROC over study.headline_labels, or when that is empty
over the labels that are not saturated (a label whose median AUROC over the arms at the largest f
is >= study.saturated_auroc is reported but left out: it cannot tell encoders apart). A label drawn
from the hidden factor (``cvd_event``) is shown with its Bayes ceiling; every headline label with the
95 % CI half-width of one AUROC on the test patients (Hanley & McNeil), the study's resolution. Beside
the headline, a representation headline: the mean AUROC over the labels not computed from the risk
score CLEF reads (study.risk_derived_labels) and not saturated (the same rule), with pretrained -
untrained and features-relative differences on it and on every label alone
(``representation_differences.csv``). Paired
differences (same seed, same labelled patients, same test patients) come with a bootstrap CI
(:func:`clef_core.evaluation.label_efficiency.paired_bootstrap`); the features arm has no seed, its
scores pair with every seed of the other arm. Beside the probe, every arm with
an encoder (or those of study.finetune_arms) is fine-tuned at study.finetune_fractions
(:mod:`clef_core.evaluation.study_finetune`), with its own table and differences.

Every arm and seed is one unit (encoder, embeddings, probes, fine-tunes, MIT-BIH); units and
bootstraps run in study.workers processes (:mod:`clef_core.evaluation.study_workers`) and are put
back in order, so the outputs do not depend on the worker count.

Outputs in OUT: ``study.csv`` (one row per arm, seed, fraction, subsample, label), ``table.md`` /
``table.csv`` (headline per arm and fraction, mean +- SD over seed x subsample units),
``differences.md`` / ``differences.csv``, ``finetune.csv`` / ``finetune_table.csv`` /
``finetune_differences.csv``, ``label_efficiency.png``, ``diagnostics.json`` (the weight
statistics of the pretraining batches) and ``summary.json``. Each arm and seed caches its
embeddings in ``arms/<arm>_s<seed>/embeddings.npz``, its encoder (``encoder.pt``), its fine-tunes
(``finetune/``) and its pretraining run (resumable), so an interrupted study resumes.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import pandas as pd

from clef_core.config import merge, overrides_to_dict
from clef_core.data.preprocess import zscore
from clef_core.evaluation.mitdb_windows import WINDOW_LABELS, record_cv_auroc
from clef_core.evaluation.label_efficiency import (fit_logistic_grid, paired_bootstrap,
                                                   subsample_patients, three_way_split, weighted_auroc)
from clef_core.evaluation.metrics import auroc_ci95_halfwidth, mean_sd
from clef_core.evaluation.study_finetune import cached_unit, finetune_unit
from clef_core.evaluation.study_truth import bayes_ceiling, oracle_site
from clef_core.evaluation.settings import StudyConfig
from clef_core.evaluation.study_workers import map_units
from clef_core.run_folder import dumps

if TYPE_CHECKING:
    from clef_core.experiment import Experiment

COMPARISONS = (("ntxent", "untrained"), ("clef_repaired", "untrained"), ("ntxent", "features"), ("clef_repaired", "features"),
               ("clef", "ntxent"), ("clef_repaired", "ntxent"), ("placebo", "ntxent"), ("clef_repaired", "placebo"),
               ("clef_repaired", "placebo_known"), ("oracle", "ntxent"), ("oracle", "clef_repaired"),
               ("clef_signal_off", "ntxent_signal_off"))
REPRESENTATION_COMPARISONS = (("ntxent", "untrained"), ("clef_repaired", "untrained"), ("ntxent", "features"),
                              ("clef_repaired", "features"))  # per label and on the representation headline
UNTRAINED_ARMS = ("untrained", "features")
REPAIRED_ARMS = ("clef_repaired", "placebo", "placebo_known", "oracle", "clef_signal_off")  # [loss] + study.repaired
SIGNAL_OFF_ARMS = ("clef_signal_off", "ntxent_signal_off")  # pretrained on the cohort with synth.risk_signal = 0


@dataclasses.dataclass
class ArmOutput:
    """One arm and seed: embeddings of every evaluation window and the distance-risk Spearman."""

    emb: np.ndarray
    rho_truth: float
    train: dict[str, Any]
    mitdb_emb: np.ndarray | None = None


def arm_config(exp: Experiment, arm: str, study: StudyConfig, seed: int) -> Experiment:
    """The full experiment an arm trains with (``train.seed = seed``)."""
    out = exp.to_dict()
    out["train"]["seed"] = seed
    if arm in ("ntxent", "ntxent_signal_off"):
        out["loss"]["kind"] = "ntxent"
    if arm in REPAIRED_ARMS:
        out = merge(out, overrides_to_dict(study.repaired), strict=True)
    if arm in ("placebo", "placebo_known"):
        out["loss"]["shuffle_risk"] = True
        out["loss"]["shuffle_scope"] = "known" if arm == "placebo_known" else "all"
    if arm in SIGNAL_OFF_ARMS:
        out["synth"]["risk_signal"] = 0.0
    return type(exp).from_dict(out)


def arm_key(acfg: Experiment, arm: str) -> dict[str, Any]:
    """What an arm's cached encoder depends on: its config without [study] (scoring settings),
    plus the risk source when it is not the clinical table's SCORE2 (the oracle)."""
    key = {k: v for k, v in acfg.to_dict().items() if k != "study"}
    return {**key, "risk_source": "truth.risk_factor"} if arm == "oracle" else key


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclasses.dataclass
class _Context:
    """What every arm-and-seed unit reads (inherited by forked workers, never changed by a unit)."""

    exp: Experiment
    study: StudyConfig
    sites: dict[str, Any]  # pretraining site per data source: "pretrain", "oracle", "signal_off" (those needed)
    task: Any
    evidence: Any
    pool: np.ndarray
    val: np.ndarray
    test: np.ndarray
    fs: float
    mitdb: tuple[np.ndarray, np.ndarray, np.ndarray] | None
    out: Path
    progress: bool
    log: Callable[[str], None]


@dataclasses.dataclass
class _UnitResult:
    """One arm and seed: probe rows and test scores, fine-tune rows and test scores, MIT-BIH row."""

    info: dict[str, Any]
    rows: list[dict[str, Any]]
    scores: dict[tuple[str, int, float, int], np.ndarray]
    ft_rows: list[dict[str, Any]]
    ft_scores: dict[tuple[str, int, float, int], np.ndarray]
    mitdb_row: dict[str, Any] | None


def run_study(exp: Experiment, out: str | Path, *, progress: bool = False, log: Callable[[str], None] = _log
              ) -> dict[str, Any]:
    """Run (or resume) the study of ``exp`` into ``out``; returns the summary (also summary.json)."""
    import torch

    from clef_core.evaluation.labelled_data import synthetic_site
    from clef_core.evaluation.tasks import evidence_inputs, synthetic_task
    from clef_core.prepared_site import default_cohort, prepare_site

    study = exp.study
    torch.set_num_threads(study.threads)
    out = Path(out)
    started = time.perf_counter()
    data = out / "data"
    store_workers = max(study.workers, study.threads)  # preprocessing records is one process per record
    pre_site = prepare_site(default_cohort(data / "pretrain", exp, progress=progress), data / "pretrain", exp,
                            progress=progress, workers=store_workers)
    sites = _pretraining_sites(exp, study, pre_site, data, progress, store_workers)
    settings = dataclasses.replace(exp.evaluate, synth_seed=study.eval_seed, synth_patients=study.eval_patients)
    eval_site = synthetic_site(exp, settings, data, progress=progress, workers=store_workers)
    lead = settings.lead.split(",")[0].strip()
    task = synthetic_task(eval_site, lead, list(study.labels) or None)
    unknown = [c for c in study.headline_labels if c not in task.labels]
    if unknown:
        raise ValueError(f"study.headline_labels: {unknown} not among the scored labels {task.labels}")
    unknown = [c for c in study.risk_derived_labels if c not in task.labels and not study.labels]
    if unknown:
        raise ValueError(f"study.risk_derived_labels: {unknown} not among the cohort's labels {task.labels}")
    evidence = evidence_inputs(eval_site, lead)
    fs = float(eval_site.store.preprocess["sample_rate"])
    pool, val, test = three_way_split(task.groups, study.val_fraction, study.test_fraction, study.eval_seed)
    pre = pre_site.summary()
    log(f"study: data ready in {time.perf_counter() - started:.0f} s: pretraining {pre['subjects']} patients "
        f"(risk known for {pre['risk_known']:.0%} of records); evaluation {len(task)} ECGs of "
        f"{len(np.unique(task.groups))} patients, labels {task.labels}; pool/val/test patients "
        f"{len(np.unique(task.groups[pool]))}/{len(np.unique(task.groups[val]))}/{len(np.unique(task.groups[test]))}")
    diagnostics = _diagnostics(exp, study, sites, out)
    mitdb = _mitdb_windows(exp, settings, study, log)
    ctx = _Context(exp, study, sites, task, evidence, pool, val, test, fs, mitdb, out, progress, log)
    units = [(arm, seed) for arm in study.arms for seed in (study.seeds[:1] if arm == "features" else study.seeds)]
    results = map_units(_arm_unit, ctx, units, study.workers, study.threads)

    rows = [r for res in results for r in res.rows]
    test_scores = {k: v for res in results for k, v in res.scores.items()}
    arm_info = {f"{arm}_s{seed}": res.info for (arm, seed), res in zip(units, results)}
    mitdb_rows = [res.mitdb_row for res in results if res.mitdb_row is not None]
    long = pd.DataFrame(rows)
    long.to_csv(out / "study.csv", index=False)
    headline_labels, saturated = split_saturated_labels(long, study)
    y_test = task.y[test][:, [task.labels.index(c) for c in headline_labels]]
    table = _headline_table(long, headline_labels, arm_info, study)
    ceiling = bayes_ceiling(eval_site.root, task, test)
    resolution = auroc_resolution(long, task, test, headline_labels, study)
    table.to_csv(out / "table.csv", index=False)
    diffs = paired_differences(test_scores, task, test, headline_labels, y_test, study)
    diffs.to_csv(out / "differences.csv", index=False)
    rep_labels = representation_labels(long, study)
    rep_table = _headline_table(long, rep_labels, arm_info, study) if rep_labels else None
    if rep_table is not None:
        rep_table.to_csv(out / "representation_table.csv", index=False)
    label_diffs = label_differences(test_scores, task, test, rep_labels, study)
    label_diffs.to_csv(out / "representation_differences.csv", index=False)
    ft_table_md, ft_diffs_md = _finetune_reports(results, task, test, headline_labels, y_test, arm_info, study, out)
    plain = exp.to_dict()
    summary = {
        "seconds": round(time.perf_counter() - started, 1),
        "labels": task.labels, "headline_labels": headline_labels, "saturated_labels": saturated,
        "representation_labels": rep_labels, "risk_derived_labels": list(study.risk_derived_labels),
        "bayes_ceiling": ceiling, "auroc_ci95_halfwidth": resolution,
        "pretraining": {k: pre[k] for k in ("subjects", "records", "risk_known", "mean_completeness")},
        "evaluation": {"ecgs": int(len(task)), "patients": int(len(np.unique(task.groups))),
                       "pool_patients": int(len(np.unique(task.groups[pool]))),
                       "val_patients": int(len(np.unique(task.groups[val]))),
                       "test_patients": int(len(np.unique(task.groups[test]))),
                       "positives_test": {c: int(np.nansum(task.y[test][:, k])) for k, c in enumerate(task.labels)}},
        "arms": arm_info, "diagnostics": diagnostics, "study": dataclasses.asdict(study),
        "finetune_arms": list(finetune_arms(study)),
        "model": plain["model"], "preprocess_rate_hz": fs, "train": plain["train"], "loss": plain["loss"],
        "synth": plain["synth"], "risk": plain["risk"],  # the clinical risk model behind CLEF's weights
    }
    (out / "summary.json").write_text(dumps(summary, indent=2, default=str), encoding="utf-8")
    mitdb_md = ""
    if mitdb is not None:
        mt = pd.DataFrame(mitdb_rows)
        mt.to_csv(out / "mitdb_windows.csv", index=False)
        summary["mitdb_windows"] = {"windows": int(len(mitdb[1])), "records": int(len(np.unique(mitdb[2]))),
                                    "positive_windows": {c: int(mitdb[1][:, k].sum()) for k, c in enumerate(WINDOW_LABELS)},
                                    "stride_s": study.mitdb_stride_s}
        (out / "summary.json").write_text(dumps(summary, indent=2, default=str), encoding="utf-8")
        mitdb_md = _mitdb_markdown(mt, study, summary["mitdb_windows"])
    (out / "table.md").write_text(_table_markdown(table, summary, study) + representation_markdown(rep_table, rep_labels, study)
                                  + _label_markdown(long, study, ceiling) + mitdb_md
                                  + _diagnostics_markdown(diagnostics)
                                  + ("\n## Fine-tuned\n\n" + ft_table_md if ft_table_md else ""), encoding="utf-8")
    (out / "differences.md").write_text(_differences_markdown(diffs, headline_labels)
                                        + _label_differences_markdown(label_diffs, summary, study) + ft_diffs_md,
                                        encoding="utf-8")
    from clef_core.evaluation.plots import label_efficiency

    label_efficiency(table, diffs, out / "label_efficiency.png", title=f"headline: mean AUROC over {', '.join(headline_labels)}")
    log(f"study: done in {summary['seconds'] / 60:.1f} min -> {out / 'table.md'}")
    return summary


# ----------------------------------------------------------------------------- arms


def _pretraining_sites(exp: Experiment, study: StudyConfig, pre_site, data: Path, progress: bool, workers: int) -> dict[str, Any]:
    """The pretraining sites the arms need: the [synth] cohort; its oracle view (risk = h); the same
    cohort generated with synth.risk_signal = 0 (in data/pretrain_signal_off)."""
    from clef_core.prepared_site import default_cohort, prepare_site

    sites = {"pretrain": pre_site}
    if "oracle" in study.arms:
        sites["oracle"] = oracle_site(pre_site)
    if set(study.arms) & set(SIGNAL_OFF_ARMS):
        off = arm_config(exp, SIGNAL_OFF_ARMS[0], study, 0)
        folder = data / "pretrain_signal_off"
        sites["signal_off"] = prepare_site(default_cohort(folder, off, progress=progress), folder, off,
                                           progress=progress, workers=workers)
    return sites


def _arm_site(sites: dict[str, Any], arm: str) -> Any:
    """The pretraining site of ``arm``."""
    if arm == "oracle":
        return sites["oracle"]
    return sites["signal_off"] if arm in SIGNAL_OFF_ARMS else sites["pretrain"]


def _arm_unit(ctx: _Context, unit: tuple[str, int]) -> _UnitResult:
    """Everything of one arm and seed: its encoder (trained or cached), probes, fine-tunes, MIT-BIH."""
    from clef_core.evaluation.handmade import features

    arm, seed = unit
    t_arm = time.perf_counter()
    mitdb_x = None if ctx.mitdb is None else ctx.mitdb[0]
    if arm == "features":
        result = ArmOutput(features(ctx.task.x, ctx.fs), math.nan, {"steps": 0, "seconds": 0.0},
                           None if mitdb_x is None else features(zscore(mitdb_x), ctx.fs))
    else:
        result = arm_embeddings(ctx.exp, arm, ctx.study, seed, _arm_site(ctx.sites, arm), ctx.task.x, ctx.evidence, ctx.out,
                                 ctx.progress, mitdb_x)
    mitdb_row = None
    if ctx.mitdb is not None:
        mitdb_row = {"arm": arm, "seed": seed, **record_cv_auroc(
            result.mitdb_emb, ctx.mitdb[1], ctx.mitdb[2], ctx.exp.evaluate.probe_l2, seed=ctx.study.eval_seed)}
    rows, scores = probe_all(result.emb, ctx.task, ctx.pool, ctx.val, ctx.test, ctx.study, arm, seed)
    ft_rows, ft_scores = _finetune_all(ctx, arm, seed) if arm in finetune_arms(ctx.study) else ([], {})
    ctx.log(f"study: {arm} seed {seed}: {int(result.train.get('steps', 0))} training steps, "
            f"{time.perf_counter() - t_arm:.0f} s (rho vs true risk {result.rho_truth:.3f})")
    return _UnitResult({"rho_truth": result.rho_truth, **result.train}, rows, scores, ft_rows, ft_scores, mitdb_row)


def probe_all(emb: np.ndarray, task, pool, val, test, study: StudyConfig, arm: str, seed: int
              ) -> tuple[list[dict[str, Any]], dict[tuple[str, int, float, int], np.ndarray]]:
    """Probe rows and test scores (keyed (arm, seed, fraction, subsample)) of every fraction and
    subsample of the embeddings ``emb``; a labelled set equal to an earlier one (the whole pool at
    f = 1 for every subsample) reuses its fit, which is the same computation."""
    rows, scores, done = [], {}, {}
    pool_groups = task.groups[pool]
    for frac in study.label_fractions:
        for j in range(study.subsamples):
            key = subsample_patients(pool_groups, frac, j, study.eval_seed, study.min_patients).tobytes()
            if key not in done:
                done[key] = probe_unit(emb, task, pool, val, test, frac, j, study)
            unit_scores, unit_rows = done[key]
            scores[(arm, seed, frac, j)] = unit_scores
            rows += [{"arm": arm, "seed": seed, **r, "fraction": frac, "subsample": j} for r in unit_rows]
    return rows, scores


def _finetune_all(ctx: _Context, arm: str, seed: int):
    """Fine-tune the arm's encoder for every (finetune fraction, subsample), each unit cached."""
    study = ctx.study
    folder = ctx.out / "arms" / f"{arm}_s{seed}"
    acfg = arm_config(ctx.exp, arm, study, seed)
    settings = {k: getattr(study, k) for k in ("finetune_steps", "finetune_batch", "finetune_lr", "finetune_checks",
                                               "eval_seed", "min_patients", "val_fraction", "test_fraction", "labels")}
    key = json.dumps({"arm": arm_key(acfg, arm), "finetune": settings}, sort_keys=True, default=str)
    encoder = None
    rows, scores = [], {}
    for frac in study.finetune_fractions:
        for j in range(study.finetune_subsamples):
            def make(frac=frac, j=j):
                nonlocal encoder
                encoder = encoder if encoder is not None else _saved_encoder(ctx, arm, seed, acfg, folder)
                return finetune_unit(encoder, ctx.task, ctx.pool, ctx.val, ctx.test, frac, j, seed, study)

            unit_scores, unit_rows = cached_unit(folder / "finetune" / f"f{frac:g}_j{j}.npz", key, make)
            scores[(arm, seed, frac, j)] = unit_scores
            rows += [{"arm": arm, "seed": seed, **r} for r in unit_rows]
    return rows, scores


def _saved_encoder(ctx: _Context, arm: str, seed: int, acfg: Experiment, folder: Path):
    """The arm's encoder: ``encoder.pt`` when :func:`arm_embeddings` saved it, else trained again
    (a pretraining run resumes from its finished checkpoint) and saved."""
    import torch

    from clef_core.task import build_model

    path = folder / "encoder.pt"
    if path.is_file():
        encoder = build_model(acfg.model.encoder_config())
        encoder.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return encoder.eval()
    encoder, _ = _encoder(acfg, arm, _arm_site(ctx.sites, arm), folder, ctx.progress, list(ctx.study.labels))
    _save_encoder(encoder, path)
    return encoder


def _save_encoder(encoder, path: Path) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(encoder.state_dict(), tmp)
    tmp.replace(path)


def arm_embeddings(exp: Experiment, arm: str, study: StudyConfig, seed: int, site: Any, x: np.ndarray, evidence: Any,
                   out: Path, progress: bool, mitdb_x: np.ndarray | None = None) -> ArmOutput:
    """Train (or load) the arm's encoder and embed the evaluation windows (and the MIT-BIH windows);
    cached in embeddings.npz (a cache without the MIT-BIH embeddings the run needs is redone)."""
    from clef_core.evaluation.embed import embed
    from clef_core.evaluation.evidence import distance_risk_spearman

    folder = out / "arms" / f"{arm}_s{seed}"
    cache = folder / "embeddings.npz"
    acfg = arm_config(exp, arm, study, seed)
    key = json.dumps(arm_key(acfg, arm), sort_keys=True, default=str)
    if cache.is_file():
        saved = np.load(cache, allow_pickle=False)
        if str(saved["config"]) != key:
            raise ValueError(f"{cache} was made with other settings than this study's; use another --out")
        if mitdb_x is None or "mitdb_emb" in saved:
            return ArmOutput(saved["emb"], float(saved["rho_truth"]), json.loads(str(saved["train"])),
                             saved["mitdb_emb"] if mitdb_x is not None else None)
    folder.mkdir(parents=True, exist_ok=True)
    encoder, train = _encoder(acfg, arm, site, folder, progress, list(study.labels))
    _save_encoder(encoder, folder / "encoder.pt")
    emb = embed(encoder, x, batch_size=exp.evaluate.batch_size)
    extra = {} if mitdb_x is None else {"mitdb_emb": embed(encoder, mitdb_x, batch_size=exp.evaluate.batch_size)}
    rho = math.nan
    if evidence.risk_truth is not None:
        ev = embed(encoder, evidence.x, batch_size=exp.evaluate.batch_size)
        rho = float(distance_risk_spearman(ev, evidence.risk_truth, max_patients=exp.evaluate.evidence_max_patients,
                                           permutations=0)["rho"])
    train = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in train.items()}
    tmp = folder / "embeddings.tmp.npz"
    np.savez(tmp, emb=emb, rho_truth=rho, train=json.dumps(train), config=key, **extra)
    tmp.replace(cache)
    return ArmOutput(emb, rho, train, extra.get("mitdb_emb"))


def _encoder(exp: Experiment, arm: str, site: Any, folder: Path, progress: bool, labels: list[str]):
    import torch

    from clef_core.checkpoint import load_model
    from clef_core.evaluation.supervised import train_supervised
    from clef_core.train import pretrain
    from clef_core.task import build_model

    if arm == "untrained":
        torch.manual_seed(exp.train.seed)
        return build_model(exp.model.encoder_config()).eval(), {"steps": 0, "seconds": 0.0}
    if arm == "supervised":
        names = labels or [c for c in site.labels.columns if c not in ("study_id", "subject_id", "record_id")]
        encoder, info = train_supervised(exp, site, names)
        return encoder, {"steps": info["steps"], "seconds": info["seconds"], "final_loss": info["final_loss"]}
    result = pretrain(exp, run_dir=folder / "run", site=site, progress=progress)
    return load_model(result.final_model).encoder, {"steps": result.steps, "seconds": result.seconds,
                                                    "final_loss": result.final_loss}


def _diagnostics(exp: Experiment, study: StudyConfig, sites: dict[str, Any], out: Path) -> dict[str, Any]:
    """Weight statistics of the pretraining batches (random-init encoder) for clef and clef_repaired,
    and for the oracle's batches (risk = h) when it is an arm; recomputed each run (seconds)."""
    import torch

    from clef_core.task import build_model, make_dataset, make_loader
    from clef_core.weight_diagnostics import diagnose

    tc = exp.train
    stats = {}
    for source, arms in (("pretrain", ("clef", "clef_repaired")), ("oracle", ("oracle",))):
        if source not in sites:
            continue
        torch.manual_seed(tc.seed)
        settings = {arm: arm_config(exp, arm, study, tc.seed).loss for arm in arms}
        loader = make_loader(make_dataset(exp.views, sites[source], tc.seed), tc, epoch=0)
        stats.update(diagnose(loader, settings, build_model(exp.model.encoder_config()).eval(), max_batches=study.diagnose_batches,
                              seed=tc.seed))
    out.mkdir(parents=True, exist_ok=True)
    (out / "diagnostics.json").write_text(dumps(stats, indent=2), encoding="utf-8")
    return stats


def _mitdb_windows(exp: Experiment, settings: Any, study: StudyConfig, log: Callable[[str], None]) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """MIT-BIH DS1 as 10 s window tasks (``study.mitdb``); None when off or the folder is absent (logged)."""
    if not study.mitdb:
        return None
    from clef_core.evaluation.mitdb import resolve_records
    from clef_core.evaluation.mitdb_windows import load_windows
    from clef_core.paths import shared_data_dir

    folder = shared_data_dir("mitdb", settings.mitdb_dir)
    if not folder.is_dir():
        log(f"study: MIT-BIH window tasks skipped: no folder {folder} (set evaluate.mitdb_dir)")
        return None
    return load_windows(resolve_records("DS1", folder), exp.preprocess, study.mitdb_stride_s)


# ----------------------------------------------------------------------------- probing


def probe_unit(emb, task, pool, val, test, frac, j, study: StudyConfig) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Fit on the labelled subsample, pick L2 per label on validation, score the test rows."""
    rows_pool = np.flatnonzero(pool)
    fit_rows = rows_pool[subsample_patients(task.groups[pool], frac, j, study.eval_seed, study.min_patients)]
    x = np.asarray(emb, np.float64)
    mean, std = x[fit_rows].mean(axis=0), x[fit_rows].std(axis=0)
    xs = (x - mean) / np.where(std > 1e-8, std, 1.0)
    W, b = fit_logistic_grid(xs[fit_rows], task.y[fit_rows], study.l2_grid)
    scores = np.einsum("nd,gcd->gnc", xs, W) + b[:, None, :]  # (G, n, C)
    chosen = np.empty(len(task.labels), dtype=int)
    out_rows = []
    n_patients = int(len(np.unique(task.groups[fit_rows])))
    for c, label in enumerate(task.labels):
        yv = task.y[val, c]
        kv = np.isfinite(yv)
        val_auc = np.array([weighted_auroc(scores[g, val, c][kv], yv[kv])[0] for g in range(len(study.l2_grid))])
        finite = np.where(np.isfinite(val_auc), val_auc, -np.inf)
        chosen[c] = len(finite) - 1 - int(np.argmax(finite[::-1]))  # ties: the stronger L2
        yt = task.y[test, c]
        kt = np.isfinite(yt)
        test_auc = float(weighted_auroc(scores[chosen[c], test, c][kt], yt[kt])[0])
        out_rows.append({"fraction": frac, "subsample": j, "label": label, "auroc": test_auc,
                         "val_auroc": float(val_auc[chosen[c]]), "l2": study.l2_grid[chosen[c]],
                         "train_patients": n_patients,
                         "train_positives": int(np.nansum(task.y[fit_rows, c]))})
    test_scores = np.stack([scores[chosen[c], test, c] for c in range(len(task.labels))], axis=1)
    return test_scores, out_rows


def saturated_labels(long: pd.DataFrame, study: StudyConfig) -> list[str]:
    """The saturated labels of the probe rows ``long``: those whose median AUROC over the arms (every
    arm alike) at the largest fraction is >= study.saturated_auroc; they cannot tell encoders apart."""
    full = long[long["fraction"] == max(study.label_fractions)]
    by_arm = full.groupby(["label", "arm"])["auroc"].mean().unstack()
    return sorted(by_arm.index[by_arm.median(axis=1) >= study.saturated_auroc])


def split_saturated_labels(long: pd.DataFrame, study: StudyConfig) -> tuple[list[str], list[str]]:
    """(headline labels, saturated labels) of the probe rows ``long``: study.headline_labels when
    set, else the labels that are not saturated (:func:`saturated_labels`)."""
    saturated = saturated_labels(long, study)
    if study.headline_labels:
        return list(study.headline_labels), saturated
    labels = [c for c in long["label"].drop_duplicates() if c not in saturated]
    return labels or list(long["label"].drop_duplicates()), saturated


def representation_labels(long: pd.DataFrame, study: StudyConfig) -> list[str]:
    """The representation headline's labels (in scoring order): the scored labels that are not
    computed from the risk score CLEF reads (study.risk_derived_labels) and not saturated
    (:func:`saturated_labels`); independent of study.headline_labels. Empty when none is left."""
    saturated = saturated_labels(long, study)
    return [c for c in long["label"].drop_duplicates() if c not in study.risk_derived_labels and c not in saturated]


def label_differences(test_scores: dict[tuple[str, int, float, int], np.ndarray], task, test: np.ndarray,
                      rep_labels: list[str], study: StudyConfig) -> pd.DataFrame:
    """Paired differences of :data:`REPRESENTATION_COMPARISONS` (pretrained - untrained, and against
    the hand-made features) on the representation headline (``labels`` = "representation", the mean
    AUROC over ``rep_labels``) and on every scored label alone; same pairing and bootstrap as
    :func:`paired_differences`."""
    sets = ([("representation", rep_labels)] if rep_labels else []) + [(c, [c]) for c in task.labels]
    frames = []
    for name, labels in sets:
        y_test = task.y[test][:, [task.labels.index(c) for c in labels]]
        diffs = paired_differences(test_scores, task, test, labels, y_test, study, REPRESENTATION_COMPARISONS)
        frames.append(diffs.assign(labels=name))
    columns = ["comparison", "fraction", "labels", *DIFF_COLUMNS[2:]]
    return pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame(columns=columns)


def auroc_resolution(long: pd.DataFrame, task, test, labels: list[str], study: StudyConfig) -> dict[str, float]:
    """{label: 95 % CI half-width of one AUROC (Hanley & McNeil) on the test patients at the mean AUROC
    over arms at the largest fraction}: the smallest difference one arm's score can resolve."""
    full = long[long["fraction"] == max(study.label_fractions)]
    out = {}
    for label in labels:
        y = task.y[test, task.labels.index(label)]
        n_pos, n_neg = int(np.nansum(y == 1)), int(np.nansum(y == 0))
        out[label] = auroc_ci95_halfwidth(float(full.loc[full["label"] == label, "auroc"].mean()), n_pos, n_neg)
    return out


def _headline_table(long: pd.DataFrame, labels: list[str], arm_info: dict, study: StudyConfig) -> pd.DataFrame:
    head = (long[long["label"].isin(labels)].groupby(["arm", "seed", "fraction", "subsample"])
            .agg(auroc=("auroc", "mean"), train_patients=("train_patients", "first")).reset_index())
    rows = []
    for arm in study.arms:
        for frac in study.label_fractions:
            sub = head[(head["arm"] == arm) & (head["fraction"] == frac)]
            rhos = [v["rho_truth"] for k, v in arm_info.items() if k.rsplit("_s", 1)[0] == arm]
            rows.append({"arm": arm, "fraction": frac, "train_patients": int(sub["train_patients"].iloc[0]),
                         "mean_auroc": sub["auroc"].mean(), "sd_auroc": sub["auroc"].std(ddof=1) if len(sub) > 1 else 0.0,
                         "units": len(sub), "rho_truth": float(np.nanmean(rhos)) if np.isfinite(rhos).any() else math.nan})
    return pd.DataFrame(rows)


DIFF_COLUMNS = ("comparison", "fraction", "diff", "ci_low", "ci_high", "p_above_0", "units")


def paired_differences(test_scores, task, test, labels, y_test, study: StudyConfig,
                       comparisons: tuple[tuple[str, str], ...] = COMPARISONS) -> pd.DataFrame:
    """One row per (comparison, fraction) of two arms present in ``test_scores`` (keyed (arm, seed,
    fraction, subsample)): the paired bootstrap of the headline; the bootstraps run in
    ``study.workers`` processes (each is seeded by itself: the same numbers for any count)."""
    cols = [task.labels.index(c) for c in labels]
    present = {key[0] for key in test_scores}
    seedless = {arm: min(key[1] for key in test_scores if key[0] == arm) for arm in ("features",) if arm in present}

    def key(arm: str, seed: int, frac: float, j: int) -> tuple[str, int, float, int]:
        return (arm, seedless.get(arm, seed), frac, j)  # the features arm's one unit pairs with every seed

    jobs = []
    for a, b in comparisons:
        if a not in present or b not in present:
            continue
        for frac in study.label_fractions:
            keys = [(s, j) for s in study.seeds for j in range(study.subsamples)
                    if key(a, s, frac, j) in test_scores and key(b, s, frac, j) in test_scores]
            jobs.append((f"{a} - {b}", frac, [test_scores[key(a, s, frac, j)][:, cols] for s, j in keys],
                         [test_scores[key(b, s, frac, j)][:, cols] for s, j in keys]))
    context = (y_test, task.groups[test], study.bootstrap, study.eval_seed)
    rows = map_units(_bootstrap_job, context, jobs, study.workers, study.threads)
    return pd.DataFrame(rows, columns=list(DIFF_COLUMNS))


def _bootstrap_job(context, job) -> dict[str, Any]:
    y_test, groups, n_boot, seed = context
    name, frac, scores_a, scores_b = job
    return {"comparison": name, "fraction": frac,
            **paired_bootstrap(scores_a, scores_b, y_test, groups, n_boot=n_boot, seed=seed)}


# ----------------------------------------------------------------------------- fine-tuning


def finetune_arms(study: StudyConfig) -> tuple[str, ...]:
    """The arms fine-tuned: those with an encoder (only study.finetune_arms when set); none without
    fine-tune fractions."""
    if not study.finetune_fractions:
        return ()
    return tuple(a for a in study.arms if a != "features" and (not study.finetune_arms or a in study.finetune_arms))


def _finetune_study(study: StudyConfig) -> StudyConfig:
    """The study as the fine-tune protocol sees it (fine-tuning on): the fine-tuned arms, its
    fractions and subsamples."""
    return dataclasses.replace(study, arms=finetune_arms(study),
                               label_fractions=study.finetune_fractions, subsamples=study.finetune_subsamples)


def _finetune_reports(results: list[_UnitResult], task, test, labels: list[str], y_test, arm_info: dict,
                      study: StudyConfig, out: Path) -> tuple[str, str]:
    """finetune.csv, finetune_table.csv, finetune_differences.csv; (table, differences) markdown ("" if none)."""
    rows = [r for res in results for r in res.ft_rows]
    if not rows:
        return "", ""
    view = _finetune_study(study)
    long = pd.DataFrame(rows)
    long.to_csv(out / "finetune.csv", index=False)
    table = _headline_table(long, labels, arm_info, view)
    table.to_csv(out / "finetune_table.csv", index=False)
    diffs = paired_differences({k: v for res in results for k, v in res.ft_scores.items()}, task, test, labels, y_test, view)
    diffs.to_csv(out / "finetune_differences.csv", index=False)
    epochs = long.groupby("fraction")[["epoch", "epochs"]].median()
    text = "\n".join(_table_lines(table, view)) + (
        f"\n\nFine-tuned (encoder + linear head end to end; `untrained` = training from scratch): same headline labels "
        f"and test patients; mean ± SD over {len(study.seeds)} seed(s) x {study.finetune_subsamples} label subsamples; "
        f"{study.finetune_steps} AdamW steps of {study.finetune_batch} windows (lr {study.finetune_lr:g}, head 10x), the "
        "epoch kept by mean validation AUROC (median kept / run epochs: "
        + ", ".join(f"{100 * f:g} % {epochs.at[f, 'epoch']:g}/{epochs.at[f, 'epochs']:g}" for f in view.label_fractions)
        + ").\n")
    return text, "\n### Fine-tuned\n\n" + _differences_markdown(diffs, labels)


# ----------------------------------------------------------------------------- reports


def _table_markdown(table: pd.DataFrame, summary: dict, study: StudyConfig) -> str:
    lines = _table_lines(table, study)
    note = (f"\nHeadline: test AUROC of a frozen linear probe, mean over {', '.join(summary['headline_labels'])}"
            + (f" (saturated, left out: {', '.join(summary['saturated_labels'])})" if summary["saturated_labels"] else "")
            + f"; mean ± SD over {len(study.seeds)} seed(s) x {study.subsamples} label subsamples; columns: share of the "
            f"{summary['evaluation']['pool_patients']} pool patients labelled (at least {study.min_patients}); "
            f"{summary['evaluation']['test_patients']} test patients. rho_truth: Spearman of embedding cosine distance "
            f"vs |true SCORE2 difference|. CLEF's clinical risk: {summary.get('risk', {}).get('model', 'score2')}. "
            f"Total {summary['seconds'] / 60:.1f} min.\n")
    resolution = "; ".join(f"{c} ±{v:.3f}" for c, v in summary["auroc_ci95_halfwidth"].items() if math.isfinite(v))
    if resolution:
        note += (f"\nResolution: 95 % CI half-width of one AUROC on these test patients (Hanley & McNeil 1982): "
                 f"{resolution} (paired differences: differences.md).\n")
    if summary["bayes_ceiling"]:
        note += ("\nBayes ceiling (AUROC of the label's true probability given the hidden risk factor h, "
                 "same test patients): " + "; ".join(f"{c} {v:.3f}" for c, v in summary["bayes_ceiling"].items()) + ".\n")
    return "\n".join(lines) + "\n" + note


def representation_markdown(rep_table: pd.DataFrame | None, rep_labels: list[str], study: StudyConfig) -> str:
    """The representation headline per arm and fraction (:func:`representation_labels`); "" without one."""
    if rep_table is None:
        return ""
    return ("\nRepresentation headline: mean test AUROC over " + ", ".join(rep_labels) + " (the labels not computed "
            "from the risk score and not saturated; differences.md, \"Representation\"):\n\n"
            + "\n".join(_table_lines(rep_table, study)) + "\n")


def _table_lines(table: pd.DataFrame, study: StudyConfig) -> list[str]:
    """The headline table (arm x fraction, mean ± SD, rho_truth) as markdown lines."""
    fracs = list(study.label_fractions)
    n_pat = {f: int(table[table["fraction"] == f]["train_patients"].iloc[0]) for f in fracs}
    head = ["arm"] + [f"{100 * f:g} % ({n_pat[f]} pts)" for f in fracs] + ["rho_truth"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for arm in study.arms:
        sub = table[table["arm"] == arm].set_index("fraction")
        cells = [arm] + [f"{sub.at[f, 'mean_auroc']:.3f} ± {sub.at[f, 'sd_auroc']:.3f}" for f in fracs]
        rho = sub["rho_truth"].iloc[0]
        cells.append("-" if not math.isfinite(rho) else f"{rho:.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _label_markdown(long: pd.DataFrame, study: StudyConfig, ceiling: dict[str, float] | None = None) -> str:
    """Per-label test AUROC at the largest fraction (mean over units), every label including saturated
    ones; a last row with the Bayes ceiling of the labels that have one."""
    frac = max(study.label_fractions)
    by = long[long["fraction"] == frac].groupby(["arm", "label"])["auroc"].mean().unstack()
    labels = list(long["label"].drop_duplicates())
    lines = ["", f"Per label at {100 * frac:g} % labels:", "", "| arm | " + " | ".join(labels) + " |",
             "|" + "|".join("---" for _ in range(len(labels) + 1)) + "|"]
    for arm in study.arms:
        lines.append(f"| {arm} | " + " | ".join(f"{by.at[arm, c]:.3f}" for c in labels) + " |")
    if ceiling:
        lines.append("| Bayes ceiling (true h) | " + " | ".join(f"{ceiling[c]:.3f}" if c in ceiling else "-" for c in labels)
                     + " |")
    return "\n".join(lines) + "\n"


DIAGNOSTIC_ROWS = (("risk known (patients) / both known (pairs)", ("risk_known", "pairs_with_risk")),
                   ("mean weight known-known / known-unknown / unknown-unknown",
                    ("mean_w_known_known", "mean_w_known_unknown", "mean_w_unknown_unknown")),
                   ("Spearman weight vs risk difference (known pairs) / vs completeness product",
                    ("spearman_w_riskdiff", "spearman_w_completeness")),
                   ("gradient cosine true vs placebo / vs placebo_known", ("grad_cosine_placebo", "grad_cosine_placebo_known")),
                   ("clinical part (g - g_NT-Xent) cosine vs placebo / vs placebo_known",
                    ("clinical_cosine_placebo", "clinical_cosine_placebo_known")),
                   ("share of the gradient the true risks decide", ("grad_change_placebo_known",)))


def _diagnostics_markdown(diagnostics: dict[str, dict[str, float]]) -> str:
    """The weight diagnostics of the pretraining batches (diagnostics.json) as a table, one column per setting."""
    if not diagnostics:
        return ""
    names = list(diagnostics)
    lines = ["", "Weight diagnostics of the pretraining batches (`clef diagnose`, random-init encoder; "
             "docs/evaluation.md, \"Weights that act on risk\"):", "",
             "| statistic | " + " | ".join(names) + " |", "|" + "|".join("---" for _ in range(len(names) + 1)) + "|"]
    for title, keys in DIAGNOSTIC_ROWS:
        cells = [" / ".join("-" if not math.isfinite(diagnostics[n].get(k, math.nan)) else f"{diagnostics[n][k]:.3g}"
                            for k in keys) for n in names]
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _mitdb_markdown(mt: pd.DataFrame, study: StudyConfig, info: dict[str, Any]) -> str:
    lines = ["", f"MIT-BIH DS1 as 10 s window tasks ({info['windows']} windows every {info['stride_s']:g} s of "
             f"{info['records']} records, MLII; positives {info['positive_windows']}): AUROC of a logistic probe "
             "(evaluate.probe_l2), 5-fold cross-validation by record, mean ± SD over seeds:", "",
             "| arm | " + " | ".join(WINDOW_LABELS) + " |", "|" + "|".join("---" for _ in range(len(WINDOW_LABELS) + 1)) + "|"]
    for arm in study.arms:
        sub = mt[mt["arm"] == arm]
        cells = [mean_sd(sub[c]) for c in WINDOW_LABELS]
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _label_differences_markdown(label_diffs: pd.DataFrame, summary: dict, study: StudyConfig) -> str:
    """The representation headline and every label alone: one row per comparison and fraction, a
    "difference [95 % CI]" cell per label set; "" when no comparison has both arms."""
    if label_diffs.empty:
        return ""
    sets = list(label_diffs["labels"].drop_duplicates())
    rep = ", ".join(summary["representation_labels"])
    head = ["comparison", "fraction"] + [f"representation ({rep})" if s == "representation" else s for s in sets]
    lines = ["", "## Representation: pretrained vs random init, per label", "",
             "| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    cells = label_diffs.set_index(["comparison", "fraction", "labels"])
    for comparison, frac in label_diffs[["comparison", "fraction"]].drop_duplicates().itertuples(index=False):
        row = [comparison, f"{100 * frac:g} %"]
        for s in sets:
            r = cells.loc[(comparison, frac, s)]
            row.append(f"{r['diff']:+.3f} [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]")
        lines.append("| " + " | ".join(row) + " |")
    left = [f"computed from the risk score CLEF reads (study.risk_derived_labels): "
            f"{', '.join(summary['risk_derived_labels']) or 'none'}"]
    saturated = [c for c in summary["saturated_labels"] if c not in summary["risk_derived_labels"]]
    left.append(f"saturated (median AUROC over all arms at {100 * max(study.label_fractions):g} % labels >= "
                f"{study.saturated_auroc:g}, study.saturated_auroc, the same rule for every arm): "
                f"{', '.join(saturated) or 'none'}")
    return "\n".join(lines) + (f"\n\nRepresentation headline: mean test AUROC over the scored labels ({rep or 'none left'}) "
                               f"less those {'; less those '.join(left)}. Every scored label is shown alone beside it. "
                               "Pairing and bootstrap as above.\n")


def _differences_markdown(diffs: pd.DataFrame, labels: list[str]) -> str:
    lines = ["| comparison | fraction | difference | 95 % CI | P(boot > 0) | units |", "|---|---|---|---|---|---|"]
    for r in diffs.itertuples(index=False):
        lines.append(f"| {r.comparison} | {100 * r.fraction:g} % | {r.diff:+.4f} | [{r.ci_low:+.4f}, {r.ci_high:+.4f}] | "
                     f"{r.p_above_0:.2f} | {r.units} |")
    return "\n".join(lines) + (f"\n\nPaired differences of the headline AUROC (mean over {', '.join(labels)}), same seed, "
                               "labelled patients and test patients; percentile CI from resampling the units (seed x "
                               "subsample) and the test patients.\n")
