"""Which federation settings each DP mode supports, as code: :func:`check_privacy` refuses the
rest when an experiment is loaded, and :func:`compatibility_table` is the table in docs/privacy.md.

Why the rows are what they are:

* patient (DP-SGD at each site): every site's release is (eps, delta)-DP for its own patients on
  its own; whatever the server does with the releases is post-processing. So any strategy, any
  partitioning and any dropout is fine. A site with fewer patients than ``train.batch_size`` is
  sampled with rate 1 (no amplification; its epsilon grows faster).
* client (DP-FedAvg with Flower's fixed-clipping wrapper and ``RdpAccountant``, flwr 1.41
  ``dp_fixed_clipping.py``): the accountant needs the stock ``FedAvg.aggregate_train`` (FedAvg
  or FedProx, whose proximal term lives on the client), equal weights for every site (the
  server sets them: sensitivity of the mean is ``clip_norm / m``), exactly
  ``num_sampled_clients`` = m replies every round (``NO_AMPLIFICATION`` accounting: a missing,
  failed or rejected reply aborts the round, so no dropout is tolerated), and a fixed clip
  (the adaptive-clipping wrappers have no accountant in flwr 1.41).
* federated evaluation (``fraction_evaluate > 0``) under any DP mode: a site's evaluation loss is
  computed on its patients and sent without noise; it is refused (the server's probe on its own
  held-out data is unaffected).
* BatchNorm under any DP mode: its running statistics are updated from the private batch with
  no clipping or noise, and in patient mode it couples patients; use ``model.norm = "group"``
  or ``"none"``.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from clef_core.config import ConfigError
from clef_core.privacy.settings import PrivacyConfig

if TYPE_CHECKING:
    from clef_core.experiment import Experiment

ALL_STRATEGIES = ("fedavg", "fedprox", "fedadam", "fedyogi")
ALL_SPLITS = ("iid", "cart", "dirichlet", "skew")


@dataclasses.dataclass(frozen=True)
class Support:
    """One row of the compatibility table."""

    mode: str
    strategies: tuple[str, ...]
    splits: tuple[str, ...]
    dropout: str  # what happens when a sampled site does not deliver
    norms: tuple[str, ...]
    note: str


COMPATIBILITY: tuple[Support, ...] = (
    Support("off", ALL_STRATEGIES, ALL_SPLITS, "tolerated down to min_train_nodes", ("none", "batch", "group"),
            "no privacy guarantee"),
    Support("patient", ALL_STRATEGIES, ALL_SPLITS, "tolerated down to min_train_nodes (each site accounts "
            "only its own releases)", ("none", "group"),
            "server steps (FedAdam/FedYogi) are post-processing; a site smaller than train.batch_size is "
            "sampled at rate 1"),
    Support("client", ("fedavg", "fedprox"), ALL_SPLITS, "none: every sampled site must deliver "
            "(min_train_nodes = min_available_nodes = sites, fraction_train = 1)", ("none", "group"),
            "uniform site weights (set by the server); fixed clipping only; accounting without "
            "amplification by sampling"),
)


def support(mode: str) -> Support:
    for row in COMPATIBILITY:
        if row.mode == mode:
            return row
    raise ConfigError(f"privacy.mode = {mode!r}: expected one of {', '.join(r.mode for r in COMPATIBILITY)}")


def clients_per_round(exp: Experiment) -> int:
    """The exact number of sites client-level DP expects in every round: ``privacy.clients_per_round``,
    else ``federation.min_available_nodes`` (what the server waits for)."""
    return exp.privacy.clients_per_round or exp.federation.min_available_nodes


def check_privacy(exp: Experiment, n_sites: int | None = None) -> PrivacyConfig:
    """Validate ``[privacy]`` against the rest of the experiment (and the number of sites of a
    prepared simulation, when given); raise :class:`ConfigError` naming the setting and why it is
    refused. Returns the typed privacy settings."""
    priv = exp.privacy
    row = support(priv.mode)
    if not priv.enabled:
        return priv
    fed = exp.federation
    norm = exp.model.norm
    if norm not in row.norms:
        raise ConfigError(
            f"model.norm = {norm!r} is refused with privacy.mode = {priv.mode!r}: BatchNorm's running statistics "
            f"are updated from the private batch without clipping or noise (and it couples the patients of a "
            f"batch); use model.norm = \"group\" or \"none\"")
    strategy = fed.strategy
    if strategy not in row.strategies:
        raise ConfigError(
            f"federation.strategy = {strategy!r} is refused with privacy.mode = {priv.mode!r}: Flower's DP-FedAvg "
            f"accountant accounts only the stock FedAvg aggregation (use {' or '.join(row.strategies)}); a "
            f"server optimizer such as FedAdam/FedYogi is not accepted by flwr 1.41's accounted wrapper")
    if fed.fraction_evaluate > 0:
        raise ConfigError(
            f"federation.fraction_evaluate = {fed.fraction_evaluate!r} is refused with privacy.mode = "
            f"{priv.mode!r}: federated evaluation sends a loss computed on the sites' patients without noise, "
            f"outside the privacy guarantee; use the server's held-out probe (federation.eval_every) instead")
    split = fed.split
    if split not in row.splits:
        raise ConfigError(f"federation.split = {split!r} is refused with privacy.mode = {priv.mode!r}")
    if priv.mode == "client":
        m = clients_per_round(exp)
        why = ("client-level DP accounting (flwr 1.41, no amplification) needs exactly the same sites in every "
               f"round and no dropout: set federation.fraction_train = 1.0 and federation.min_train_nodes = "
               f"federation.min_available_nodes = {m} (the number of sites)")
        if fed.fraction_train != 1.0:
            raise ConfigError(f"federation.fraction_train = {fed.fraction_train!r} is refused: {why}")
        for key in ("min_train_nodes", "min_available_nodes"):
            if getattr(fed, key) != m:
                raise ConfigError(f"federation.{key} = {getattr(fed, key)!r} is refused with privacy.mode = 'client': {why}")
        if n_sites is not None and n_sites != m:
            raise ConfigError(f"the federation has {n_sites} sites but privacy.mode = 'client' expects exactly {m} in "
                              f"every round: {why}")
    return priv


def compatibility_table() -> str:
    """The table of :data:`COMPATIBILITY` in Markdown (docs/privacy.md holds this text)."""
    lines = ["| DP mode | strategies | partitioning | dropout | norm | note |",
             "|---|---|---|---|---|---|"]
    for r in COMPATIBILITY:
        lines.append(f"| {r.mode} | {', '.join(r.strategies)} | {', '.join(r.splits)} | {r.dropout} | "
                     f"{', '.join(r.norms)} | {r.note} |")
    return "\n".join(lines)
