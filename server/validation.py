"""Screen train replies before aggregation: a bad reply is reported, never averaged in.

A reply is accepted only when it holds exactly one ArrayRecord and one MetricRecord (Flower's
Message-API contract), its ``num-examples`` is a finite positive scalar, every metric is a
finite number, its arrays have exactly the global model's names and shapes, every floating
value is finite, and its update is not absurd:

    ||w_site - w_global||_2  <=  max_update_ratio * ||w_global||_2

over the floating arrays (integer buffers such as BatchNorm's ``num_batches_tracked`` are
counters, not weights). Replies whose metric names differ from those of the other accepted
replies are rejected too (the majority set wins), since Flower refuses to aggregate mixed keys.

Reasons name arrays or metrics, never values that came from a site's data.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, Message

from clef_core.federation.contract import SITE_INDEX_KEY, WEIGHT_KEY

REFUSAL_PREFIX = "refused by the site"


@dataclasses.dataclass
class Verdict:
    """What happened to one sampled node's reply this round."""

    node_id: int
    status: str  # accepted | rejected | failed | missing
    reason: str = ""
    metrics: dict[str, float] = dataclasses.field(default_factory=dict)
    update_norm: float = math.nan
    bytes_received: int = 0

    def to_dict(self) -> dict[str, Any]:
        out = {"node_id": self.node_id, "status": self.status}
        if self.reason:
            out["reason"] = self.reason
        if math.isfinite(self.update_norm):
            out["update_norm"] = self.update_norm
        out["bytes_received"] = self.bytes_received
        out.update(self.metrics)
        return out


@dataclasses.dataclass
class Screened:
    accepted: list[Message]
    verdicts: list[Verdict]

    def count(self, status: str) -> int:
        return sum(v.status == status for v in self.verdicts)


def reply_bytes(msg: Message) -> int:
    """Payload bytes of a reply: its arrays and metrics (Flower's own byte counts)."""
    if msg.has_error():
        return 0
    content = msg.content
    return sum(r.count_bytes() for r in content.array_records.values()) + sum(
        r.count_bytes() for r in content.metric_records.values())


def float_norm(arrays: Mapping[str, np.ndarray]) -> float:
    return math.sqrt(sum(float(np.sum(np.square(a, dtype=np.float64))) for a in arrays.values()
                         if np.issubdtype(a.dtype, np.floating)))


def reply_node(msg: Message, destinations: Mapping[str, int]) -> int:
    """The node a reply answers for: the destination of the instruction it replies to."""
    return int(destinations.get(msg.metadata.reply_to_message_id, msg.metadata.src_node_id))


def _site_index(verdict: Verdict) -> float:
    index = verdict.metrics.get(SITE_INDEX_KEY, -1.0)
    return index if index >= 0 else math.inf


