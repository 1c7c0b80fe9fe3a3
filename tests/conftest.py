"""Shared fixtures: where the real ECG data lives (../shared/data beside the repo)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("CLEF_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "README.md").is_file():
        pytest.skip(f"real data folder not found at {SHARED_DATA}")
    return SHARED_DATA


# --- tiny pretrained model, shared by training / evaluation / federated / edge tests --------------
# One synthetic cohort (30 patients), prepared once per session, and a small encoder trained on it
# for a few steps. Read-only for the tests that use them.

TINY_OVERRIDES = (
    "synth.patients=30",
    "train.batch_size=8",
    "train.max_steps=3",
    "train.epochs=1",
    "train.lr=1e-3",
)


@pytest.fixture(scope="session")
def tiny_config():
    """The :class:`~clef_core.experiment.Experiment` of the tiny cohort and run (frozen: change it with
    ``tiny_config.replace(train={...})``)."""
    from clef_core.experiment import load_experiment

    return load_experiment(overrides=TINY_OVERRIDES)


@pytest.fixture(scope="session")
def tiny_site(tmp_path_factory, tiny_config):
    """A :class:`clef_core.prepared_site.PreparedSite` of the built-in synthetic cohort at 30 patients
    (cohort in ``site.work_dir / "cohort"``, store in ``site.work_dir / "store"``)."""
    from clef_core.prepared_site import default_cohort, prepare_site

    work = tmp_path_factory.mktemp("tiny_site")
    return prepare_site(default_cohort(work, tiny_config), work, tiny_config)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tiny_site, tiny_config) -> Path:
    """``final_model.pt`` (clef model format) of a small encoder pretrained for 3 steps on
    ``tiny_site``; its run folder (metrics.jsonl, train_state.pt) is the file's parent."""
    import torch

    from clef_core.train import pretrain

    torch.set_num_threads(1)
    result = pretrain(tiny_config, run_dir=tmp_path_factory.mktemp("tiny_run"), site=tiny_site, progress=False)
    return result.final_model
