"""Typed view of the ``[privacy]`` config section.

``mode``:

* ``"off"``     -- no differential privacy;
* ``"patient"`` -- example-level DP-SGD at each site with the patient as the privacy unit
  (:mod:`clef_core.privacy.dpsgd`); each site accounts for its own releases in its ledger;
* ``"client"``  -- client-level DP (DP-FedAvg, McMahan et al. 2018): the server clips each site's
  update to ``clip_norm`` and adds Gaussian noise to the average (Flower's fixed-clipping wrapper).

``noise_multiplier`` and ``clip_norm`` mean the per-patient gradient clip and noise in patient
mode, the per-site update clip and noise in client mode. See docs/privacy.md.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from clef_core.config import require

MODES = ("off", "patient", "client")
BUDGET_SCOPES = ("experiment", "site")
SITE_OWNED = ("budget_scope", "ledger_dir")  # set by a site's policy (privacy/policy.py), never by the experiment


@dataclasses.dataclass(frozen=True)
class PrivacyConfig:
    mode: str = "off"
    noise_multiplier: float = 1.0
    clip_norm: float = 1.0
    delta: float = 1e-5
    budget_epsilon: float = 0.0  # 0: no budget
    budget_scope: str = "site"  # set by the site's policy: site (every entry of its ledger) | experiment
    bank_size: int = 64  # public synthetic negatives per step (patient mode)
    bank_seed: int = 0
    bank_refresh: int = 4  # re-embed the bank every k steps with the current weights
    vmap_chunk: int = 16  # patients per vectorised gradient chunk (0: the whole batch)
    experiment_id: str = ""  # ledger key; "" = derived from the run folder
    ledger_dir: str = ""  # set by the site's policy; "" = <site work dir>/privacy
    clients_per_round: int = 0  # client mode: sites in every round (0: federation.min_available_nodes)

    def __post_init__(self) -> None:
        require(self.mode in MODES, "privacy.mode", self.mode, " | ".join(MODES))
        require(math.isfinite(self.noise_multiplier) and self.noise_multiplier >= 0, "privacy.noise_multiplier",
               self.noise_multiplier, ">= 0")
        require(self.mode == "off" or self.noise_multiplier > 0, "privacy.noise_multiplier", self.noise_multiplier,
               f"> 0 when mode = {self.mode!r} (0 would release unnoised gradients)")
        require(math.isfinite(self.clip_norm) and self.clip_norm > 0, "privacy.clip_norm", self.clip_norm, "> 0")
        require(0 < self.delta < 1, "privacy.delta", self.delta, "in (0, 1)")
        require(math.isfinite(self.budget_epsilon) and self.budget_epsilon >= 0, "privacy.budget_epsilon",
               self.budget_epsilon, ">= 0 (0: no budget)")
        require(self.budget_scope in BUDGET_SCOPES, "privacy.budget_scope", self.budget_scope, " | ".join(BUDGET_SCOPES))
        require(self.bank_size >= 1, "privacy.bank_size", self.bank_size, ">= 1")
        require(self.bank_refresh >= 1, "privacy.bank_refresh", self.bank_refresh, ">= 1")
        require(self.vmap_chunk >= 0, "privacy.vmap_chunk", self.vmap_chunk, ">= 0 (0: whole batch)")
        require(self.clients_per_round >= 0, "privacy.clients_per_round", self.clients_per_round, ">= 0 (0: all sites)")

    @property
    def enabled(self) -> bool:
        return self.mode != "off"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
