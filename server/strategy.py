"""Flower strategies from ``[federation]``, with reply screening and a saveable state.

FedAvg (McMahan et al. 2017), FedProx (Li et al. 2020: the server only sends ``proximal-mu``;
the client adds ``(mu/2)||w - w_global||^2``), FedAdam and FedYogi (Reddi et al. 2021,
arXiv:2003.00295: the averaged update is a pseudo-gradient for a server-side Adam/Yogi step
``eta``). Each is Flower's own class inside a :class:`ScreenedStrategy`:

* ``aggregate_train`` first runs :class:`server.validation.ReplyValidator`; rejected and failed
  replies are kept in ``last_screen`` for the metrics line and never reach the average;
* the aggregate is cast back to the global model's dtypes (Flower's weighted mean turns
  integer buffers into float64);
* ``state_dict``/``load_state_dict`` carry FedAdam/FedYogi's moments ``m_t``, ``v_t`` so a resumed
  run continues the same server optimizer.

The client learning rate of round ``t`` of ``T`` comes from one cosine schedule across rounds,
``lr_t = lr_min + (lr_0 - lr_min) * (1 + cos(pi * (t - 1) / T)) / 2`` (SGDR's cosine,
Loshchilov & Hutter 2017, without restarts), and travels in the round's train config.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAdam, FedAvg, FedProx, FedYogi, Strategy

from clef_core.federation.contract import SITE_INDEX_KEY, WEIGHT_KEY
from server.settings import FederationSettings
from server.validation import ReplyValidator, Screened

SUMMED_PREFIXES = ("skipped.",)
SUMMED_KEYS = ("steps", "examples")
MAX_KEYS = ("seconds",)
PER_SITE_ONLY = (SITE_INDEX_KEY,)
MetricsAggregation = Callable[[list[RecordDict], str], MetricRecord]


def round_lr(server_round: int, rounds: int, lr0: float, lr_min: float, schedule: str) -> float:
    """The client learning rate of ``server_round`` (1-based) out of ``rounds``."""
    if schedule == "constant" or rounds <= 1:
        return float(lr0)
    progress = (server_round - 1) / rounds
    return float(lr_min + (lr0 - lr_min) * 0.5 * (1.0 + math.cos(math.pi * progress)))


def aggregate_train_metrics(records: list[RecordDict], weight_key: str) -> MetricRecord:
    """(Also used for evaluate replies.) Counts (``skipped.*``, steps, examples, ``num-examples``) are summed, ``seconds`` is the
    slowest site's, everything else is the ``num-examples``-weighted mean; ``site-index`` is
    per-site only."""
    metrics = [next(iter(r.metric_records.values())) for r in records]
    weights = np.array([float(m[weight_key]) for m in metrics])
    shares = weights / weights.sum()
    out = MetricRecord()
    for key in metrics[0]:
        if key in PER_SITE_ONLY:
            continue
        values = np.array([float(m[key]) for m in metrics])
        if key == weight_key or key in SUMMED_KEYS or key.startswith(SUMMED_PREFIXES):
            out[key] = float(values.sum())
        elif key in MAX_KEYS:
            out[key] = float(values.max())
        else:
            out[key] = float(np.dot(shares, values))
    return out


class ScreenedStrategy(Strategy):
    """Reply screening in front of a Flower strategy (see the module docstring). Composition, as
    Flower's own DP wrappers: ``inner`` (FedAvg, FedProx, FedAdam, FedYogi or a DP wrapper around
    one) samples, configures and averages; this class screens the replies, casts the aggregate
    and saves the server-optimizer state."""

    def __init__(self, inner: Strategy, validator: ReplyValidator, min_train_nodes: int) -> None:
        self.inner = inner
        self.validator = validator
        self.min_train_nodes = min_train_nodes
        self.last_screen: Screened | None = None
        self.sent_arrays: ArrayRecord | None = None
        self.sampled_nodes: list[int] = []
        self.sent_messages: list[Message] = []

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        messages = list(self.inner.configure_train(server_round, arrays, config, grid))
        self.sent_arrays = arrays
        self.sampled_nodes = [m.metadata.dst_node_id for m in messages]
        self.sent_messages = messages  # the grid sets their message ids when it pushes them
        return messages

    def aggregate_train(self, server_round: int,
                        replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        if self.sent_arrays is None:
            raise RuntimeError("aggregate_train before configure_train: no global arrays to check replies against")
        destinations = {m.metadata.message_id: int(m.metadata.dst_node_id) for m in self.sent_messages}
        self.last_screen = self.validator.screen(replies, self.sent_arrays, self.sampled_nodes, destinations)
        if len(self.last_screen.accepted) < self.min_train_nodes:
            return None, None
        arrays, metrics = self.inner.aggregate_train(server_round, self.last_screen.accepted)
        if arrays is not None:
            arrays = cast_like(arrays, self.sent_arrays)
        return arrays, metrics

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        return self.inner.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        return self.inner.aggregate_evaluate(server_round, replies)

    def summary(self) -> None:
        self.inner.summary()

    def state_dict(self) -> dict[str, dict[str, np.ndarray]]:
        """Server-optimizer state (FedAdam/FedYogi moments); empty for FedAvg/FedProx."""
        state = {}
        for name in ("m_t", "v_t"):
            value = getattr(self.inner, name, None)
            if value:
                state[name] = {k: np.asarray(v) for k, v in value.items()}
        return state

    def load_state_dict(self, state: dict[str, dict[str, np.ndarray]]) -> None:
        for name, value in state.items():
            if not hasattr(self.inner, name):
                raise ValueError(f"strategy {type(self.inner).__name__} has no state '{name}' "
                                 f"(was the strategy changed?)")
            setattr(self.inner, name, {k: np.asarray(v) for k, v in value.items()})


def cast_like(arrays: ArrayRecord, reference: ArrayRecord) -> ArrayRecord:
    """``arrays`` with each entry in the dtype of ``reference`` (integer buffers are rounded)."""
    out = ArrayRecord()
    for key, ref in reference.items():
        target = ref.numpy().dtype
        value = arrays[key].numpy()
        if np.issubdtype(target, np.integer) and not np.issubdtype(value.dtype, np.integer):
            value = np.rint(value)
        out[key] = Array(np.array(value, dtype=target, order="C"))  # keeps 0-d shapes, unlike ascontiguousarray
    return out


def build_strategy(settings: FederationSettings, client_lr: float, validator: ReplyValidator | None = None,
                   train_metrics_aggr_fn: MetricsAggregation = aggregate_train_metrics) -> ScreenedStrategy:
    """The configured strategy, screening with ``validator`` (default :class:`ReplyValidator`);
    ``client_lr`` is FedOpt's ``eta_l`` (informational in Flower)."""
    common: dict[str, Any] = {
        "fraction_train": settings.fraction_train,
        "fraction_evaluate": settings.fraction_evaluate,
        "min_train_nodes": settings.min_train_nodes,
        "min_evaluate_nodes": 1 if settings.fraction_evaluate > 0 else 0,
        "min_available_nodes": settings.min_available_nodes,
        "weighted_by_key": WEIGHT_KEY,
        "train_metrics_aggr_fn": train_metrics_aggr_fn,
        "evaluate_metrics_aggr_fn": aggregate_train_metrics,
    }
    inner: FedAvg
    if settings.strategy == "fedavg":
        inner = FedAvg(**common)
    elif settings.strategy == "fedprox":
        inner = FedProx(**common, proximal_mu=settings.proximal_mu)
    else:
        cls = FedAdam if settings.strategy == "fedadam" else FedYogi
        inner = cls(**common, eta=settings.server_lr, eta_l=client_lr, beta_1=settings.server_beta1,
                    beta_2=settings.server_beta2, tau=settings.server_tau)
    return ScreenedStrategy(inner, validator or ReplyValidator(settings.max_update_ratio), settings.min_train_nodes)
