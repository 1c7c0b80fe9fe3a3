"""What a site's replies carry: the metric keys of the message contract.

Flower's Message-API strategies need every train reply to hold exactly one ArrayRecord (the
weights) and one MetricRecord with the same keys at every site, including the weighting key
``num-examples``. Every key here is an aggregate a site may send (docs/privacy.md lists what each
means under DP); record names, patient ids and error text stay in the site's own log.
"""

from __future__ import annotations

from clef_core.data.errors import REASONS

WEIGHT_KEY = "num-examples"
SKIP_KEYS = tuple(f"skipped.{r}" for r in REASONS) + ("skipped.other", "skipped.empty_batches",
                                                       "skipped.windows_without_leads")
TRAIN_METRICS = (WEIGHT_KEY, "train_loss", "examples", "steps", "seconds", "site-index") + SKIP_KEYS
PRIVACY_METRICS = ("privacy.epsilon", "privacy.delta", "privacy.budget_exhausted", "privacy.unit_is_record")
EVALUATE_METRICS = (WEIGHT_KEY, "eval_loss", "site-index")
