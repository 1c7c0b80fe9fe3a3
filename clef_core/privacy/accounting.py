"""Epsilon of a history of sampled Gaussian mechanisms (DP-SGD steps), by RDP accounting.

A DP-SGD step with Poisson sampling rate q and noise multiplier sigma is the sampled Gaussian
mechanism; its Renyi DP at order alpha is computed exactly for integer and fractional orders
(Mironov, Talwar, Zhang 2019, "Renyi Differential Privacy of the Sampled Gaussian Mechanism"),
composed additively over steps and converted to (eps, delta) with the improved conversion of
Balle et al. 2020 (as Opacus' ``RDPAccountant``, whose analysis this module calls).
Adjacency: add or remove one patient.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable

from opacus.accountants import RDPAccountant

Step = tuple[float, float, int]  # (noise_multiplier, sample_rate, steps)


def epsilon(history: Iterable[Step], delta: float) -> float:
    """Cumulative epsilon at ``delta`` of every (sigma, q, steps) entry in ``history``
    (0.0 for an empty history)."""
    acct = RDPAccountant()
    for sigma, q, steps in history:
        if steps < 0 or not 0 < q <= 1 or sigma <= 0:
            raise ValueError(f"accounting: invalid step entry (noise {sigma}, sample rate {q}, steps {steps})")
        if steps:
            acct.history.append((float(sigma), float(q), int(steps)))
    if not acct.history:
        return 0.0
    # the conversion can go below 0 for a large delta; any epsilon >= the bound holds, 0 included
    return max(0.0, float(acct.get_epsilon(delta)))


def steps_per_epoch(sample_rate: float) -> int:
    """Poisson batches that make one expected pass: round(1 / q) (as Opacus' DPDataLoader)."""
    return max(1, round(1.0 / sample_rate))


def sample_rate(patients: int, expected_batch: int) -> float:
    """q = min(1, expected batch / patients)."""
    if patients < 1:
        raise ValueError("sample_rate: a site needs at least one patient")
    return min(1.0, expected_batch / patients)


def noise_for_epsilon(target: float, q: float, steps: int, delta: float, *, lo: float = 0.3, hi: float = 50.0) -> float:
    """The smallest noise multiplier (to 1e-6 relative, by bisection in log sigma on the accountant
    above) whose epsilon after ``steps`` steps at rate ``q`` is <= ``target``; ValueError when even
    ``hi`` spends more than ``target``."""
    if not target > 0:
        raise ValueError(f"accounting: target epsilon must be > 0, got {target}")
    with warnings.catch_warnings():  # Opacus warns when a trial sigma's best alpha is its largest: trials only bound the search
        warnings.simplefilter("ignore", UserWarning)
        return _bisect_noise(target, q, steps, delta, lo, hi)


def _bisect_noise(target: float, q: float, steps: int, delta: float, lo: float, hi: float) -> float:
    if epsilon([(hi, q, steps)], delta) > target:
        raise ValueError(f"accounting: epsilon {target} at q = {q}, {steps} steps needs a noise multiplier above {hi}")
    while lo > 1e-3 and epsilon([(lo, q, steps)], delta) <= target:
        lo /= 2
    for _ in range(60):
        if hi / lo < 1 + 1e-6:
            break
        mid = (lo * hi) ** 0.5
        lo, hi = (mid, hi) if epsilon([(mid, q, steps)], delta) > target else (lo, mid)
    return hi
