"""The placebo's loss inputs: clinical values shuffled among a batch's patients (``loss.shuffle_risk``).

Two scopes (``loss.shuffle_scope``), both driven by the step's permutation pi of the N patients
(:func:`clef_core.train.trainer.placebo_permutation`, a function of (seed, step)):

* ``all``: (r, rho) <- (r_pi, rho_pi): risk and completeness move together, so which patients have
  a risk, and how complete their records are, is shuffled with it. Under weights that depend on
  whether a risk is known (``loss.unknown_weight = "one"``) this placebo keeps that structure.
* ``known``: only the known risks move, among the patients that have one (in the order pi visits
  them); unknown risks stay NaN where they were and completeness is not touched. What stays the
  same is exactly the missingness pattern, so a difference from CLEF is the risk values' own effect.
"""

from __future__ import annotations

import torch

SHUFFLE_SCOPES = ("all", "known")


def placebo_inputs(risk: torch.Tensor, completeness: torch.Tensor, perm: torch.Tensor,
                   scope: str = "all") -> tuple[torch.Tensor, torch.Tensor]:
    """(risk, completeness) of the placebo for the permutation ``perm`` of the batch's N patients."""
    if scope not in SHUFFLE_SCOPES:
        raise ValueError(f"placebo: shuffle_scope={scope!r} is unknown ({' | '.join(SHUFFLE_SCOPES)})")
    perm = perm.to(risk.device)
    if scope == "all":
        return risk[perm], completeness[perm]
    known = ~torch.isnan(risk)
    targets = torch.nonzero(known).flatten()
    sources = perm[known[perm]]  # the known patients in the order the permutation visits them
    shuffled = risk.clone()
    shuffled[targets] = risk[sources]
    return shuffled, completeness
