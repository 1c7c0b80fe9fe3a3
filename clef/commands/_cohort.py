"""The cohort a training command runs on: the one given (one folder or several), or the built-in synthetic one."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from clef_core.experiment import Experiment


def prepare_cohort_site(command: str, cohort: Path | Sequence[Path] | None, work: Path, exp: Experiment, *,
                        progress: bool) -> Any:
    """``prepare_site`` on ``cohort`` (several folders: one cohort of all their records,
    :func:`clef_core.multi_cohort.prepare_folders`), or on the default cohort synthesised into
    ``work`` (saying so on stderr, as ``clef <command>``)."""
    from clef_core.multi_cohort import prepare_folders
    from clef_core.prepared_site import default_cohort

    if cohort is None or (not isinstance(cohort, (str, Path)) and not cohort):
        print(f"clef {command}: synthesising the built-in cohort ({exp.synth.patients} patients) in {work / 'cohort'}",
              file=sys.stderr)
        cohort = default_cohort(work, exp)
    folders = [cohort] if isinstance(cohort, (str, Path)) else list(cohort)
    return prepare_folders(folders, work, exp, progress=progress)
