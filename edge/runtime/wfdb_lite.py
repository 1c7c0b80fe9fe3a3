"""A numpy-only reader for one lead of a WFDB record, for devices and gateways without wfdb.

Covers the uncompressed formats ECG recorders and PhysioNet use most: 16 (int16 little-endian,
also inside CinC ``.mat`` files via the header's byte offset), 61 (int16 big-endian), 80 (8-bit
offset binary) and 212 (two 12-bit samples in 3 bytes), one sample per frame per signal.
Header syntax: PhysioNet's "header(5)" (record line ``name nsig fs nsamp``; signal lines
``file fmt[+offset] gain[(baseline)][/units] adcres adczero initval checksum blocksize desc``).
Physical value = (digital - baseline) / gain, converted to mV; the format's invalid-sample code
becomes NaN. Anything else (other formats, multi-rate frames, truncated files) is a
:class:`~.arrays.RecordError` naming the record.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from .arrays import RecordError

UNIT_TO_MV = {"mv": 1.0, "uv": 1e-3, "µv": 1e-3, "v": 1e3}
ALIASES = {"mlii": "ii", "mli": "i", "mliii": "iii"}  # MIT-BIH modified limb leads


def lead_key(name: str) -> str:
    """A lead name compared case-insensitively, MIT-BIH's modified limb leads as the limb leads."""
    return ALIASES.get(name.strip().lower(), name.strip().lower())
_FMT = re.compile(r"^(?P<fmt>\d+)(x(?P<spf>\d+))?(:\d+)?(\+(?P<off>\d+))?$")
_GAIN = re.compile(r"^(?P<gain>[-+\d.eE]+)(\((?P<base>-?\d+)\))?(/(?P<units>\S+))?$")


