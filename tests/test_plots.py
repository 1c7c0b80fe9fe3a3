"""The figures a researcher would publish: legends, chance lines, per-task curves, stated error bars."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from clef_core.evaluation.plots import draw_similarity_vs_risk, task_scores  # noqa: E402
from simulations.summary import _loss_panel, _probe_panel, summarise  # noqa: E402


def rounds(n: int = 4) -> list[dict]:
    rows = []
    for r in range(1, n + 1):
        row = {"round": r, "train_loss": 0.3 - 0.02 * r, "accepted": 2, "sampled": 2,
               "sites": [{"node_id": i, "site": f"site-{i}", "status": "accepted", "train_loss": 0.3 - 0.02 * r + 0.01 * i}
                         for i in range(2)]}
        for label, (pos, neg) in {"af": (10, 40), "lvh": (20, 30)}.items():
            row[f"probe_auroc.{label}"], row[f"probe_pos.{label}"], row[f"probe_neg.{label}"] = 0.6 + 0.05 * r, pos, neg
        row["probe_auroc"] = 0.6 + 0.05 * r
        rows.append(row)
    rows[0]["probe_auroc_initial"] = 0.52
    rows[0]["probe_initial"] = {"probe_auroc": 0.52, "probe_auroc.af": 0.5, "probe_pos.af": 10, "probe_neg.af": 40,
                                "probe_auroc.lvh": 0.54, "probe_pos.lvh": 20, "probe_neg.lvh": 30}
    return rows


def legend_texts(ax) -> list[str]:
    return [t.get_text() for t in ax.get_legend().get_texts()]


def test_summary_panels_have_legends_per_label_curves_ci_and_chance(tmp_path: Path) -> None:
    fig, (left, right) = plt.subplots(1, 2)
    _loss_panel(left, rounds())
    assert {"site-0", "site-1", "all sites (weighted by patients)"} <= set(legend_texts(left))
    assert _probe_panel(right, rounds())
    texts = legend_texts(right)
    assert "af (10+/40-)" in texts and "lvh (20+/30-)" in texts and "chance (0.5)" in texts
    assert "95 % CI" in right.get_title() and "untrained encoder (round 0): 0.520" in texts
    assert left.get_ylim()[0] == 0  # the loss axis starts at zero: noise is not magnified
    bars = [c for c in right.containers if getattr(c, "has_yerr", False)]
    assert len(bars) == 2  # one error-bar series per label
    assert all(min(line.get_xdata()) < 0.5 for line in (b.lines[0] for b in bars))  # each label starts at round 0
    plt.close(fig)
    flat = rounds()
    for row in [flat[0]["probe_initial"], *flat]:
        row["probe_auroc.lvh"] = 0.5  # a probe that never separates anything
    fig, ax = plt.subplots()
    _probe_panel(ax, flat)
    assert "lvh (20+/30-), degenerate: AUROC 0.5 every round" in legend_texts(ax)
    plt.close(fig)
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rounds()))
    text, png = summarise(tmp_path)
    assert png.read_bytes()[:4] == b"\x89PNG" and "round" in text


def test_similarity_plot_stays_within_the_cosine_range() -> None:
    # pairs very alike: mean + SD would pass 1, the quartiles cannot
    bins = {"truth": [{"lo": 0.0, "hi": 0.02, "n_pairs": 50, "mean_similarity": 0.97, "sd_similarity": 0.08,
                       "q25_similarity": 0.95, "median_similarity": 0.99, "q75_similarity": 1.0}]}
    fig, ax = plt.subplots()
    draw_similarity_vs_risk(ax, bins)
    assert ax.get_ylim()[1] <= 1.0
    for line in ax.get_lines():
        assert max(line.get_ydata(), default=0) <= 1.0
    assert "quartile" in ax.get_ylabel() and legend_texts(ax)[0].startswith("truth risk (50 pairs in 1 equal-count bins")
    plt.close(fig)


def test_task_figure_compares_with_the_untrained_encoder(tmp_path: Path) -> None:
    rows = [{"task": "synthetic_I", "metric": "mean AUROC", "trained": 0.8, "ci_trained": 0.05, "untrained": 0.7,
             "ci_untrained": 0.06},
            {"task": "snomed_dx_I [too small]", "metric": "mean AUROC", "trained": 0.45, "ci_trained": 0.3,
             "untrained": None, "ci_untrained": None}]
    assert task_scores(rows, tmp_path / "t.png", title="t").read_bytes()[:4] == b"\x89PNG"
