"""Hyper-parameter sweeps (alpha, tau, the loss ratio, ...): pretrain + evaluate per grid point.

A grid is a list of ``"section.key=v1,v2,..."`` strings (values parsed as TOML literals); the
points are their Cartesian product, each applied over the base config (unknown keys are
errors). Per point: pretrain on the pretraining cohort into ``OUT/points/<name>`` (itself
resumable), then the synthetic-label linear probe and the embedding-risk Spearman on the
evaluation cohort; the point's ``result.json`` is written last, so a finished point is skipped
when the sweep is run again and an interrupted one resumes. ``sweep.csv`` / ``sweep.md``
tabulate every finished point.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from clef_core.atomic import write_json_atomic
from clef_core.config import ConfigError, merge, parse_value, unflatten
from clef_core.run_folder import json_safe

RESULT_FILE = "result.json"


def parse_grid(items: Iterable[str]) -> list[tuple[str, list[Any]]]:
    """``["loss.alpha=0.1,0.2"]`` -> ``[("loss.alpha", [0.1, 0.2])]``; a key given twice is an error."""
    grid: list[tuple[str, list[Any]]] = []
    for item in items:
        if "=" not in item:
            raise ConfigError(f"sweep grid entry '{item}' is not of the form section.key=v1,v2,...")
        key, text = (s.strip() for s in item.split("=", 1))
        if "." not in key:
            raise ConfigError(f"sweep grid key '{key}' must be section.key")
        if any(key == k for k, _ in grid):
            raise ConfigError(f"sweep grid key '{key}' given twice")
        values = [parse_value(v.strip()) for v in text.split(",") if v.strip()]
        if not values:
            raise ConfigError(f"sweep grid entry '{item}' has no values")
        grid.append((key, values))
    return grid


def grid_points(grid: Sequence[tuple[str, list[Any]]]) -> list[dict[str, Any]]:
    """Every combination, as flat ``{"section.key": value}`` dicts, in grid order."""
    keys = [k for k, _ in grid]
    return [dict(zip(keys, combo)) for combo in itertools.product(*(v for _, v in grid))]


def point_name(point: dict[str, Any]) -> str:
    """A folder name for a point, e.g. ``alpha=0.2,tau=0.07`` (the key's last part; safe characters)."""
    parts = [f"{key.split('.')[-1]}={value}" for key, value in point.items()]
    return re.sub(r"[^A-Za-z0-9_.=,+-]", "_", ",".join(parts)) or "base"


def point_config(cfg: dict[str, Any], point: dict[str, Any]) -> dict[str, Any]:
    return merge(cfg, unflatten(point), strict=True)


def run_sweep(
    cfg: dict[str, Any],
    grid: Sequence[tuple[str, list[Any]]],
    out_dir: str | Path,
    evaluate_point: Callable[[dict[str, Any], Path], dict[str, Any]],
    *,
    on_point: Callable[[str, dict[str, Any], bool], None] | None = None,
) -> pd.DataFrame:
    """Run ``evaluate_point(point_cfg, point_dir) -> metrics`` for every unfinished point, then
    write and return the table (one row per point: its values, then its metrics)."""
    out = Path(out_dir)
    points = grid_points(grid)
    for p in points:  # validate every point before any training
        point_config(cfg, p)
    rows = []
    for point in points:
        folder = out / "points" / point_name(point)
        result_path = folder / RESULT_FILE
        done = result_path.is_file()
        if not done:
            folder.mkdir(parents=True, exist_ok=True)
            metrics = evaluate_point(point_config(cfg, point), folder)
            write_json_atomic(result_path, json_safe({"point": point, "metrics": metrics}))
        saved = json.loads(result_path.read_text(encoding="utf-8"))
        if saved.get("point") != point:
            raise ValueError(f"{result_path} belongs to point {saved.get('point')}, expected {point}")
        if on_point is not None:
            on_point(point_name(point), saved["metrics"], done)
        rows.append({**point, **saved["metrics"]})
    table = pd.DataFrame(rows)
    write_table(table, out, [k for k, _ in grid])
    return table


def write_table(table: pd.DataFrame, out: Path, keys: Sequence[str]) -> None:
    table.to_csv(out / "sweep.csv", index=False)
    cols = list(table.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for _, row in table.iterrows():
        lines.append("| " + " | ".join(_cell(row[c]) for c in cols) + " |")
    (out / "sweep.md").write_text(
        f"# Sweep over {', '.join(keys)}\n\n" + "\n".join(lines) + "\n", encoding="utf-8")


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return "-" if math.isnan(v) else f"{v:.4g}"
    return str(v)
