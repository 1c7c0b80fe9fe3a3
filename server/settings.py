"""The server's typed ``[federation]`` settings: :class:`clef_core.federation.settings.FederationSettings`
(re-exported here for server/ and simulations/)."""

from __future__ import annotations

from clef_core.federation.settings import LR_SCHEDULES, STRATEGIES, FederationSettings

__all__ = ["LR_SCHEDULES", "STRATEGIES", "FederationSettings"]
