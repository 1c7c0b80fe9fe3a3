"""The end-of-run summary of a federated run folder: a per-round table and a PNG.

Reads only ``metrics.jsonl`` (:mod:`server.checkpoint`), so it works on any run folder, finished
or not. The plot has the aggregated train loss per round and, when the server probed a held-out
set, the linear-probe AUROC per round.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

PLOT = "summary.png"


def read_rounds(run: Path) -> list[dict[str, Any]]:
    path = Path(run) / "metrics.jsonl"
    if not path.is_file():
        return []
    rows = []
    for text in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(text))
        except json.JSONDecodeError:
            continue
    return rows


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


def plot(rows: Sequence[dict[str, Any]], out: Path) -> Path | None:
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    rounds = [r["round"] for r in rows]
    fig, ax = plt.subplots(figsize=(6.4, 3.8), dpi=110)
    ax.plot(rounds, [r.get("train_loss") for r in rows], marker="o", color="tab:blue", label="train loss (aggregated)")
    ax.set_xlabel("round")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("CLEF train loss", color="tab:blue")
    probe = [(0, r["probe_auroc_initial"]) for r in rows[:1] if r.get("probe_auroc_initial") is not None]
    probe += [(r["round"], r["probe_auroc"]) for r in rows if r.get("probe_auroc") is not None]
    if probe:
        ax2 = ax.twinx()
        ax2.plot([p[0] for p in probe], [p[1] for p in probe], marker="s", color="tab:red",
                 label="linear-probe AUROC (held out)")
        ax2.set_ylabel("probe AUROC", color="tab:red")
        ax2.set_ylim(0.4, 1.0)
    ax.set_title("federated CLEF pretraining")
    ax.grid(alpha=0.3)
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
