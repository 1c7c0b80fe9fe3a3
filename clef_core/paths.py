"""Where the real example data lives: ``$CLEF_SHARED_DATA``, else ``../shared/data`` beside the
repository (the layout of a checkout and of CI)."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir(name: str, configured: str = "") -> Path:
    """``configured`` when given, else ``$CLEF_SHARED_DATA/name``, else ``<repo>/../shared/data/name``."""
    if configured:
        return Path(configured).expanduser()
    base = os.environ.get("CLEF_SHARED_DATA") or REPO_ROOT.parent / "shared" / "data"
    return Path(base) / name
