"""PNG figures of the evaluation (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def embedding_map(coords: np.ndarray, risk: np.ndarray, path: str | Path, *, title: str, explained: list[float]) -> Path:
    """Scatter of the 2-D map coloured by risk (grey: risk unknown)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4.5), dpi=110)
    known = np.isfinite(risk)
    ax.scatter(coords[~known, 0], coords[~known, 1], s=6, c="lightgrey", label="risk unknown")
    sc = ax.scatter(coords[known, 0], coords[known, 1], s=8, c=100 * risk[known], cmap="viridis")
    if known.any():
        fig.colorbar(sc, ax=ax, label="10-year risk (%)")
    ax.set_xlabel(f"PC1 ({100 * explained[0]:.1f} %)")
    ax.set_ylabel(f"PC2 ({100 * explained[1]:.1f} %)")
    ax.set_title(title, fontsize=9)
    if (~known).any():
        ax.legend(loc="best", fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def similarity_vs_risk(bins: dict[str, list[dict[str, Any]]], path: str | Path, *, title: str) -> Path:
    """similarity_vs_risk PNG (:func:`draw_similarity_vs_risk`)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.2), dpi=110)
    draw_similarity_vs_risk(ax, bins)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def draw_similarity_vs_risk(ax: Any, bins: dict[str, list[dict[str, Any]]]) -> None:
    """Median cosine similarity of the pairs in each |risk difference| bin, bars from the first to
    the third quartile (they stay within [-1, 1], unlike mean +- SD), one line per risk source."""
    sources = [name for name, rows in bins.items() if rows]
    for k, name in enumerate(sources):
        rows = bins[name]
        shift = (k - (len(sources) - 1) / 2) * 0.15  # side by side, so overlapping bars stay readable
        centre = np.array([100 * (r["lo"] + r["hi"]) / 2 for r in rows]) + shift
        median = np.array([r["median_similarity"] for r in rows])
        spread = [median - np.array([r["q25_similarity"] for r in rows]),
                  np.array([r["q75_similarity"] for r in rows]) - median]
        pairs = sum(r["n_pairs"] for r in rows)
        ax.errorbar(centre, median, yerr=spread, marker="o", ms=3, capsize=2,
                    label=f"{name} risk ({pairs} pairs in {len(rows)} equal-count bins)")
    ax.set_xlabel("|risk difference| of the pair (percentage points, bin centre)")
    ax.set_ylabel("cosine similarity of embeddings\n(median, bars: 1st-3rd quartile)")
    top = max([r["q75_similarity"] for name in sources for r in bins[name]], default=1.0)
    low = min([r["q25_similarity"] for name in sources for r in bins[name]], default=-1.0)
    ax.set_ylim(max(-1.0, low - 0.05), min(1.0, top + 0.05))
    if sources:
        ax.legend(fontsize=7)
    ax.grid(alpha=0.3)


def task_scores(rows: list[dict[str, Any]], path: str | Path, *, title: str) -> Path:
    """The AUROC of every task for the trained encoder and its untrained baseline, side by side,
    with 95 % confidence intervals (Hanley & McNeil 1982; for a task of several labels the mean of
    the labels' half-widths, an upper bound) and the chance line at 0.5.

    ``rows``: ``{"task", "metric", "trained", "untrained", "ci_trained", "ci_untrained"}`` (None
    where unknown).
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 2.2 + 0.5 * max(len(rows), 1)), dpi=110)
    y = np.arange(len(rows))[::-1]

    def column(key: str) -> np.ndarray:
        return np.array([np.nan if r.get(key) is None else r[key] for r in rows], dtype=float)

    trained, untrained = column("trained"), column("untrained")
    ax.barh(y + 0.18, trained, height=0.34, xerr=np.nan_to_num(column("ci_trained")), capsize=2, color="tab:blue",
            label="pretrained encoder")
    if np.isfinite(untrained).any():
        ax.barh(y - 0.18, untrained, height=0.34, xerr=np.nan_to_num(column("ci_untrained")), capsize=2,
                color="tab:gray", label="untrained encoder (same architecture, random weights)")
    ax.axvline(0.5, color="tab:red", ls=":", lw=1.2, label="chance (0.5)")
    ax.set_yticks(y, [f"{r['task']} ({r['metric']})" for r in rows], fontsize=8)
    ax.set_xlim(0.0, 1.0)
    ax.set_xlabel("AUROC (error bars: 95 % CI, Hanley & McNeil)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=2, frameon=False)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def label_efficiency(table: Any, diffs: Any, path: str | Path, *, title: str) -> Path:
    """Left: headline AUROC (+- SD) against the labelled share, one line per arm; right: the paired
    differences with their bootstrap CIs."""
    plt = _pyplot()
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=110)
    for arm, sub in table.groupby("arm", sort=False):
        ax.errorbar(100 * sub["fraction"], sub["mean_auroc"], yerr=sub["sd_auroc"], marker="o", ms=3, capsize=2, label=arm)
    ax.set_xscale("log")
    ax.set_xlabel("labelled share of the pool (%)")
    ax.set_ylabel("test AUROC (headline)")
    ax.set_title(title, fontsize=8)
    ax.legend(fontsize=7)
    for k, (name, sub) in enumerate(diffs.groupby("comparison", sort=False)):
        x = 100 * sub["fraction"].to_numpy() * (1 + 0.06 * (k - 1.5))
        err = np.vstack([sub["diff"] - sub["ci_low"], sub["ci_high"] - sub["diff"]])
        bx.errorbar(x, sub["diff"], yerr=err, marker="o", ms=3, capsize=2, label=name)
    bx.axhline(0, color="grey", lw=0.8)
    bx.set_xscale("log")
    bx.set_xlabel("labelled share of the pool (%)")
    bx.set_ylabel("paired AUROC difference (95 % CI)")
    bx.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)
