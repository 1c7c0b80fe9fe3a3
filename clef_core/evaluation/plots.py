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
    """Mean cosine similarity (+- SD) against the bin centre of |risk difference|, one line per risk source."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4), dpi=110)
    for name, rows in bins.items():
        if not rows:
            continue
        centre = [100 * (r["lo"] + r["hi"]) / 2 for r in rows]
        mean = np.array([r["mean_similarity"] for r in rows])
        sd = np.array([r["sd_similarity"] for r in rows])
        ax.errorbar(centre, mean, yerr=sd, marker="o", ms=3, capsize=2, label=name)
    ax.set_xlabel("|risk difference| of the pair (percentage points, bin centre)")
    ax.set_ylabel("cosine similarity of embeddings")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
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
