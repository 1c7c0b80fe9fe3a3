"""Epsilon of a history of sampled Gaussian mechanisms (DP-SGD steps), by RDP accounting.

A DP-SGD step with Poisson sampling rate q and noise multiplier sigma is the sampled Gaussian
mechanism; its Renyi DP at order alpha is computed exactly for integer and fractional orders
(Mironov, Talwar, Zhang 2019, "Renyi Differential Privacy of the Sampled Gaussian Mechanism"),
composed additively over steps and converted to (eps, delta) with the improved conversion of
Balle et al. 2020 (as Opacus' ``RDPAccountant``, whose analysis this module calls).

Adjacency. The sampled Gaussian mechanism's RDP (:func:`rdp_add_remove`) is for add/remove-one
(equivalently, replace one patient by a patient whose clipped gradient is zero). A site sends its
patient count n every round (it sets q = batch / n and FedAvg's weight), so the adjacency that
fits what it releases is **replace-one**: two sites of the same n whose data differ in one
patient. Replace-one is two replace-with-zero steps, D -> D0 -> D', and Mironov 2017
("Renyi Differential Privacy", Proposition 11, the weak triangle inequality with p = q = 2) bounds
it from the add/remove curve of the whole history::

    eps_replace(alpha) <= (alpha - 1/2) / (alpha - 1) * eps_ar(2 alpha) + eps_ar(2 alpha - 1)

:func:`epsilon` with ``adjacency="replace_one"`` (what a site's ledger reports, :data:`SITE_ADJACENCY`)
converts that bound; ``"add_remove"`` is the textbook DP-SGD figure (benchmarks' calibrations).
The per-step curve of each distinct (sigma, q) is computed once per process (it is linear in the
number of steps), so composing a long ledger costs one multiply-add per entry.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Iterable

import numpy as np
from opacus.accountants import RDPAccountant
from opacus.accountants.analysis.rdp import compute_rdp, get_privacy_spent

Step = tuple[float, float, int]  # (noise_multiplier, sample_rate, steps)
ADJACENCIES = ("add_remove", "replace_one")
SITE_ADJACENCY = "replace_one"  # n is released: docs/privacy.md, "The guarantee"
ORDERS = np.asarray(RDPAccountant.DEFAULT_ALPHAS, dtype=float)  # alpha > 1
# the add/remove curve is needed at alpha, 2 alpha and 2 alpha - 1
_ALL_ORDERS = np.unique(np.concatenate([ORDERS, 2 * ORDERS, 2 * ORDERS - 1]))


@functools.lru_cache(maxsize=256)
def _step_curve(sigma: float, q: float) -> np.ndarray:
    """RDP of one sampled Gaussian step (add/remove) at every order of :data:`_ALL_ORDERS`."""
    return np.asarray(compute_rdp(q=q, noise_multiplier=sigma, steps=1, orders=list(_ALL_ORDERS)), dtype=float)


def rdp_add_remove(history: Iterable[Step]) -> np.ndarray:
    """The composed add/remove RDP curve of ``history`` at :data:`_ALL_ORDERS` (Mironov et al. 2019)."""
    total = np.zeros(len(_ALL_ORDERS))
    for sigma, q, steps in history:
        if steps < 0 or not 0 < q <= 1 or sigma <= 0:
            raise ValueError(f"accounting: invalid step entry (noise {sigma}, sample rate {q}, steps {steps})")
        if steps:
            total += int(steps) * _step_curve(float(sigma), float(q))
    return total


def rdp_curve(composed: np.ndarray, adjacency: str = "add_remove") -> np.ndarray:
    """The RDP at :data:`ORDERS` of a composed add/remove curve, for ``adjacency`` (module docstring)."""
    if adjacency not in ADJACENCIES:
        raise ValueError(f"accounting: adjacency {adjacency!r}: expected one of {ADJACENCIES}")
    at = {float(a): float(v) for a, v in zip(_ALL_ORDERS, composed, strict=True)}
    if adjacency == "add_remove":
        return np.array([at[float(a)] for a in ORDERS])
    return np.array([(a - 0.5) / (a - 1) * at[float(2 * a)] + at[float(2 * a - 1)] for a in ORDERS])


def epsilon_of_curve(composed: np.ndarray, delta: float, adjacency: str = "add_remove") -> float:
    """Epsilon at ``delta`` of a composed add/remove curve (Balle et al. 2020 conversion)."""
    if not composed.any():
        return 0.0
    eps, _ = get_privacy_spent(orders=list(ORDERS), rdp=rdp_curve(composed, adjacency), delta=delta)
    # the conversion can go below 0 for a large delta; any epsilon >= the bound holds, 0 included
    return max(0.0, float(eps))


def epsilon(history: Iterable[Step], delta: float, adjacency: str = "add_remove") -> float:
    """Cumulative epsilon at ``delta`` of every (sigma, q, steps) entry in ``history`` under
    ``adjacency`` (0.0 for an empty history)."""
    return epsilon_of_curve(rdp_add_remove(history), delta, adjacency)


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
