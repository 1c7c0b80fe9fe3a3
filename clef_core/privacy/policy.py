"""A site's own privacy policy, and how a run's privacy request is held against it.

Who decides what (docs/privacy.md, "Who controls what"):

* the **site** decides everything that makes up its privacy -- the least protection it trains
  with (``mode``, the smallest noise multiplier, the clip norm, the largest delta), its budget,
  which ledger entries the budget counts (``budget_scope``), where the ledger lives, and which
  folders are read (its data, its clinical tables, its noise recordings). It states them in its
  own node config (deployment: the SuperNode's ``--node-config``, written from the hospital's
  site file) or, in a simulation, in its entry of ``sites.json``;
* the **run** (its experiment / Flower run_config, chosen by whoever starts the run) may only
  *request*: :func:`effective_privacy` accepts a request that is at least as strong as the
  policy and refuses one that is weaker, before any of the site's data is touched.

"At least as strong", per setting (patient-level DP-SGD, replace-one-patient adjacency: docs/privacy.md):

=================  =========================================================================
mode               off < client < patient. ``client`` (DP-FedAvg) adds its noise on the server,
                   so a site whose policy is ``patient`` refuses it: the server would see its
                   update without noise.
noise_multiplier   the request's sigma must be >= the policy's (more noise is stronger).
delta              the request's delta must be <= the policy's.
clip_norm          a site setting: a request for another C is refused (C bounds each patient's
                   gradient; the site keeps the value it reviewed).
budget_epsilon     the smaller positive value of policy and request applies (a request can only
                   lower the budget; 0 = none).
budget_scope,      site only: the run cannot name them. ``budget_scope = "site"`` (the default)
ledger_dir         counts every release of the site whatever the experiment is called, so a new
                   experiment name does not reset the spending.
=================  =========================================================================
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from clef_core.privacy.settings import BUDGET_SCOPES, PrivacyConfig

POLICY_MODES = ("off", "patient")
MAX_DELTA = 1e-2  # no site accepts a larger delta: it is the chance that the guarantee fails
STRENGTH = {"off": 0, "client": 1, "patient": 2}
NODE_KEYS = {  # node_config key -> SitePolicy field
    "privacy-mode": "mode",
    "privacy-noise-multiplier": "noise_multiplier",
    "privacy-clip-norm": "clip_norm",
    "privacy-delta": "delta",
    "privacy-budget": "budget_epsilon",
    "privacy-budget-scope": "budget_scope",
    "privacy-ledger-dir": "ledger_dir",
}


class PrivacyPolicyError(ValueError):
    """A site's own privacy settings are malformed (names the key)."""


class PrivacyRefusal(RuntimeError):
    """The run asks for less privacy than the site's policy allows (or for something only the
    site may decide). ``public`` names only the refusal: it is what may leave the site;
    ``str(exc)`` holds the detail for the site's own log."""

    def __init__(self, public: str, detail: str) -> None:
        super().__init__(f"{public}: {detail}")
        self.public = public


