"""Text normalisation exactly as the official T15 evaluation scores sentences."""

from __future__ import annotations

import re

_NOT_ALLOWED = re.compile(r"[^a-zA-Z\- ']")


def normalize_sentence(sentence: str) -> str:
    """Official scoring normalisation.

    Keep letters, hyphen, space and apostrophe; lower-case; a hyphen followed by
    a space becomes a space, a double hyphen is dropped, a space before an
    apostrophe is removed; whitespace is collapsed and stripped.
    """
    s = _NOT_ALLOWED.sub("", sentence)
    s = s.replace("- ", " ").replace("--", "").replace(" '", "'").lower()
    return " ".join(s.split())


def sentence_words(sentence: str) -> list[str]:
    """Normalised words of a sentence."""
    return normalize_sentence(sentence).split()
