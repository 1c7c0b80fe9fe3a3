"""What a site's replies carry: the metric keys of the message contract.

Flower's Message-API strategies need every train reply to hold exactly one ArrayRecord (the
weights) and one MetricRecord with the same keys at every site, including the weighting key
``num-examples``. Every key here is an aggregate a site may send (docs/privacy.md lists what each
means under DP); record names, patient ids and error text stay in the site's own log.
The server (server/validation.py, strategy.py, privacy.py) reads these same names from here.
"""

from __future__ import annotations

from clef_core.data.errors import REASONS

WEIGHT_KEY = "num-examples"
SITE_INDEX_KEY = "site-index"  # the site's position in sites.json: the server names sites by it, never averages it
EPSILON_KEY, DELTA_KEY, EXHAUSTED_KEY = "privacy.epsilon", "privacy.delta", "privacy.budget_exhausted"
SKIP_KEYS = tuple(f"skipped.{r}" for r in REASONS) + ("skipped.other", "skipped.empty_batches",
                                                       "skipped.windows_without_leads")
TRAIN_METRICS = (WEIGHT_KEY, "train_loss", "examples", "steps", "seconds", SITE_INDEX_KEY) + SKIP_KEYS
PRIVACY_METRICS = (EPSILON_KEY, DELTA_KEY, EXHAUSTED_KEY, "privacy.unit_is_record")
EVALUATE_METRICS = (WEIGHT_KEY, "eval_loss", SITE_INDEX_KEY)