def _signal_lines(header: Path, rid: str) -> tuple[float, int, list[dict]]:
    lines = [ln.strip() for ln in header.read_text(errors="replace").splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    if not lines:
        raise RecordError(f"record {rid}: empty header")
    rec = lines[0].split()
    if len(rec) < 2 or "/" in rec[0]:
        raise RecordError(f"record {rid}: multi-segment or malformed record line {lines[0]!r}")
    nsig = int(rec[1])
    fs = float(rec[2].split("/")[0].split("(")[0]) if len(rec) > 2 else 250.0
    nsamp = int(rec[3]) if len(rec) > 3 else -1
    sigs: list[dict] = []
    for ln in lines[1 : 1 + nsig]:
        f = ln.split()
        m = _FMT.match(f[1]) if len(f) > 1 else None
        if m is None:
            raise RecordError(f"record {rid}: bad signal line {ln!r}")
        g = _GAIN.match(f[2]) if len(f) > 2 else None
        gain = float(g["gain"]) if g else 200.0
        adczero = int(f[4]) if len(f) > 4 else 0
        sigs.append({
            "file": f[0], "fmt": m["fmt"], "spf": int(m["spf"] or 1), "offset": int(m["off"] or 0),
            "gain": gain or 200.0, "baseline": int(g["base"]) if g and g["base"] is not None else adczero,
            "units": (g["units"] if g and g["units"] else "mV"), "name": " ".join(f[8:]) if len(f) > 8 else f"sig{len(sigs)}",
        })
    if len(sigs) != nsig:
        raise RecordError(f"record {rid}: header lists {nsig} signals but has {len(sigs)} signal lines")
    return fs, nsamp, sigs


def _decode(raw: bytes, fmt: str, rid: str) -> tuple[np.ndarray, int]:
    """Digital samples (flat, frame-interleaved) and the format's invalid-sample code."""
    if fmt == "16":
        return np.frombuffer(raw[: len(raw) // 2 * 2], dtype="<i2").astype(np.int32), -32768
    if fmt == "61":
        return np.frombuffer(raw[: len(raw) // 2 * 2], dtype=">i2").astype(np.int32), -32768
    if fmt == "80":
        return np.frombuffer(raw, dtype=np.uint8).astype(np.int32) - 128, -128
    if fmt == "212":
        b = np.frombuffer(raw[: len(raw) // 3 * 3], dtype=np.uint8).astype(np.int32).reshape(-1, 3)
        s0 = b[:, 0] | ((b[:, 1] & 0x0F) << 8)
        s1 = b[:, 2] | ((b[:, 1] & 0xF0) << 4)
        out = np.stack([s0, s1], axis=1).reshape(-1)
        return np.where(out >= 2048, out - 4096, out), -2048
    raise RecordError(f"record {rid}: WFDB format {fmt} is not supported by the numpy reader (16, 61, 80, 212)")


BYTES_PER_SAMPLE = {"16": 2.0, "61": 2.0, "80": 1.0, "212": 1.5}


class _Lead:
    """One lead of a record: where its samples are and how to scale them."""

    def __init__(self, path: Path, lead: str | None, prefer: tuple[str, ...]) -> None:
        rid = self.rid = path.name
        header = path.with_name(path.name + ".hea")
        if not header.is_file():
            raise RecordError(f"record {rid}: no header {header}")
        try:
            self.fs, nsamp, sigs = _signal_lines(header, rid)
        except (ValueError, IndexError) as exc:
            raise RecordError(f"record {rid}: malformed header: {exc}") from exc
        names = [s["name"] for s in sigs]
        keys = [lead_key(n) for n in names]
        wanted = [lead] if lead else [*prefer]
        idx = next((keys.index(lead_key(w)) for w in wanted if lead_key(w) in keys), None)
        if idx is None:
            if lead:
                raise RecordError(f"record {rid}: no lead {lead!r} (has {', '.join(names)})")
            idx = 0
        s = self.sig = sigs[idx]
        group = [t for t in sigs if t["file"] == s["file"]]
        if any(t["spf"] != 1 for t in group) or len({(t["fmt"], t["offset"]) for t in group}) != 1:
            raise RecordError(f"record {rid}: mixed formats or several samples per frame in {s['file']}: not supported")
        if s["fmt"] not in BYTES_PER_SAMPLE:
            raise RecordError(f"record {rid}: WFDB format {s['fmt']} is not supported by the numpy reader (16, 61, 80, 212)")
        self.data_file = path.parent / s["file"]
        if not self.data_file.is_file():
            raise RecordError(f"record {rid}: missing signal file {self.data_file.name}")
        self.n_ch, self.col = len(group), group.index(s)
        available = int((self.data_file.stat().st_size - s["offset"]) / (BYTES_PER_SAMPLE[s["fmt"]] * self.n_ch))
        if nsamp > 0 and available < nsamp:
            raise RecordError(f"record {rid}: signal file {self.data_file.name} holds {available} samples, header says {nsamp}")
        self.n = nsamp if nsamp > 0 else available
        unit = UNIT_TO_MV.get(s["units"].lower().replace("μ", "µ"))
        if unit is None:
            raise RecordError(f"record {rid}: lead {s['name']} has units {s['units']!r}, not a voltage")
        self.unit = unit

    def chunks(self, frames: int):
        """The lead in mV, ``frames`` samples at a time (even, so 212 pairs never split)."""
        frames += frames % 2
        bps = BYTES_PER_SAMPLE[self.sig["fmt"]]
        with open(self.data_file, "rb") as fh:
            for start in range(0, self.n, frames):
                count = min(frames, self.n - start)
                fh.seek(self.sig["offset"] + int(start * self.n_ch * bps))
                raw = fh.read(int(np.ceil(count * self.n_ch * bps)))
                digital, invalid = _decode(raw, self.sig["fmt"], self.rid)
                col = digital[: count * self.n_ch].reshape(count, self.n_ch)[:, self.col]
                x = (col.astype(np.float64) - self.sig["baseline"]) / self.sig["gain"] * self.unit
                x[col == invalid] = np.nan
                yield x


def open_wfdb_lead(path: str | Path, lead: str | None = None, prefer: tuple[str, ...] = (),
                   chunk_s: float = 60.0):
    """``(chunks, fs, lead name)``: a generator of one lead's samples in mV, ``chunk_s`` at a time,
    reading the file piece by piece (constant memory however long the record)."""
    r = _Lead(Path(path), lead, prefer)
    return r.chunks(max(2, int(chunk_s * r.fs))), r.fs, r.sig["name"]


def read_wfdb_lead(path: str | Path, lead: str | None = None, prefer: tuple[str, ...] = ()) -> tuple[np.ndarray, float, str]:
    """``(signal in mV (N,), fs, lead name)`` of one lead of the WFDB record at ``path`` (no extension).

    ``lead`` is matched case-insensitively (MLII counts as II); without it the first of
    ``prefer`` that the record has is used, else its first signal.
    """
    r = _Lead(Path(path), lead, prefer)
    return np.concatenate(list(r.chunks(r.n))), r.fs, r.sig["name"]
