"""Fidelity of a quantised encoder against its float original, and the pass/fail gate.

On held-out real windows (not used for calibration), with ``F`` the float embeddings (n, D)
and ``Q`` the quantised model's:

* centred cosine: ``cos(Q_i - m, F_i - m)`` with ``m`` the mean float embedding over those
  windows. Raw cosine flatters, because all ECG embeddings share a large common component
  (unrelated windows already score about 0.87 raw); the centred form measures what
  distinguishes windows. The gate uses the minimum over windows.
* relative L2 error: ``||Q - F||_F / ||F||_F`` over the set.
* head agreement (when the model carries task heads): the fraction of decisions (window x
  label for sigmoid heads, thresholded at 0.5; window for softmax heads, arg-max) unchanged.

Gate (issue 8): centred cosine min >= 0.97 and relative L2 <= 0.05.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

MIN_CENTRED_COSINE = 0.97
MAX_REL_L2 = 0.05


@dataclass
class Fidelity:
    n_windows: int
    centred_cosine_min: float
    centred_cosine_mean: float
    cosine_min: float
    rel_l2_error: float
    head_agreement: dict[str, float]
    gate: str  # "pass" | "fail"

    def to_dict(self) -> dict:
        return asdict(self)


def _rowcos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)


def head_decisions(emb: np.ndarray, head: dict) -> np.ndarray:
    z = emb @ np.asarray(head["weight"]).T + np.asarray(head["bias"])
    if head.get("activation", "sigmoid") == "softmax":
        return z.argmax(1)
    return z >= 0.0  # sigmoid(z) >= 0.5


def fidelity(ref: np.ndarray, test: np.ndarray, heads: dict | None = None, *,
             min_ccos: float = MIN_CENTRED_COSINE, max_rel_l2: float = MAX_REL_L2) -> Fidelity:
    """Compare ``test`` embeddings (n, D) with the float ``ref`` embeddings of the same windows."""
    ref = np.asarray(ref, dtype=np.float64)
    test = np.asarray(test, dtype=np.float64)
    if ref.shape != test.shape or ref.ndim != 2 or len(ref) < 2:
        raise ValueError(f"need two (n >= 2, D) embedding sets of one shape, got {ref.shape} and {test.shape}")
    m = ref.mean(0, keepdims=True)
    ccos = _rowcos(test - m, ref - m)
    rel = float(np.linalg.norm(test - ref) / np.linalg.norm(ref))
    agree = {name: float(np.mean(head_decisions(ref, h) == head_decisions(test, h))) for name, h in (heads or {}).items()}
    ok = bool(np.isfinite(ccos).all() and ccos.min() >= min_ccos and rel <= max_rel_l2)
    return Fidelity(
        n_windows=len(ref),
        centred_cosine_min=float(ccos.min()),
        centred_cosine_mean=float(ccos.mean()),
        cosine_min=float(_rowcos(test, ref).min()),
        rel_l2_error=rel,
        head_agreement=agree,
        gate="pass" if ok else "fail",
    )
