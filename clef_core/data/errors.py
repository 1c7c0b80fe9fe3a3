"""Typed errors of the ECG data layer.

Every bad input gets a :class:`BadRecordError` naming the record and one reason out of
:data:`REASONS`, so a store build can skip the record, count it by reason and report it
(``skipped.csv``), while a bug elsewhere still surfaces as an ordinary exception.
"""

from __future__ import annotations

REASONS: tuple[str, ...] = (
    "missing_file",  # .hea or signal file absent
    "corrupt_signal",  # unreadable header or signal file
    "truncated",  # signal file ends inside a sample frame
    "header_length_mismatch",  # signal file holds whole frames, but not as many as the header says
    "flat_line",  # no window survives, most of them flat (edge/runtime/quality.py)
    "all_nan",  # no finite sample in any lead
    "too_short",  # shorter than one window
    "unknown_leads",  # no recognisable lead name
    "bad_sampling_rate",  # absurd, or too low for the band-pass
    "bad_units",  # physical units that are not a voltage
    "out_of_range",  # no window survives, most of them beyond the plausible mV range (mis-scaled units?)
    "nan_gap",  # no window survives, most of them in NaN gaps longer than max_nan_gap_s
    "not_ecg",  # no window survives, most of them random noise
)


class BadRecordError(ValueError):
    """A record that cannot be used, with the record's id and a reason from :data:`REASONS`."""

    def __init__(self, record_id: str, reason: str, detail: str = "") -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown bad-record reason {reason!r}; expected one of {REASONS}")
        self.record_id = str(record_id)
        self.reason = reason
        self.detail = detail
        super().__init__(f"record {self.record_id}: {reason}" + (f": {detail}" if detail else ""))

    def __reduce__(self):  # keep the three fields through pickling (worker processes)
        return (type(self), (self.record_id, self.reason, self.detail))


class StoreError(RuntimeError):
    """A preprocessed store that is missing, partial, corrupt, of another version, or locked."""
