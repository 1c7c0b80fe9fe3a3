"""SCORE2 on a MIMIC-IV-ECG-sized cohort: the vectorised frame vs the scalar function in a loop.

    .venv/bin/python benchmarks/bench_score2.py [--patients 161000] [--loop 5000]

The scalar loop runs on a subsample and is extrapolated to the whole cohort. Both wall-clock and
process CPU time are printed: on a shared machine the CPU figure is the fair one.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from clef_core.score2 import REGIONS, risk_frame, score2, score2_frame


def cohort(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "age": rng.integers(40, 90, n).astype(float),
            "sex": rng.choice(["male", "female"], n),
            "sbp": rng.normal(132, 18, n).clip(80, 240),
            "total_chol": rng.normal(5.1, 1.0, n).clip(2.0, 10.0),
            "hdl": rng.normal(1.35, 0.35, n).clip(0.4, 3.0),
            "smoking": (rng.random(n) < 0.2).astype(float),
            "diabetes": (rng.random(n) < 0.15).astype(float),
        }
    )


def timed(fn, *args, **kwargs):
    """(result, wall seconds, CPU seconds)."""
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - w0, time.process_time() - c0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=161_000)
    parser.add_argument("--loop", type=int, default=5_000, help="patients scored one by one (extrapolated)")
    parser.add_argument("--region", default="low", choices=REGIONS)
    args = parser.parse_args()

    df = cohort(args.patients)
    score2_frame(df.head(100), args.region)  # warm-up
    vec, t_vec, c_vec = timed(score2_frame, df, args.region)

    messy = df.copy()
    rng = np.random.default_rng(1)
    for col in ("sbp", "total_chol", "hdl", "smoking"):
        messy.loc[rng.random(len(messy)) < 0.3, col] = np.nan
    _, t_policy, c_policy = timed(risk_frame, messy, policy="impute_reference", region=args.region)

    sub = df.head(args.loop)
    def scalar_loop():
        return [score2(r.age, r.sex, r.sbp, r.total_chol, r.hdl, int(r.smoking), int(r.diabetes), args.region) for r in sub.itertuples()]

    loop, t_loop, c_loop = timed(scalar_loop)
    t_loop, c_loop = t_loop * len(df) / len(sub), c_loop * len(df) / len(sub)
    assert np.allclose(loop, vec["risk"].to_numpy()[: len(sub)], rtol=1e-12)

    print(f"patients: {len(df):,}  region: {args.region}")
    print(f"{'':48s} {'wall s':>8s} {'CPU s':>8s}")
    print(f"{'vectorised score2_frame':48s} {t_vec:8.3f} {c_vec:8.3f}")
    print(f"{'vectorised risk_frame (30% missing, impute)':48s} {t_policy:8.3f} {c_policy:8.3f}")
    print(f"{f'scalar score2 loop (extrapolated from {len(sub):,})':48s} {t_loop:8.3f} {c_loop:8.3f}")
    print(f"speed-up (scalar loop / vectorised): {t_loop / t_vec:,.0f}x wall, {c_loop / c_vec:,.0f}x CPU")


if __name__ == "__main__":
    main()
