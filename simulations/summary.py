"""The end-of-run summary of a federated run folder: a per-round table and a PNG.

Reads only ``metrics.jsonl`` (:mod:`clef_core.run_folder`), so it works on any run folder, finished
or not. The plot has the train loss per round of every site and of the federation and, when the
server probed a held-out set, the linear-probe AUROC per label with its 95 % confidence interval
(Hanley & McNeil 1982, from the label's positives and negatives), their mean, and chance.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from clef_core.evaluation.metrics import auroc_ci95_halfwidth
from clef_core.run_folder import RunFolder

PLOT = "summary.png"


def read_rounds(run: Path) -> list[dict[str, Any]]:
    return RunFolder(run).read_metrics()


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def round_table(rows: Sequence[dict[str, Any]]) -> str:
    private = any(r.get("epsilon") is not None for r in rows)
    header = f"{'round':>5} {'train_loss':>10} {'lr':>9} {'sites ok':>8} {'failed':>6} {'rejected':>8} " \
             f"{'MB sent':>8} {'MB recv':>8} {'probe':>6} {'sec':>6}" + (f" {'epsilon':>8}" if private else "")
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r['round']:>5} {_fmt(r.get('train_loss'), '10.4f')} {_fmt(r.get('lr'), '9.2e')} "
            f"{r.get('accepted', 0):>4}/{r.get('sampled', 0):<3} {r.get('failed', 0):>6} {r.get('rejected', 0):>8} "
            f"{r.get('bytes_sent', 0) / 1e6:>8.2f} {r.get('bytes_received', 0) / 1e6:>8.2f} "
            f"{_fmt(r.get('probe_auroc'), '6.3f')} {_fmt(r.get('seconds'), '6.1f')}"
            + (f" {_fmt(r.get('epsilon'), '8.2f')}" if private else ""))
    return "\n".join(lines)


def site_table(rows: Sequence[dict[str, Any]]) -> str:
    """Per site over the run: rounds accepted / not, mean loss, patients, skipped records."""
    per: dict[str, dict[str, Any]] = {}
    for r in rows:
        for s in r.get("sites", []):
            name = s.get("site", f"node-{s['node_id']}")
            entry = per.setdefault(name, {"ok": 0, "bad": 0, "loss": [], "patients": None, "skipped": 0.0,
                                          "reasons": set()})
            if s["status"] == "accepted":
                entry["ok"] += 1
                entry["loss"].append(s.get("train_loss"))
                entry["patients"] = s.get("num-examples")
                entry["skipped"] = sum(v for k, v in s.items() if k.startswith("skipped.") and v)
            else:
                entry["bad"] += 1
                entry["reasons"].add(f"{s['status']}: {s.get('reason', '')}".rstrip(": "))
    header = f"{'site':<24} {'rounds ok':>9} {'not ok':>6} {'patients':>8} {'skipped':>7} {'mean loss':>9}  notes"
    lines = [header, "-" * len(header)]
    for name in sorted(per):
        e = per[name]
        losses = [x for x in e["loss"] if x is not None]
        mean = sum(losses) / len(losses) if losses else None
        lines.append(f"{name:<24} {e['ok']:>9} {e['bad']:>6} {_fmt(e['patients'], '8.0f')} {e['skipped']:>7.0f} "
                     f"{_fmt(mean, '9.4f')}  {'; '.join(sorted(e['reasons']))}")
    return "\n".join(lines)


def probe_labels(rows: Sequence[dict[str, Any]]) -> list[str]:
    return sorted({k.split(".", 1)[1] for r in rows for k in r if k.startswith("probe_auroc.")})


def _loss_panel(ax: Any, rows: Sequence[dict[str, Any]]) -> None:
    rounds = [r["round"] for r in rows]
    sites = sorted({s.get("site", "?") for r in rows for s in r.get("sites", []) if s.get("status") == "accepted"})
    for name in sites:
        points = [(r["round"], s["train_loss"]) for r in rows for s in r.get("sites", [])
                  if s.get("site", "?") == name and s.get("status") == "accepted" and s.get("train_loss") is not None]
        if points:
            ax.plot(*zip(*points), lw=0.8, alpha=0.6, marker=".", label=name)
    ax.plot(rounds, [r.get("train_loss") for r in rows], marker="o", color="black", lw=2,
            label="all sites (weighted by patients)")
    evals = [(r["round"], r["eval"]["eval_loss"]) for r in rows if (r.get("eval") or {}).get("eval_loss") is not None]
    if evals:
        ax.plot(*zip(*evals), marker="s", ls="--", color="tab:gray", label="global model, sites' own data")
    ax.set_ylim(bottom=0)  # from zero: round-to-round noise of a flat loss must not look like learning
    ax.set_xlabel("round")
    ax.set_ylabel("CLEF loss (local training)")
    ax.set_title("training loss per round", fontsize=10)
    ax.legend(fontsize=7, loc="best")


def _probe_panel(ax: Any, rows: Sequence[dict[str, Any]]) -> bool:
    """Per-label probe AUROC with 95 % CIs, their mean, and chance; False when nothing was probed."""
    labels = probe_labels(rows)
    if not labels:
        return False
    start = [{**rows[0]["probe_initial"], "round": 0}] if rows[0].get("probe_initial") else []
    for k, label in enumerate(labels):
        pts = [r for r in start + list(rows) if r.get(f"probe_auroc.{label}") is not None]
        x = [r["round"] + (k - (len(labels) - 1) / 2) * 0.06 for r in pts]  # side by side: bars stay readable
        y = [r[f"probe_auroc.{label}"] for r in pts]
        counted = all(f"probe_pos.{label}" in r for r in pts)
        err = [auroc_ci95_halfwidth(r[f"probe_auroc.{label}"], r[f"probe_pos.{label}"], r[f"probe_neg.{label}"])
               for r in pts] if counted else None
        n = f" ({int(pts[-1][f'probe_pos.{label}'])}+/{int(pts[-1][f'probe_neg.{label}'])}-)" if counted else ""
        degenerate = ", degenerate: AUROC 0.5 every round" if all(v == 0.5 for v in y) else ""
        ax.errorbar(x, y, yerr=err, marker=".", lw=0.9, capsize=2, alpha=0.8, label=f"{label}{n}{degenerate}")
    mean = [(r["round"], r["probe_auroc"]) for r in rows if r.get("probe_auroc") is not None]
    initial = [(0, r["probe_auroc_initial"]) for r in rows[:1] if r.get("probe_auroc_initial") is not None]
    ax.plot(*zip(*(initial + mean)), marker="o", color="black", lw=2, label="mean over labels")
    if initial:
        ax.axhline(initial[0][1], color="tab:gray", ls="--", lw=1.2,
                   label=f"untrained encoder (round 0): {initial[0][1]:.3f}")
    ax.axhline(0.5, color="tab:red", ls=":", lw=1.2, label="chance (0.5)")
    ax.set_ylim(min(0.3, *(v for _, v in mean)) - 0.02, 1.0)
    ax.set_xlabel("round")
    ax.set_ylabel("linear-probe AUROC, held-out patients")
    ax.set_title("held-out linear probe per label (round 0: before training; bars: 95 % CI)", fontsize=10)
    ax.legend(fontsize=7, loc="best")
    return True


def plot(rows: Sequence[dict[str, Any]], out: Path) -> Path | None:
    """Two panels: the loss per round (every site and the federation) and the held-out probe
    AUROC per label with 95 % CIs (Hanley & McNeil), their mean and the chance line."""
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    probed = bool(probe_labels(rows))
    fig, axes = plt.subplots(1, 2 if probed else 1, figsize=(11 if probed else 6, 4.2), dpi=110, squeeze=False)
    _loss_panel(axes[0][0], rows)
    if probed:
        _probe_panel(axes[0][1], rows)
    for ax in axes[0]:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    fig.suptitle(f"federated CLEF pretraining, {len(rows)} rounds", fontsize=11)
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out)
    plt.close(fig)
    return out


def summarise(run: Path) -> tuple[str, Path | None]:
    """The printable summary of ``run`` and the path of its plot (written to ``run/summary.png``)."""
    rows = read_rounds(run)
    if not rows:
        return f"{run}: no completed round yet", None
    text = round_table(rows) + "\n\n" + site_table(rows)
    return text, plot(rows, Path(run) / PLOT)
