"""Differential privacy for federated CLEF pretraining (no Flower imports here).

* patient-level DP-SGD sound for the contrastive loss: a public negative bank
  (:mod:`~clef_core.privacy.bank`), the decoupled per-patient loss (:mod:`~clef_core.privacy.loss`),
  per-patient clipping and Gaussian noise (:mod:`~clef_core.privacy.dpsgd`);
* RDP accounting (:mod:`~clef_core.privacy.accounting`) and the site's durable ledger with a
  budget (:mod:`~clef_core.privacy.ledger`, :mod:`~clef_core.privacy.private_round`);
* the DP-mode compatibility table (:mod:`~clef_core.privacy.compat`).

See docs/privacy.md for the guarantee and its argument.
"""

from clef_core.privacy.accounting import epsilon
from clef_core.privacy.compat import COMPATIBILITY, check_privacy, compatibility_table
from clef_core.privacy.settings import MODES, PrivacyConfig
from clef_core.privacy.ledger import Entry, LedgerError, PrivacyLedger

__all__ = [
    "COMPATIBILITY",
    "MODES",
    "Entry",
    "LedgerError",
    "PrivacyConfig",
    "PrivacyLedger",
    "check_privacy",
    "compatibility_table",
    "epsilon",
]
