"""The 41 output classes of the T15 data, in the official baseline's logit order.

Class 0 is the CTC blank, 1..39 the ARPAbet phonemes without stress digits and
40 the silence / word-boundary class (written " | " in the official release).
In ``seq_class_ids`` every word is followed by the boundary class, the last
word included, as in the official data preparation.
"""

from __future__ import annotations

from typing import Iterable, Sequence

BLANK = 0
BOUNDARY = 40
BOUNDARY_SYMBOL = " | "

PHONEMES: tuple[str, ...] = (
    "AA", "AE", "AH", "AO", "AW", "AY", "B", "CH", "D", "DH",
    "EH", "ER", "EY", "F", "G", "HH", "IH", "IY", "JH", "K",
    "L", "M", "N", "NG", "OW", "OY", "P", "R", "S", "SH",
    "T", "TH", "UH", "UW", "V", "W", "Y", "Z", "ZH",
)  # fmt: skip

CLASS_NAMES: tuple[str, ...] = ("BLANK",) + PHONEMES + (BOUNDARY_SYMBOL,)
NUM_CLASSES = len(CLASS_NAMES)  # 41
PHONEME_TO_ID: dict[str, int] = {p: i + 1 for i, p in enumerate(PHONEMES)}

assert NUM_CLASSES == 41 and PHONEME_TO_ID["ZH"] == 39


def strip_stress(phone: str) -> str:
    """'AH0' -> 'AH'."""
    return phone.rstrip("012")


def phones_to_ids(phones: Iterable[str]) -> list[int]:
    """ARPAbet symbols (stress digits allowed) -> class ids; raises on unknown symbols."""
    out = []
    for p in phones:
        base = strip_stress(p.strip())
        if base not in PHONEME_TO_ID:
            raise ValueError(f"unknown phoneme symbol {p!r}")
        out.append(PHONEME_TO_ID[base])
    return out


def ids_to_symbols(ids: Sequence[int]) -> list[str]:
    """Class ids -> symbols, boundary as '|' and blank as '_'."""
    return ["_" if i == BLANK else "|" if i == BOUNDARY else CLASS_NAMES[i] for i in ids]


def ids_to_string(ids: Sequence[int]) -> str:
    """Readable phoneme string, words separated by ' | '."""
    return " ".join(ids_to_symbols(ids))
