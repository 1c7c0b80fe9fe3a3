"""The canonical 12-lead order and lead-name matching.

Records name their leads in many ways: CinC/PTB-XL "I", "aVR"; PTB lower case "i", "avr";
MIT-BIH modified limb leads "MLII" (Holter lead II); European "DII"; "Lead V1". Matching is
case-insensitive after dropping spaces, "_", "-" and a "lead"/"ecg" prefix. Anything else
(Frank leads "vx", noise channels, ...) is not an ECG lead of the 12 and is left out.
"""

from __future__ import annotations

from collections.abc import Sequence

from clef_core.data.errors import BadRecordError

LEADS: tuple[str, ...] = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
LEAD_INDEX: dict[str, int] = {name: i for i, name in enumerate(LEADS)}


def _alias_table() -> dict[str, str]:
    table: dict[str, str] = {}
    for roman, lead in (("i", "I"), ("ii", "II"), ("iii", "III")):
        for prefix in ("", "ml", "d"):  # plain, MIT-BIH modified limb lead, European D-notation
            table[prefix + roman] = lead
    for arabic, lead in (("1", "I"), ("2", "II"), ("3", "III")):
        table["ml" + arabic] = lead
        table["d" + arabic] = lead
    for aug in ("vr", "vl", "vf"):
        table["a" + aug] = "a" + aug.upper()
    for k in range(1, 7):
        table[f"v{k}"] = f"V{k}"
        table[f"mv{k}"] = f"V{k}"  # modified chest lead (Holter)
    return table


_ALIASES = _alias_table()


def _normalise(name: str) -> str:
    key = "".join(ch for ch in str(name).strip().lower() if ch not in " _-")
    for prefix in ("lead", "ecg"):
        if key.startswith(prefix) and len(key) > len(prefix):
            key = key[len(prefix):]
    return key


def canonical_lead(name: str) -> str | None:
    """The canonical name of ``name`` ("MLII" -> "II", "avr" -> "aVR"), or None if not one of the 12."""
    return _ALIASES.get(_normalise(name))


def lead_channels(names: Sequence[str], record_id: str) -> dict[str, int]:
    """Map canonical lead -> first source channel carrying it, in canonical order.

    Raises ``BadRecordError(record_id, "unknown_leads")`` when no channel is a recognisable lead.
    """
    found: dict[str, int] = {}
    for channel, name in enumerate(names):
        lead = canonical_lead(name)
        if lead is not None and lead not in found:
            found[lead] = channel
    if not found:
        raise BadRecordError(record_id, "unknown_leads", f"no recognisable ECG lead among {list(names)}")
    return {lead: found[lead] for lead in LEADS if lead in found}
