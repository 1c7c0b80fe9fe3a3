"""Clinical risk models for CLEF's weights, chosen per experiment ([risk] model).

  score2           SCORE2 / SCORE2-OP (ESC 2021), Europe, 40-89 y      clef_core.score2
  prevent          PREVENT (AHA 2023), US, race-free, 30-79 y         clef_core.risk.prevent
  pce              Pooled Cohort Equations (ACC/AHA 2013), 40-79 y     clef_core.risk.pce
  score2_diabetes  SCORE2-Diabetes (ESC 2023), type 2 diabetes, 40-69  clef_core.risk.score2_diabetes

:func:`risk_frame` scores a table (never raising per row; NaN with a reason), the same
missing-metadata policy for every model; :func:`risk_of_person` scores one person strictly.
"""

from clef_core.risk.frame import ALL_INPUTS, completeness, risk_frame
from clef_core.risk.models import MODELS, RiskModel, get_model
from clef_core.risk.person import risk_of_person
from clef_core.risk.settings import MODEL_NAMES, RiskSettings

__all__ = ["ALL_INPUTS", "MODELS", "MODEL_NAMES", "RiskModel", "RiskSettings", "completeness", "get_model", "risk_frame", "risk_of_person"]
