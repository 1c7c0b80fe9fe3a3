"""The [risk] section: which clinical risk model, and its options."""

from __future__ import annotations

import dataclasses

from clef_core.config import ConfigError, require
from clef_core.score2 import normalize_policy, normalize_region

MODEL_NAMES = ("score2", "prevent", "pce", "score2_diabetes")
PREVENT_VARIANTS = ("base", "hba1c", "uacr")
PREVENT_OUTCOMES = ("total_cvd", "ascvd", "heart_failure")


@dataclasses.dataclass(frozen=True)
class RiskSettings:
    """[risk]: ``model``; ``missing_policy`` (unknown | impute_reference); ``region`` (SCORE2 and
    SCORE2-Diabetes); ``prevent_variant`` / ``prevent_horizon`` / ``prevent_outcome``; ``pce_race``
    (white | african_american, applied to every patient: never inferred from data)."""

    model: str = "score2"
    missing_policy: str = "unknown"
    region: str = "low"
    prevent_variant: str = "base"
    prevent_horizon: int = 10
    prevent_outcome: str = "total_cvd"
    pce_race: str = "white"

    def __post_init__(self) -> None:
        from clef_core.risk.pce import normalize_race

        if self.model not in MODEL_NAMES:  # (tests/test_risk_cli.py reads this wording)
            raise ConfigError(f"risk.model: unknown model {self.model!r}; expected one of {MODEL_NAMES}")
        require(self.prevent_variant in PREVENT_VARIANTS, "risk.prevent_variant", self.prevent_variant, f"one of {PREVENT_VARIANTS}")
        require(self.prevent_horizon in (10, 30), "risk.prevent_horizon", self.prevent_horizon, "10 or 30 (years)")
        require(self.prevent_outcome in PREVENT_OUTCOMES, "risk.prevent_outcome", self.prevent_outcome, f"one of {PREVENT_OUTCOMES}")
        object.__setattr__(self, "missing_policy", normalize_policy(self.missing_policy))
        object.__setattr__(self, "region", normalize_region(self.region))
        object.__setattr__(self, "pce_race", normalize_race(self.pce_race))

    def describe(self) -> str:
        """One line naming the model and the options that apply to it."""
        if self.model == "prevent":
            opts = f"variant {self.prevent_variant}, {self.prevent_horizon}-year {self.prevent_outcome}"
        elif self.model == "pce":
            opts = f"race equations {self.pce_race} (set by risk.pce_race), 10-year hard ASCVD"
        else:
            opts = f"region {self.region}, 10-year CVD"
        return f"{self.model} ({opts}; missing policy {self.missing_policy})"
