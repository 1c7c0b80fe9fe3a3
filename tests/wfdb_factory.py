"""Small real WFDB records written with wfdb.wrsamp for the data-layer tests, good and damaged."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import wfdb

TWELVE = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]
MIMIC_ORDER = ["I", "II", "III", "aVR", "aVF", "aVL", "V1", "V2", "V3", "V4", "V5", "V6"]


def ecg_like(n_leads: int, fs: float, seconds: float, seed: int = 0) -> np.ndarray:
    """(samples, leads) in mV: a 72 bpm train of QRS-like Gaussians + a T wave, lead-scaled."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(fs * seconds))) / fs
    beats = np.arange(0.3, seconds, 60 / 72)
    qrs = np.exp(-(((t[:, None] - beats[None]) / 0.012) ** 2)).sum(1)
    twave = np.exp(-(((t[:, None] - beats[None] - 0.25) / 0.05) ** 2)).sum(1)
    scale = rng.uniform(0.5, 1.5, n_leads) * rng.choice([-1, 1], n_leads)
    return (qrs[:, None] * scale + 0.2 * twave[:, None] + 0.01 * rng.standard_normal((len(t), n_leads)))


def write(directory: Path, name: str, signal: np.ndarray, fs: float = 500, leads: list[str] | None = None,
          units: str = "mV", gain: float = 200.0) -> Path:
    """Write ``signal`` (samples, leads) as a format-16 WFDB record; returns its path without extension."""
    directory.mkdir(parents=True, exist_ok=True)
    n = signal.shape[1]
    wfdb.wrsamp(name, fs=fs, units=[units] * n, sig_name=leads or TWELVE[:n], p_signal=signal,
                fmt=["16"] * n, adc_gain=[gain] * n, baseline=[0] * n, write_dir=str(directory))
    return directory / name


def set_header_length(path: Path, sig_len: int) -> None:
    hea = path.with_suffix(".hea")
    lines = hea.read_text().splitlines()
    first = lines[0].split()
    first[3] = str(sig_len)
    hea.write_text("\n".join([" ".join(first), *lines[1:]]) + "\n")


def bad_records(directory: Path) -> dict[str, str]:
    """Write one damaged record per bad-input case; returns {record name: expected reason}."""
    good = ecg_like(3, 500, 12)
    cases: dict[str, str] = {}

    p = write(directory, "truncated", good, leads=["I", "II", "V1"])
    dat = p.with_suffix(".dat")
    dat.write_bytes(dat.read_bytes()[: dat.stat().st_size // 2 + 1])
    cases["truncated"] = "truncated"

    p = write(directory, "nodat", good, leads=["I", "II", "V1"])
    p.with_suffix(".dat").unlink()
    cases["nodat"] = "missing_file"

    p = write(directory, "liar", good, leads=["I", "II", "V1"])
    set_header_length(p, 2 * len(good))
    cases["liar"] = "header_length_mismatch"

    write(directory, "flat", np.full((6000, 3), 0.3), leads=["I", "II", "V1"])
    cases["flat"] = "flat_line"

    write(directory, "allnan", np.full((6000, 3), np.nan), leads=["I", "II", "V1"])
    cases["allnan"] = "all_nan"

    write(directory, "short", ecg_like(3, 500, 6), leads=["I", "II", "V1"])
    cases["short"] = "too_short"

    write(directory, "noleads", good, leads=["foo", "bar", "vx"])
    cases["noleads"] = "unknown_leads"

    write(directory, "fastfs", ecg_like(2, 1000, 12), fs=1e6, leads=["I", "II"])
    cases["fastfs"] = "bad_sampling_rate"

    gap = good.copy()
    gap[1000:2500, :] = np.nan  # 3 s in every lead of the only window (one lead: masked, record kept)
    write(directory, "gap", gap, leads=["I", "II", "V1"])
    cases["gap"] = "nan_gap"

    write(directory, "microvolts_as_mv", good * 1000, leads=["I", "II", "V1"], gain=1.0)
    cases["microvolts_as_mv"] = "out_of_range"
    return cases


def copy_record(src: Path, directory: Path, name: str | None = None) -> Path:
    """Copy a WFDB record (header + its signal files) into ``directory``, optionally renamed."""
    directory.mkdir(parents=True, exist_ok=True)
    name = name or src.name
    header = src.with_suffix(".hea").read_text()
    for file in src.parent.glob(src.name + ".*"):
        if file.suffix != ".hea":
            shutil.copy(file, directory / (name + file.suffix))
    (directory / f"{name}.hea").write_text(header.replace(src.name, name))
    return directory / name


def mimic_layout(root: Path, n: int = 3, cart: bool = True) -> list[dict[str, str]]:
    """A tiny MIMIC-IV-ECG layout (record_list.csv, machine_measurements.csv, files/...)."""
    rows = []
    for k in range(n):
        subject, study = 10000032 + k, 40689238 + 7 * k
        rel = f"files/p{str(subject)[:4]}/p{subject}/s{study}/{study}"
        write(root / Path(rel).parent, str(study), ecg_like(12, 500, 10, seed=k), leads=MIMIC_ORDER)
        rows.append({"subject_id": str(subject), "study_id": str(study), "file_name": str(study),
                     "ecg_time": f"2180-07-2{k} 08:44:00", "path": rel, "cart_id": f"cart{k % 2}"})
    with open(root / "record_list.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, ["subject_id", "study_id", "file_name", "ecg_time", "path"], extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    if cart:
        with open(root / "machine_measurements.csv", "w", newline="") as fh:
            w = csv.DictWriter(fh, ["subject_id", "study_id", "cart_id", "ecg_time"], extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)
    return rows
