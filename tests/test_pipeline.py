"""prepare_site / default_cohort: layouts, caching, regeneration of half-written or changed cohorts."""

from __future__ import annotations

import json
import shutil

import pytest

from clef_core.prepared_site import COHORT_MARKER, default_cohort, detect_layout, prepare_site


def test_default_cohort_is_reused_and_regenerated_when_incomplete_or_changed(tmp_path, tiny_config):
    cohort = default_cohort(tmp_path, tiny_config)
    assert json.loads((cohort / "cohort.json").read_text())["patients"] == 30
    stamp = (cohort / "record_list.csv").stat().st_mtime_ns
    assert default_cohort(tmp_path, tiny_config) == cohort
    assert (cohort / "record_list.csv").stat().st_mtime_ns == stamp  # reused, not rewritten

    (cohort / COHORT_MARKER).unlink()  # as if the run died before marking it complete
    (cohort / "cohort.json").unlink()
    shutil.rmtree(cohort / "hosp")
    default_cohort(tmp_path, tiny_config)
    assert (cohort / "hosp").is_dir() and (cohort / COHORT_MARKER).is_file()

    other = tiny_config.replace(synth={"patients": 12})
    default_cohort(tmp_path, other)
    assert json.loads((cohort / "cohort.json").read_text())["patients"] == 12


def test_prepared_site_is_cached_and_follows_a_replaced_cohort(tmp_path, tiny_config, tiny_site):
    again = prepare_site(tiny_site.root, tiny_site.work_dir, tiny_config, progress=False)
    assert again.build_report.cached and len(again.store) == len(tiny_site.store)
    assert again.clinical.equals(tiny_site.clinical)
    assert tiny_site.layout == "mimic" and tiny_site.labels is not None
    summary = tiny_site.summary()
    assert summary["subjects"] == 30 and summary["cohort"]["patients"] == 30 and summary["skipped"] == 0

    small = tiny_config.replace(synth={"patients": 12})
    work = tmp_path / "work"
    first = prepare_site(default_cohort(work, tiny_config), work, tiny_config, progress=False)
    second = prepare_site(default_cohort(work, small), work, small, progress=False)
    assert first.summary()["subjects"] == 30 and second.summary()["subjects"] == 12
    assert len(second.clinical) < len(first.clinical)


def test_wfdb_folder_is_detected_and_prepared(tmp_path, shared_data, tiny_config):
    assert detect_layout(shared_data / "ecg") == "wfdb"
    site = prepare_site(shared_data / "ecg", tmp_path, tiny_config, progress=False)
    assert site.layout == "wfdb" and site.labels is None
    assert len(site.store) > 0 and len(site.clinical) == site.build_report.n_records
    assert set(site.store.index["record_id"]) <= set(site.clinical["record_id"].astype(str))


def test_unusable_folders_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="cohort folder not found"):
        detect_layout(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="neither a MIMIC-IV-ECG layout"):
        detect_layout(tmp_path / "empty")