@dataclasses.dataclass(frozen=True)
class SitePolicy:
    """What a site demands (see the module docstring). The defaults are a site that demands no
    DP but keeps its ledger and budget scope to itself."""

    mode: str = "off"
    noise_multiplier: float = 1.0
    clip_norm: float = 1.0
    delta: float = 1e-5
    budget_epsilon: float = 0.0
    budget_scope: str = "site"
    ledger_dir: str = ""

    def __post_init__(self) -> None:
        _need(self.mode in POLICY_MODES, "mode", self.mode, " | ".join(POLICY_MODES))
        _need(_finite(self.noise_multiplier) and self.noise_multiplier > 0, "noise_multiplier",
              self.noise_multiplier, "> 0")
        _need(_finite(self.clip_norm) and self.clip_norm > 0, "clip_norm", self.clip_norm, "> 0")
        _need(_finite(self.delta) and 0 < self.delta < MAX_DELTA, "delta", self.delta,
              f"in (0, {MAX_DELTA:g}): delta is the chance the guarantee fails; keep it below 1 / patients")
        _need(_finite(self.budget_epsilon) and self.budget_epsilon >= 0, "budget", self.budget_epsilon,
              ">= 0 (0: no budget)")
        _need(self.budget_scope in BUDGET_SCOPES, "budget_scope", self.budget_scope, " | ".join(BUDGET_SCOPES))

    @classmethod
    def from_node_config(cls, node_config: Mapping[str, Any]) -> SitePolicy:
        """The policy in a node config's ``privacy-*`` keys (unknown ones and near misses such as
        ``privacy_mode`` or ``Privacy-Mode`` are errors: a misspelt policy must not pass silently)."""
        unknown = sorted(k for k in node_config if k not in NODE_KEYS and
                         "".join(c for c in str(k).lower() if c.isalpha()).startswith("privacy"))
        if unknown:
            raise PrivacyPolicyError(f"node config: unknown privacy key(s) {unknown} (known: {sorted(NODE_KEYS)})")
        values = {field: node_config[key] for key, field in NODE_KEYS.items() if key in node_config}
        return cls.from_mapping(values, where="node config")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], where: str = "site policy") -> SitePolicy:
        names = {f.name: f.type for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise PrivacyPolicyError(f"{where}: unknown privacy setting(s) {unknown}")
        typed: dict[str, Any] = {}
        for key, value in values.items():
            want = float if names[key] == "float" else str
            if want is float and (isinstance(value, bool) or not isinstance(value, (int, float, str))):
                raise PrivacyPolicyError(f"{where}: privacy {key} = {value!r} is not a number")
            try:
                typed[key] = want(value)
            except ValueError:
                raise PrivacyPolicyError(f"{where}: privacy {key} = {value!r} is not a number") from None
        try:
            return cls(**typed)
        except PrivacyPolicyError as exc:
            raise PrivacyPolicyError(f"{where}: {exc}") from None

    @classmethod
    def for_simulated_site(cls, request: PrivacyConfig) -> SitePolicy:
        """The policy of a simulated site of an experiment: it demands exactly what the experiment
        asks for (the researcher plays every site)."""
        mode = "patient" if request.mode == "patient" else "off"
        return cls(mode=mode, noise_multiplier=request.noise_multiplier, clip_norm=request.clip_norm,
                   delta=request.delta, budget_epsilon=request.budget_epsilon)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def effective_privacy(policy: SitePolicy, request: PrivacyConfig) -> PrivacyConfig:
    """The privacy a site trains with for a run that requests ``request``; raises
    :class:`PrivacyRefusal` when the request is weaker than ``policy`` (module docstring)."""
    if STRENGTH[request.mode] < STRENGTH[policy.mode]:
        raise PrivacyRefusal(
            f"refused by the site: it trains only under {policy.mode}-level differential privacy",
            f"the run requests privacy.mode = {request.mode!r}")
    budget = _smaller_budget(policy.budget_epsilon, request.budget_epsilon)
    site_owned: dict[str, Any] = {"budget_epsilon": budget, "budget_scope": policy.budget_scope, "ledger_dir": policy.ledger_dir}
    if request.mode != "patient":
        return dataclasses.replace(request, **site_owned)
    if policy.mode == "patient":
        _refuse_if(request.noise_multiplier < policy.noise_multiplier, "noise_multiplier",
                   f"the run requests {request.noise_multiplier}, the site demands at least {policy.noise_multiplier}")
        _refuse_if(request.delta > policy.delta, "delta",
                   f"the run requests {request.delta}, the site allows at most {policy.delta}")
        _refuse_if(request.clip_norm != policy.clip_norm, "clip_norm",
                   f"the run requests {request.clip_norm}; the site clips at {policy.clip_norm}")
    elif not request.delta < MAX_DELTA:
        raise PrivacyRefusal("refused by the site: privacy.delta is too large",
                             f"the run requests delta = {request.delta} (the site accepts < {MAX_DELTA:g})")
    return dataclasses.replace(request, **site_owned)


def _smaller_budget(site: float, run: float) -> float:
    positive = [b for b in (site, run) if b > 0]
    return min(positive) if positive else 0.0


def _refuse_if(weaker: bool, key: str, detail: str) -> None:
    if weaker:
        raise PrivacyRefusal(f"refused by the site: privacy.{key} is weaker than the site's policy", detail)


def _finite(value: float) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _need(ok: bool, key: str, value: Any, expected: str) -> None:
    if not ok:
        raise PrivacyPolicyError(f"privacy {key} = {value!r}: expected {expected}")
