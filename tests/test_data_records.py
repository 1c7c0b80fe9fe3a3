"""Reading: lead names, WFDB records (real and damaged), annotations, the two cohort sources."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import wfdb

from clef_core.data.errors import BadRecordError
from clef_core.data.leads import LEADS, canonical_lead, lead_channels
from clef_core.data.records import (
    count_source,
    iter_mimic_records,
    iter_source,
    iter_wfdb_folder,
    read_annotations,
    read_record,
    source_kind,
)
from wfdb_factory import MIMIC_ORDER, bad_records, ecg_like, mimic_layout, write


@pytest.mark.parametrize(
    "name, lead",
    [("I", "I"), ("i", "I"), ("ii", "II"), ("III", "III"), ("MLII", "II"), ("ML2", "II"), ("mlii", "II"),
     ("MLIII", "III"), ("DII", "II"), ("avr", "aVR"), ("AVL", "aVL"), ("aVF", "aVF"), ("V1", "V1"),
     ("v6", "V6"), ("MV1", "V1"), ("Lead II", "II"), ("lead_v3", "V3"), (" V4 ", "V4")],
)
def test_lead_aliases(name: str, lead: str) -> None:
    assert canonical_lead(name) == lead


@pytest.mark.parametrize("name", ["vx", "noise1", "ABP", "V7", "", "PLETH", "lead"])
def test_non_leads_are_not_matched(name: str) -> None:
    assert canonical_lead(name) is None


def test_lead_channels_canonical_order_first_duplicate_wins() -> None:
    assert lead_channels(["V5", "MLII", "ii", "vx"], "r1") == {"II": 1, "V5": 0}
    assert list(lead_channels(MIMIC_ORDER, "r1")) == list(LEADS)
    with pytest.raises(BadRecordError, match="record r9: unknown_leads") as err:
        lead_channels(["vx", "vy"], "r9")
    assert err.value.reason == "unknown_leads" and err.value.record_id == "r9"


def test_every_shared_12_lead_record_reads(shared_data: Path) -> None:
    paths = sorted((shared_data / "ecg").glob("*.hea"))
    assert len(paths) == 25
    for hea in paths:
        rec = read_record(hea.with_suffix(""))
        assert rec.name == hea.stem and rec.leads == list(LEADS)
        assert rec.signal.shape == (12, 5000) and rec.signal.dtype == np.float32 and rec.fs == 500
        assert {u.lower() for u in rec.units} == {"mv"}
        assert any(c.startswith("Age:") for c in rec.comments)
        raw = wfdb.rdsamp(str(hea.with_suffix("")))[0].T
        np.testing.assert_allclose(rec.signal, raw, atol=1e-6)  # mV in, mV out
        assert 0.1 < np.abs(rec.signal).max() < 10


def test_ptb_record_lower_case_leads_frank_leads_dropped(shared_data: Path) -> None:
    rec = read_record(shared_data / "wfdb" / "s0010_re")
    assert rec.leads == list(LEADS) and rec.source_leads[:3] == ["i", "ii", "iii"]
    assert rec.fs == 1000 and rec.signal.shape == (12, 38400)
    assert rec.duration_s == pytest.approx(38.4)
    assert any("140/80" in c for c in rec.comments)


@pytest.mark.parametrize("name, leads", [("101", ["II", "V1"]), ("114", ["II", "V5"]), ("124", ["II", "V4"])])
def test_mitdb_mlii_is_lead_ii(shared_data: Path, name: str, leads: list[str]) -> None:
    rec = read_record(shared_data / "mitdb" / name)
    assert rec.leads == leads and rec.fs == 360 and rec.signal.shape == (2, 650000)
    assert "MLII" in rec.source_leads


def test_mitdb_annotations(shared_data: Path) -> None:
    ann = read_annotations(shared_data / "mitdb" / "203")
    assert ann.fs == 360 and len(ann.sample) == len(ann.symbol) == len(ann.aux_note)
    assert np.all(np.diff(ann.sample) >= 0)
    assert {"N", "V"} <= set(ann.symbol)
    rhythms = {label for _, label in ann.rhythm_changes}
    assert "AFIB" in rhythms and all(not r.startswith("(") and "\x00" not in r for r in rhythms)
    normal = read_annotations(shared_data / "mitdb" / "101")
    assert sum(s == "N" for s in normal.symbol) > 1000
    with pytest.raises(BadRecordError, match="missing_file"):
        read_annotations(shared_data / "ecg" / "HR06000")


def test_units_converted_not_mis_scaled(tmp_path: Path) -> None:
    x = ecg_like(2, 500, 10)
    in_mv = read_record(write(tmp_path, "mv", x, leads=["I", "II"], gain=1000))
    in_uv = read_record(write(tmp_path, "uv", x * 1000, leads=["I", "II"], units="uV", gain=1.0))
    in_v = read_record(write(tmp_path, "v", x / 1000, leads=["I", "II"], units="V", gain=1e6))
    np.testing.assert_allclose(in_uv.signal, in_mv.signal, atol=1e-3)
    np.testing.assert_allclose(in_v.signal, in_mv.signal, atol=1e-3)
    write(tmp_path, "pressure", x, leads=["I", "II"], units="mmHg")
    with pytest.raises(BadRecordError, match="record pressure: bad_units.*mmHg"):
        read_record(tmp_path / "pressure")


READER_CASES = ["truncated", "nodat", "liar", "noleads", "fastfs"]


def test_bad_files_named_with_reason(tmp_path: Path) -> None:
    cases = bad_records(tmp_path)
    for name in READER_CASES:
        with pytest.raises(BadRecordError) as err:
            read_record(tmp_path / name, record_id=f"site/{name}")
        assert err.value.reason == cases[name], name
        assert f"record site/{name}:" in str(err.value)


def test_header_claiming_fewer_samples_than_file(tmp_path: Path) -> None:
    from wfdb_factory import set_header_length

    p = write(tmp_path, "short_header", ecg_like(2, 500, 12), leads=["I", "II"])
    set_header_length(p, 3000)
    with pytest.raises(BadRecordError, match="header_length_mismatch: header says 3000 samples"):
        read_record(p)


def test_missing_and_corrupt_header(tmp_path: Path) -> None:
    with pytest.raises(BadRecordError, match="record nothere: missing_file"):
        read_record(tmp_path / "nothere")
    (tmp_path / "garbage.hea").write_text("this is not a header\n")
    with pytest.raises(BadRecordError, match="record garbage: corrupt_signal"):
        read_record(tmp_path / "garbage")


def test_wfdb_folder_source(tmp_path: Path) -> None:
    write(tmp_path / "b", "r2", ecg_like(1, 500, 10), leads=["I"])
    write(tmp_path / "a" / "deep", "r1", ecg_like(1, 500, 10), leads=["I"])
    write(tmp_path, "r0", ecg_like(1, 500, 10), leads=["I"])
    write(tmp_path / ".partial-x", "hidden", ecg_like(1, 500, 10), leads=["I"])
    refs = list(iter_wfdb_folder(tmp_path))
    assert [r.record_id for r in refs] == ["r0", "a/deep/r1", "b/r2"]
    assert all(r.subject_id == r.record_id and r.cart_id is None for r in refs)
    assert read_record(refs[1].path).signal.shape == (1, 5000)
    assert source_kind(tmp_path) == "wfdb_folder" and count_source(tmp_path) == 3


def test_mimic_layout_source(tmp_path: Path) -> None:
    rows = mimic_layout(tmp_path, n=3)
    assert source_kind(tmp_path) == "mimic" and count_source(tmp_path) == 3
    refs = list(iter_source(tmp_path))
    assert [r.record_id for r in refs] == [row["study_id"] for row in rows]
    assert [r.subject_id for r in refs] == [row["subject_id"] for row in rows]
    assert [r.cart_id for r in refs] == ["cart0", "cart1", "cart0"]
    assert refs[0].ecg_time == datetime(2180, 7, 20, 8, 44)
    assert refs[0].path == tmp_path / "files/p1000/p10000032/s40689238/40689238"
    rec = read_record(refs[0].path, record_id=refs[0].record_id)
    raw = wfdb.rdsamp(str(refs[0].path))[0]
    # MIMIC stores aVF before aVL: the reader must put them in canonical order.
    np.testing.assert_allclose(rec.signal[LEADS.index("aVL")], raw[:, MIMIC_ORDER.index("aVL")], atol=1e-6)
    np.testing.assert_allclose(rec.signal[LEADS.index("aVF")], raw[:, MIMIC_ORDER.index("aVF")], atol=1e-6)


def test_mimic_layout_without_machine_measurements(tmp_path: Path) -> None:
    mimic_layout(tmp_path, n=2, cart=False)
    assert [r.cart_id for r in iter_mimic_records(tmp_path)] == [None, None]
