"""The cohort a training command runs on: the one given, or the built-in synthetic one."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any


def prepare_cohort_site(command: str, cohort: Path | None, work: Path, cfg: dict[str, Any], *, progress: bool) -> Any:
    """``prepare_site`` on ``cohort``, or on the default cohort synthesised into ``work``
    (saying so on stderr, as ``clef <command>``)."""
    from clef_core.pipeline import default_cohort, prepare_site

    if cohort is None:
        print(f"clef {command}: synthesising the built-in cohort ({cfg['synth']['patients']} patients) in {work / 'cohort'}",
              file=sys.stderr)
        cohort = default_cohort(work, cfg)
    return prepare_site(cohort, work, cfg, progress=progress)
