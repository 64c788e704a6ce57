"""The word decoder's resources from train sentences: vocabulary, lexicon and a cached n-gram LM.

Training (val/wer) and evaluation build them here, from the same sentences and
``decoding`` settings, so both decode with the same vocabulary and LM. The ARPA
file is cached in a folder under a name that carries a hash of everything that
built it (sentences, order, extra words), so a changed corpus or setting never
reuses a stale LM.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Mapping, Sequence

from mode_ssm.decoding.lexicon_decoder import WordDecoder, build_vocabulary
from mode_ssm.decoding.ngram import build_arpa
from mode_ssm.lexicon import Lexicon

SEARCH_KEYS = ("lm_weight", "word_score", "beam", "beam_size_token", "beam_threshold")
DECODING_KEYS = ("lm_order", "extra_vocabulary", *SEARCH_KEYS)


def frequent_words(n: int) -> list[str]:
    """The ``n`` most frequent English words (wordfreq, offline)."""
    if n <= 0:
        return []
    from wordfreq import top_n_list  # loads its word lists on import: only when asked

    return top_n_list("en", n)


def lm_cache_path(lm_dir: str | Path, sentences: Sequence[str], order: int, extra_words: Sequence[str]) -> Path:
    """Where the ARPA LM built from exactly these inputs lives: ``lm_dir/train_{order}gram_{hash}.arpa``."""
    h = hashlib.sha256()
    h.update(f"order={order}\n".encode())
    for w in extra_words:
        h.update(b"w:" + w.encode() + b"\n")
    for s in sentences:
        h.update(b"s:" + s.encode() + b"\n")
    return Path(lm_dir) / f"train_{order}gram_{h.hexdigest()[:16]}.arpa"


def check_decoding(decoding: Mapping[str, Any]) -> None:
    missing = [k for k in DECODING_KEYS if decoding.get(k) is None]
    if missing:
        raise ValueError(f"decoding settings lack {missing}; needed: {list(DECODING_KEYS)}")


def word_resources(
    decoding: Mapping[str, Any], sentences: Sequence[str], lm_dir: str | Path, build: bool = True
) -> tuple[Lexicon, Path]:
    """(lexicon, ARPA path) for these train ``sentences`` and ``decoding`` settings.

    The LM is built unless the cache already holds it; ``build=False`` only
    names the path (data-parallel ranks other than 0 wait for rank 0's file).
    The extra frequent words get their own small unigram share instead of all
    sharing ``<unk>``'s.
    """
    sentences, extra, lm_path = _inputs(decoding, sentences, lm_dir)
    if build and not lm_path.is_file():
        build_arpa(sentences, order=int(decoding["lm_order"]), out_path=lm_path, extra_words=extra)
    return build_vocabulary(sentences, extra_words=extra).lexicon(), lm_path


def lm_path(decoding: Mapping[str, Any], sentences: Sequence[str], lm_dir: str | Path) -> Path:
    """Where :func:`word_resources` keeps (or would build) the LM for these inputs; builds nothing."""
    return _inputs(decoding, sentences, lm_dir)[2]


def _inputs(decoding: Mapping[str, Any], sentences: Sequence[str], lm_dir: str | Path):
    check_decoding(decoding)
    sentences = [s for s in sentences if s]
    if not sentences:
        raise ValueError("no labelled train sentences to build the language model from")
    extra = frequent_words(int(decoding["extra_vocabulary"]))
    return sentences, extra, lm_cache_path(lm_dir, sentences, int(decoding["lm_order"]), extra)


def make_word_decoder(decoding: Mapping[str, Any], lexicon: Lexicon, lm_path: Path | None, **overrides: Any) -> WordDecoder:
    """A flashlight :class:`WordDecoder` with the ``decoding`` settings; ``overrides`` (e.g. lm_weight) win."""
    d = {k: decoding[k] for k in SEARCH_KEYS}
    d.update(overrides)
    return WordDecoder(
        lexicon, arpa_path=lm_path, lm_weight=float(d["lm_weight"]), word_score=float(d["word_score"]),
        beam=int(d["beam"]), beam_size_token=int(d["beam_size_token"]), beam_threshold=float(d["beam_threshold"]),
    )
