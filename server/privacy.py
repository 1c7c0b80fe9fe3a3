"""The server's side of differential privacy: which strategy, what a round reports, when to stop.

* ``privacy.mode = "patient"``: the sites do DP-SGD and keep their own ledgers. The server's
  strategy is the configured one; its reply screening additionally sets aside replies of sites
  that refused to train because of their budget (status ``stopped``: they are listed, never
  averaged). Each metrics line gets ``epsilon`` = the largest cumulative epsilon any site has
  reported in this run so far (a site that sat out a round keeps its last value) and ``delta``.
  When a round cannot aggregate only because sites are out of budget (every other sampled site
  delivered), the run ends (:class:`BudgetReached`) with the model of the last round.
* ``privacy.mode = "client"``: DP-FedAvg (McMahan et al. 2018) with Flower's
  ``DifferentialPrivacyServerSideFixedClipping`` around a plain FedAvg/FedProx and Flower's
  ``RdpAccountant`` (add/remove one site, no amplification). Reply screening stays in front;
  every accepted reply is given the same weight before aggregation (the accountant's sensitivity
  is ``clip_norm / m`` for a uniform mean of m clipped updates); the accountant's composition
  history travels in the round checkpoint so a resumed run keeps counting. ``budget_epsilon``
  becomes the accountant's ``max_epsilon``: the round that would exceed it is not started and the
  run ends (:class:`BudgetReached`).

Clipping happens on the server (the trust model of central DP: the server is trusted to clip
and add the noise). The client-side variant exists to combine with secure aggregation, which
this release does not offer (docs/privacy.md).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid, PrivacySpent, RdpAccountant
from flwr.serverapp.exception import PrivacyBudgetExhausted
from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping, FedAvg, FedProx

from clef_core.federation.contract import DELTA_KEY, EPSILON_KEY, EXHAUSTED_KEY, WEIGHT_KEY
from clef_core.privacy.compat import check_privacy, clients_per_round
from clef_core.privacy.config import PrivacyConfig
from server.settings import FederationSettings
from server.strategy import ScreenedStrategy, aggregate_train_metrics, build_strategy
from server.validation import ReplyValidator, Screened

log = logging.getLogger("clef.server")


class BudgetReached(RuntimeError):
    """No further round may run within the privacy budget; the run ends with the last model."""


def privacy_metrics_aggregate(records: list[RecordDict], weight_key: str) -> MetricRecord:
    """The project's train-metric aggregation, with ``privacy.*`` taken as the largest value
    (a weighted mean of epsilons means nothing)."""
    out = aggregate_train_metrics(records, weight_key)
    metrics = [next(iter(r.metric_records.values())) for r in records]
    for key in (EPSILON_KEY, DELTA_KEY, EXHAUSTED_KEY):
        if key in metrics[0]:
            out[key] = float(max(float(m[key]) for m in metrics))
    return out


class BudgetAwareValidator(ReplyValidator):
    """Patient mode: a valid reply flagged ``privacy.budget_exhausted`` is set aside as
    ``stopped`` (listed in the round's sites, not averaged)."""

    def screen(self, replies: Iterable[Message], reference: ArrayRecord, sampled: Iterable[int] = (),
               destinations: Mapping[str, int] | None = None) -> Screened:
        screened = super().screen(replies, reference, sampled, destinations)
        keep = []
        for msg in screened.accepted:
            metrics = next(iter(msg.content.metric_records.values()))
            if float(metrics.get(EXHAUSTED_KEY, 0.0)) > 0:
                for verdict in screened.verdicts:
                    if verdict.node_id == int(msg.metadata.src_node_id):
                        verdict.status, verdict.reason = "stopped", "privacy budget exhausted: did not train"
            else:
                keep.append(msg)
        return Screened(keep, screened.verdicts)


class UniformWeightValidator(ReplyValidator):
    """Client mode: every accepted reply gets the same weight (``num-examples`` = 1) before
    Flower's accounted wrapper sees it -- each site's clipped update counts 1 / m, the sensitivity
    the accountant assumes. The per-site numbers stay in the verdicts for the metrics line."""

    def screen(self, replies: Iterable[Message], reference: ArrayRecord, sampled: Iterable[int] = (),
               destinations: Mapping[str, int] | None = None) -> Screened:
        screened = super().screen(replies, reference, sampled, destinations)
        for msg in screened.accepted:
            next(iter(msg.content.metric_records.values()))[WEIGHT_KEY] = 1.0
        return screened


class ScreenedDPFedAvg(ScreenedStrategy):
    """Screening in front of Flower's accounted fixed-clipping DP-FedAvg (``dp``)."""

    def __init__(self, dp: DifferentialPrivacyServerSideFixedClipping, validator: ReplyValidator,
                 accountant: RdpAccountant) -> None:
        super().__init__(dp, validator, dp.num_sampled_clients)
        self.dp = dp
        self.accountant = accountant

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        try:
            return super().configure_train(server_round, arrays, config, grid)
        except PrivacyBudgetExhausted as exc:
            raise BudgetReached(f"round {server_round} would exceed privacy.budget_epsilon: {exc}") from exc

    def aggregate_train(self, server_round: int,
                        replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        arrays, metrics = super().aggregate_train(server_round, replies)
        if arrays is None and self.last_screen is not None and len(self.last_screen.accepted) < self.min_train_nodes:
            # the screening stopped the round before Flower's wrapper saw it: hand it the empty
            # round, so it drops the round's pending privacy event (nothing was released)
            self.dp.aggregate_train(server_round, [])
        return arrays, metrics

    def privacy_spent(self) -> PrivacySpent:
        """What the accountant has counted so far (Flower's wrapper reports the same)."""
        return self.accountant.get_privacy_spent()

    def state_dict(self) -> dict[str, dict[str, np.ndarray]]:
        comps = self.accountant.state_dict()["compositions"]
        return {"accountant": {
            "noise_multiplier": np.array([c["event"]["noise_multiplier"] for c in comps], dtype=np.float64),
            "sample_size": np.array([c["event"]["sample_size"] for c in comps], dtype=np.int64),
            "population_size": np.array([c["event"]["population_size"] for c in comps], dtype=np.int64),
            "count": np.array([c["count"] for c in comps], dtype=np.int64)}}

    def load_state_dict(self, state: dict[str, dict[str, np.ndarray]]) -> None:
        from flwr.serverapp import GaussianPrivacyEvent

        part = state.get("accountant")
        if part is None:
            raise ValueError("the checkpoint has no privacy accountant state (was it made without client-level DP?)")
        for sigma, size, population, count in zip(part["noise_multiplier"], part["sample_size"],
                                                  part["population_size"], part["count"], strict=True):
            self.accountant.compose(GaussianPrivacyEvent(float(sigma), int(size), int(population)), int(count))


def client_dp_strategy(settings: FederationSettings, priv: PrivacyConfig, sites: int) -> ScreenedDPFedAvg:
    from flwr.serverapp import NeighboringRelation, PrivacyConfig as FlowerPrivacy, SamplingMethod

    common: dict[str, Any] = {
        "fraction_train": 1.0, "fraction_evaluate": settings.fraction_evaluate, "min_train_nodes": sites,
        "min_evaluate_nodes": 1 if settings.fraction_evaluate > 0 else 0, "min_available_nodes": sites,
        "weighted_by_key": WEIGHT_KEY, "train_metrics_aggr_fn": aggregate_train_metrics,
    }
    inner = FedProx(**common, proximal_mu=settings.proximal_mu) if settings.strategy == "fedprox" else FedAvg(**common)
    accountant = RdpAccountant(FlowerPrivacy(
        target_delta=priv.delta, population_size=sites, neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
        sampling_method=SamplingMethod.NO_AMPLIFICATION,
        max_epsilon=priv.budget_epsilon if priv.budget_epsilon > 0 else None))
    dp = DifferentialPrivacyServerSideFixedClipping(inner, priv.noise_multiplier, priv.clip_norm, sites,
                                                    accountant=accountant)
    return ScreenedDPFedAvg(dp, UniformWeightValidator(settings.max_update_ratio), accountant)


class NoPrivacy:
    """``privacy.mode = "off"``: the configured strategy, nothing to report, no budget to stop at,
    and ``"privacy": null`` in the final model's provenance (the interface of :class:`ServerPrivacy`)."""

    mode = "off"

    def strategy(self, settings: FederationSettings, client_lr: float) -> ScreenedStrategy:
        return build_strategy(settings, client_lr)

    def round_fields(self, strategy: ScreenedStrategy, screen: Screened | None) -> dict[str, object]:
        return {}

    def budget_stop(self, screen: Screened | None) -> bool:
        return False

    def provenance(self) -> dict[str, object] | None:
        return None


class ServerPrivacy:
    """The server's privacy policy for a run with ``privacy.mode`` patient or client (see the
    module docstring); :func:`server_privacy` picks it or :class:`NoPrivacy`."""

    def __init__(self, cfg: Mapping[str, Any], previous_lines: Iterable[Mapping[str, Any]] = ()) -> None:
        self.priv = check_privacy(cfg)
        if self.priv.mode not in ("patient", "client"):
            raise ValueError(f"privacy.mode = {self.priv.mode!r}: the server's privacy is NoPrivacy (server_privacy)")
        self.cfg = cfg
        self.epsilon = max((float(x["epsilon"]) for x in previous_lines if x.get("epsilon") is not None),
                           default=0.0)

    @property
    def mode(self) -> str:
        return self.priv.mode

    def strategy(self, settings: FederationSettings, client_lr: float) -> ScreenedStrategy:
        if self.mode == "client":
            return client_dp_strategy(settings, self.priv, clients_per_round(self.cfg))
        return build_strategy(settings, client_lr, BudgetAwareValidator(settings.max_update_ratio),
                              privacy_metrics_aggregate)

    def round_fields(self, strategy: ScreenedStrategy, screen: Screened | None) -> dict[str, object]:
        """``epsilon`` (largest so far) and ``delta`` for the round's metrics line."""
        if self.mode == "client":
            if not isinstance(strategy, ScreenedDPFedAvg):
                raise TypeError(f"client-level DP needs the accounted strategy, not {type(strategy).__name__}")
            spent = strategy.privacy_spent()
            self.epsilon = max(self.epsilon, float(spent.epsilon))
            return {"epsilon": self.epsilon, "delta": float(spent.delta), "privacy_mode": "client",
                    "noise_multiplier": self.priv.noise_multiplier, "clip_norm": self.priv.clip_norm}
        reported = [v.metrics[EPSILON_KEY] for v in (screen.verdicts if screen else []) if EPSILON_KEY in v.metrics]
        self.epsilon = max([self.epsilon, *(float(e) for e in reported if math.isfinite(float(e)))])
        return {"epsilon": self.epsilon, "delta": self.priv.delta, "privacy_mode": "patient",
                "sites_stopped": screen.count("stopped") if screen else 0}

    def budget_stop(self, screen: Screened | None) -> bool:
        """Patient mode, a round that could not aggregate: True when that is only because sites
        refused to train for their budget (every other sampled site delivered)."""
        return (self.mode == "patient" and screen is not None and screen.count("stopped") > 0
                and screen.count("stopped") + screen.count("accepted") == len(screen.verdicts))

    def provenance(self) -> dict[str, object] | None:
        return {**self.priv.to_dict(), "epsilon": self.epsilon,
                "unit": "patient" if self.mode == "patient" else "site",
                "accountant": "rdp (opacus, per site ledger)" if self.mode == "patient" else "rdp (flwr RdpAccountant)"}


def server_privacy(cfg: Mapping[str, Any], previous_lines: Iterable[Mapping[str, Any]] = ()) -> NoPrivacy | ServerPrivacy:
    """The run's privacy policy: :class:`NoPrivacy` with ``privacy.mode = "off"``, else :class:`ServerPrivacy`."""
    if str(cfg.get("privacy", {}).get("mode", "off")) == "off":
        return NoPrivacy()
    return ServerPrivacy(cfg, previous_lines)