class ReplyValidator:
    """Checks train replies against the global arrays sent in the same round."""

    def __init__(self, max_update_ratio: float = 10.0, weight_key: str = WEIGHT_KEY) -> None:
        self.max_update_ratio = float(max_update_ratio)
        self.weight_key = weight_key

    def screen(self, replies: Iterable[Message], reference: ArrayRecord,
               sampled: Iterable[int] = (), destinations: Mapping[str, int] | None = None) -> Screened:
        """``destinations`` maps each sent message id to its node: an error reply that the
        SuperLink writes for a node that died carries the SuperLink's id as its source, so a
        reply is attributed to the node its instruction went to."""
        ref = {k: v.numpy() for k, v in reference.items()}
        ref_norm = float_norm(ref)
        accepted: list[tuple[Message, Verdict]] = []
        verdicts: list[Verdict] = []
        answered = set()
        for msg in replies:
            node = reply_node(msg, destinations or {})
            answered.add(node)
            verdict = self.check(msg, ref, ref_norm, node)
            verdicts.append(verdict)
            if verdict.status == "accepted":
                accepted.append((msg, verdict))
        for node in sampled:
            if int(node) not in answered:
                verdicts.append(Verdict(int(node), "missing", "no reply before the round timeout"))
        keep = self._consistent_metric_keys(accepted)
        # a fixed order (by site, then node): floating-point sums depend on the order, and replies
        # arrive in whatever order the sites finish -- a resumed round must add up the same way
        keep.sort(key=lambda mv: (_site_index(mv[1]), mv[1].node_id))
        return Screened([m for m, _ in keep], verdicts)

    def check(self, msg: Message, ref: Mapping[str, np.ndarray], ref_norm: float,
              node: int | None = None) -> Verdict:
        node = int(msg.metadata.src_node_id) if node is None else node
        if msg.has_error():
            return Verdict(node, "failed", f"client error (code {msg.error.code}){_refusal(msg.error.reason)}")
        verdict = Verdict(node, "rejected", bytes_received=reply_bytes(msg))
        content = msg.content
        if len(content.array_records) != 1 or len(content.metric_records) != 1:
            verdict.reason = (f"expected one ArrayRecord and one MetricRecord, got {len(content.array_records)} and "
                              f"{len(content.metric_records)}")
            return verdict
        metrics = next(iter(content.metric_records.values()))
        problem = self._metric_problem(metrics)
        if problem:
            verdict.reason = problem
            return verdict
        verdict.metrics = {k: float(v) for k, v in metrics.items()}
        arrays = {k: v.numpy() for k, v in next(iter(content.array_records.values())).items()}
        problem = self._array_problem(arrays, ref)
        if problem:
            verdict.reason = problem
            return verdict
        norm = float_norm({k: arrays[k].astype(np.float64) - ref[k] for k in ref
                           if np.issubdtype(ref[k].dtype, np.floating)})
        verdict.update_norm = norm
        limit = self.max_update_ratio * max(ref_norm, 1e-12)
        if not norm <= limit:
            verdict.reason = f"update norm {norm:.4g} exceeds {self.max_update_ratio:g} x ||w_global|| = {limit:.4g}"
            return verdict
        verdict.status = "accepted"
        return verdict

    def _metric_problem(self, metrics: Mapping[str, Any]) -> str:
        weight = metrics.get(self.weight_key)
        if isinstance(weight, list) or weight is None:
            return f"metric '{self.weight_key}' missing or not a scalar"
        if not (math.isfinite(float(weight)) and float(weight) > 0):
            return f"metric '{self.weight_key}' is not a positive finite number"
        for key, value in metrics.items():
            if isinstance(value, list) or isinstance(value, bool) or not math.isfinite(float(value)):
                return f"metric '{key}' is not a finite scalar"
        return ""

    @staticmethod
    def _array_problem(arrays: Mapping[str, np.ndarray], ref: Mapping[str, np.ndarray]) -> str:
        missing, extra = sorted(set(ref) - set(arrays)), sorted(set(arrays) - set(ref))
        if missing or extra:
            return f"array names differ from the global model (missing {missing[:3]}, unexpected {extra[:3]})"
        for key, value in ref.items():
            if arrays[key].shape != value.shape:
                return f"array '{key}' has shape {arrays[key].shape}, the global model {value.shape}"
            got_float = np.issubdtype(arrays[key].dtype, np.floating)
            if got_float != np.issubdtype(value.dtype, np.floating):
                return f"array '{key}' has dtype {arrays[key].dtype}, the global model {value.dtype}"
            if got_float and not np.isfinite(arrays[key]).all():
                return f"array '{key}' holds NaN or Inf"
        return ""

    @staticmethod
    def _consistent_metric_keys(accepted: list[tuple[Message, Verdict]]) -> list[tuple[Message, Verdict]]:
        if not accepted:
            return []
        keysets = [frozenset(v.metrics) for _, v in accepted]
        majority = Counter(keysets).most_common(1)[0][0]
        keep = []
        for (msg, verdict), keys in zip(accepted, keysets, strict=True):
            if keys == majority:
                keep.append((msg, verdict))
            else:
                verdict.status = "rejected"
                verdict.reason = (f"metric names differ from the other sites' (missing {sorted(majority - keys)[:3]}, "
                                  f"unexpected {sorted(keys - majority)[:3]})")
        return keep


def _refusal(reason: str) -> str:
    """A site's refusal as it names it (client.client_app.SiteRefusal: its text says only what was
    refused), for the round's report; "" for any other error."""
    start = (reason or "").find(REFUSAL_PREFIX)
    return "" if start < 0 else ": " + reason[start:start + 300].split("'>")[0]
