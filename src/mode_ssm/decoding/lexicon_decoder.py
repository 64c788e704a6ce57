"""Words from phoneme posteriors: lexicon-constrained CTC beam search with an n-gram LM, and a no-LM baseline.

:class:`WordDecoder` wraps flashlight-text's ``LexiconDecoder`` (the C++
decoder torchaudio's ``ctc_decoder`` wraps) with a KenLM-loaded ARPA model.
Tokens are the 41 T15 classes: blank = class 0 and the word-boundary class 40
is flashlight's silence token.

How the boundary class is handled
---------------------------------
The training targets put the boundary after every word, the last one included,
while CMUdict spellings have no boundary. Flashlight lets the silence token
appear between words at the lexicon root (scored with ``sil_score`` per frame)
and nowhere inside a word. Each word is inserted into the lexicon trie

- ``boundary="required"`` (default): as its phonemes followed by the boundary,
  as in the training targets. A word is emitted when its boundary is read; a
  boundary the model dropped has to be read out of another frame (costing that
  frame's boundary log-probability) or the words are decoded differently.
- ``boundary="optional"``: also as its phonemes alone, so a word may end
  without a boundary. Flashlight emits a word on entering its last phoneme and
  then lets only blank or boundary frames pass before the next word, so this
  path is free only when the word's last phoneme lasts one frame (otherwise its
  earlier frames are read as blank).

On the synthetic benchmark (benchmarks/decode_speed.py: 2,000 words, 3-gram,
10% of boundaries dropped) "required" was 2-4x faster and, at the default beam
threshold, more accurate at every beam tried (10-200): the duplicate spellings
of "optional" spend beam slots on the same words and open more ways to split a
phoneme string into words.

Scores are natural-log: ``score = acoustic + lm_weight * ln P_LM(words) +
word_score * n_words + sil_score * n_boundary_frames``. Flashlight's KenLM
returns log10, so ``lm_weight`` is multiplied by ln 10 before it reaches
flashlight; this keeps the decoder score on the scale of the acoustic model's
log-probabilities and of an LLM's log-probabilities in rescoring.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Iterator, Literal, Mapping, Sequence

import editdistance
import numpy as np

from mode_ssm.lexicon import Lexicon
from mode_ssm.phonemes import BLANK, BOUNDARY, NUM_CLASSES
from mode_ssm.text import sentence_words

UNK_WORD = "<unk>"
LN10 = math.log(10.0)
# flashlight's Trie holds at most this many words per spelling (kTrieMaxLabel) and drops the rest.
MAX_HOMOPHONES = 6

BoundaryMode = Literal["optional", "required"]



@contextlib.contextmanager
def _quiet_stderr():
    """Silence writes to file descriptor 2 (C++ libraries bypass sys.stderr)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)

# --------------------------------------------------------------------------- vocabulary


@dataclass
class Vocabulary:
    """Decoder vocabulary: corpus words in first-seen order, then extra words."""

    words: list[str]
    missing_from_cmudict: list[str]  # words with no pronunciation; the decoder cannot emit them

    def __iter__(self) -> Iterator[str]:
        return iter(self.words)

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: object) -> bool:
        return word in self.words

    def lexicon(self) -> Lexicon:
        """CMUdict pronunciations of the pronounceable words (hyphenated compounds spelt part by part)."""
        full = Lexicon.from_cmudict()
        entries = {}
        for w in self.words:
            prons = full.pronunciations(w)
            if prons is not None:
                entries[w] = prons
        return Lexicon(entries)


def build_vocabulary(sentences: Iterable[str], extra_words: Iterable[str] = ()) -> Vocabulary:
    """Normalised words of the sentences plus ``extra_words``, and which of them CMUdict cannot pronounce."""
    words: dict[str, None] = {}
    for s in sentences:
        words.update(dict.fromkeys(sentence_words(s)))
    for w in extra_words:
        words.update(dict.fromkeys(sentence_words(w)))
    word_list = list(words)
    return Vocabulary(word_list, Lexicon.from_cmudict().missing(word_list))


# --------------------------------------------------------------------------- greedy baseline


def _ids_key(ids: Sequence[int]) -> str:
    # editdistance is fastest on str; class ids 1..39 map to one character each.
    return "".join(chr(i) for i in ids)


class PronunciationIndex:
    """Nearest lexicon word to a phoneme sequence by edit distance, for the no-LM baseline.

    Exact pronunciations are a dict lookup. Otherwise candidates are scanned by
    growing length difference, which is a lower bound on the edit distance, so
    the scan stops as soon as no unseen length can beat the best found. Ties go
    to the more frequent word (wordfreq), then alphabetical order.
    """

    def __init__(self, lexicon: Lexicon, word_frequency: Mapping[str, float] | None = None):
        if len(lexicon) == 0:
            raise ValueError("cannot index an empty lexicon")
        if word_frequency is None:
            import wordfreq

            word_frequency = wordfreq.get_frequency_dict("en")
        ranked = sorted(lexicon.entries, key=lambda w: (-word_frequency.get(w, 0.0), w))
        self._exact: dict[str, str] = {}
        by_length: dict[int, list[tuple[str, int, str]]] = {}
        for rank, word in enumerate(ranked):  # most preferred first, so the first word seen for a key wins ties
            for pron in lexicon.entries[word]:
                key = _ids_key(pron)
                self._exact.setdefault(key, word)
                by_length.setdefault(len(pron), []).append((key, rank, word))
        self._by_length = by_length
        self._max_length = max(by_length)
        self.nearest = lru_cache(maxsize=65536)(self._nearest)  # type: ignore[method-assign]

    def _nearest(self, key: str) -> tuple[str, int]:
        hit = self._exact.get(key)
        if hit is not None:
            return hit, 0
        n = len(key)
        best: tuple[int, int, str] | None = None  # (distance, preference rank, word)
        for delta in range(0, max(n, self._max_length) + 1):
            for length in {n - delta, n + delta}:
                for cand, rank, word in self._by_length.get(length, ()):
                    d = editdistance.eval(key, cand)
                    if best is None or (d, rank) < best[:2]:
                        best = (d, rank, word)
            # Unscanned lengths differ by more than delta, so they cannot beat or tie a best <= delta.
            if best is not None and best[0] <= delta:
                break
        assert best is not None
        return best[2], best[0]

    def nearest_word(self, phoneme_ids: Sequence[int]) -> tuple[str, int]:
        """(word, edit distance) of the lexicon pronunciation nearest to ``phoneme_ids``."""
        return self.nearest(_ids_key(phoneme_ids))


def greedy_words(phoneme_ids: Sequence[int], lexicon: Lexicon | PronunciationIndex) -> list[str]:
    """No-LM baseline: split a phoneme sequence at boundary classes and map each chunk to its nearest word.

    Pass a :class:`PronunciationIndex` when decoding many trials: building one
    for a large lexicon takes a while.
    """
    index = lexicon if isinstance(lexicon, PronunciationIndex) else PronunciationIndex(lexicon)
    words: list[str] = []
    chunk: list[int] = []
    for i in list(phoneme_ids) + [BOUNDARY]:
        i = int(i)
        if i == BOUNDARY:
            if chunk:
                words.append(index.nearest_word(chunk)[0])
                chunk = []
        elif i != BLANK:
            chunk.append(i)
    return words


# --------------------------------------------------------------------------- lexicon + LM beam search


@dataclass(frozen=True)
class WordHypothesis:
    """One decoded sentence. Scores are natural log (see the module docstring)."""

    words: tuple[str, ...]
    score: float  # what the beam search ranks by
    acoustic_score: float  # sum of the emitted tokens' log-probabilities along the best alignment
    lm_log_prob: float  # ln P_LM(words, </s>), unweighted; 0 without an LM
    # the phoneme targets the search aligned, canonical: each word's pronunciation then the boundary
    # (leading and repeated boundaries of the path dropped); () where unknown
    phonemes: tuple[int, ...] = ()

    @property
    def sentence(self) -> str:
        return " ".join(self.words)


def path_phonemes(tokens: Sequence[int]) -> tuple[int, ...]:
    """A CTC path's labels, as a training target reads: repeats merged, blanks dropped, then boundary
    runs merged into one and leading boundaries dropped (flashlight's path may open and close with
    silence frames); a non-empty result ends with the boundary."""
    labels: list[int] = []
    previous = None
    for t in tokens:
        t = int(t)
        if t != previous and t != BLANK and 0 <= t < NUM_CLASSES:
            if not (t == BOUNDARY and (not labels or labels[-1] == BOUNDARY)):
                labels.append(t)
        previous = t
    if labels and labels[-1] != BOUNDARY:
        labels.append(BOUNDARY)
    return tuple(labels)


def _as_float32(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.ascontiguousarray(x, dtype=np.float32)


def batch_trials(log_probs: Any, lengths: Any = None) -> list[np.ndarray]:
    """(B, T, C) log-probabilities (numpy or torch) and (B,) valid frames (None: all T) -> each trial's (T_b, C)."""
    x = _as_float32(log_probs)
    if x.ndim != 3:
        raise ValueError(f"log_probs must be (B, T, {NUM_CLASSES}), got shape {x.shape}")
    batch, frames = x.shape[:2]
    if lengths is None:
        lens = [frames] * batch
    else:
        if hasattr(lengths, "detach"):
            lengths = lengths.detach().cpu().numpy()
        lens = [int(n) for n in np.asarray(lengths).reshape(-1)]
    if len(lens) != batch or any(not 0 <= n <= frames for n in lens):
        raise ValueError(f"need {batch} lengths in 0..{frames}, got {lens}")
    return [x[b, : lens[b]] for b in range(batch)]


class WordDecoder:
    """Lexicon-constrained CTC beam search over the 41 T15 classes with an optional ARPA n-gram LM.

    Args:
        lexicon: pronunciations of the words the decoder may emit (e.g.
            ``build_vocabulary(...).lexicon()``).
        arpa_path: ARPA (or KenLM binary) LM; None decodes with the lexicon only.
            Lexicon words the LM lacks get the LM's ``<unk>`` probability.
        lm_weight: weight of ln P_LM.
        word_score: bonus per emitted word (counters the LM's preference for short outputs).
        beam: hypotheses kept per frame.
        beam_size_token: classes tried per frame (the top ones); default all 41.
        beam_threshold: hypotheses scoring this far below the frame's best are dropped.
        unk_score: score for emitting ``<unk>`` on a phoneme string that starts
            some lexicon word but is no word itself (flashlight's ``<unk>``
            cannot leave the lexicon trie); -inf (default) never emits ``<unk>``.
        sil_score: score per boundary frame.
        nbest: hypotheses :meth:`decode` returns.
        boundary: "required" or "optional" (see the module docstring).
    """

    def __init__(
        self,
        lexicon: Lexicon,
        arpa_path: str | Path | None = None,
        *,
        lm_weight: float = 1.0,
        word_score: float = 0.0,
        beam: int = 50,
        beam_size_token: int | None = None,
        beam_threshold: float = 25.0,
        unk_score: float = -math.inf,
        sil_score: float = 0.0,
        nbest: int = 1,
        boundary: BoundaryMode = "required",
    ):
        from flashlight.lib.text.decoder import (
            CriterionType,
            LexiconDecoder,
            LexiconDecoderOptions,
            SmearingMode,
            Trie,
            ZeroLM,
        )
        from flashlight.lib.text.dictionary import Dictionary

        if len(lexicon) == 0:
            raise ValueError("the decoder lexicon is empty")
        if boundary not in ("optional", "required"):
            raise ValueError(f"boundary must be 'optional' or 'required', got {boundary!r}")
        if beam < 1 or nbest < 1:
            raise ValueError(f"beam and nbest must be >= 1, got beam={beam}, nbest={nbest}")
        self.lexicon = lexicon
        self.nbest = nbest
        self.boundary = boundary
        self.lm_weight, self.word_score = float(lm_weight), float(word_score)  # for scores outside the search

        words = [w for w in lexicon.words if w != UNK_WORD] + [UNK_WORD]
        self.word_dict = Dictionary(words)
        self._words = words
        unk_index = self.word_dict.get_index(UNK_WORD)

        if arpa_path is None:
            self.lm = ZeroLM()
        else:
            arpa_path = Path(arpa_path)
            if not arpa_path.is_file():
                raise FileNotFoundError(f"language model file {arpa_path} does not exist")
            from flashlight.lib.text.decoder.kenlm import KenLM

            try:
                with _quiet_stderr():  # KenLM draws a progress bar on stderr while it reads an ARPA file
                    self.lm = KenLM(str(arpa_path), self.word_dict)
            except Exception as e:  # kenlm raises a bare RuntimeError with its own wording
                raise ValueError(f"KenLM could not load {arpa_path}: {e}") from e
        self.arpa_path = arpa_path

        # Each word's LM score after <s> sits in the trie so the search can look ahead
        # (smearing) before a word is complete.
        start = self.lm.start(False)
        homophones: dict[tuple[int, ...], list[tuple[float, str, int]]] = {}
        for word in words[:-1]:
            index = self.word_dict.get_index(word)
            _, lm_score = self.lm.score(start, index)
            for pron in lexicon.entries[word]:
                if not pron or any(not 1 <= p < BOUNDARY for p in pron):
                    raise ValueError(f"lexicon word {word!r} has a pronunciation with non-phoneme classes {pron}")
                homophones.setdefault(tuple(pron), []).append((lm_score, word, index))
        self.trie = Trie(NUM_CLASSES, BOUNDARY)
        self.dropped_homophones: list[str] = []
        for pron, group in homophones.items():
            # flashlight keeps at most MAX_HOMOPHONES words per spelling; keep the ones the LM likes best
            group.sort(key=lambda g: (-g[0], g[1]))
            self.dropped_homophones.extend(w for _, w, _ in group[MAX_HOMOPHONES:])
            for lm_score, _, index in group[:MAX_HOMOPHONES]:
                if boundary == "optional":
                    self.trie.insert(list(pron), index, lm_score)
                self.trie.insert(list(pron) + [BOUNDARY], index, lm_score)
        if self.dropped_homophones:
            warnings.warn(
                f"{len(self.dropped_homophones)} words share a pronunciation with {MAX_HOMOPHONES} likelier words "
                f"and cannot be decoded (flashlight's limit), e.g. {self.dropped_homophones[:5]}",
                stacklevel=2,
            )
        self.trie.smear(SmearingMode.MAX)

        self.options = LexiconDecoderOptions(
            beam_size=beam,
            beam_size_token=NUM_CLASSES if beam_size_token is None else beam_size_token,
            beam_threshold=beam_threshold,
            lm_weight=lm_weight * LN10,
            word_score=word_score,
            unk_score=unk_score,
            sil_score=sil_score,
            log_add=False,
            criterion_type=CriterionType.CTC,
        )
        self._decoder = LexiconDecoder(self.options, self.trie, self.lm, BOUNDARY, BLANK, unk_index, [], False)
        self._frames = 0

    def decode(self, log_probs: Any) -> list[WordHypothesis]:
        """Beam search one trial.

        Args:
            log_probs: (T, 41) per-frame log-probabilities (log-softmax of the CTC head), numpy or torch.
        Returns:
            Up to ``nbest`` hypotheses with distinct word sequences, best first.
        """
        self.begin()
        self.step(log_probs)
        return self.end()

    # The same search frame by frame, for streaming: begin(), step() per chunk of frames, best_words()
    # for the partial text, end() for the n-best. One trial at a time per WordDecoder (decode() too).

    def begin(self) -> None:
        """Start a trial."""
        self._decoder.decode_begin()
        self._frames = 0

    def step(self, log_probs: Any) -> None:
        """Extend the search by (T, 41) more frames (T may be 0)."""
        emissions = _as_float32(log_probs)
        if emissions.ndim != 2 or emissions.shape[1] != NUM_CLASSES:
            raise ValueError(f"log_probs must be (T, {NUM_CLASSES}), got shape {emissions.shape}")
        if not np.isfinite(emissions).all():
            raise ValueError("log_probs hold NaN or infinite values")
        if emissions.shape[0]:
            self._decoder.decode_step(emissions.ctypes.data, emissions.shape[0], NUM_CLASSES)
            self._frames += emissions.shape[0]

    def best_words(self) -> tuple[str, ...]:
        """The words of the best hypothesis so far (completed words only)."""
        if not self._frames:
            return ()
        return tuple(self._words[i] for i in self._decoder.get_best_hypothesis().words if i >= 0)

    def end(self) -> list[WordHypothesis]:
        """Finish the trial: up to ``nbest`` hypotheses with distinct word sequences, best first."""
        if not self._frames:
            return [WordHypothesis((), 0.0, 0.0, 0.0)]
        self._decoder.decode_end()
        hyps: list[WordHypothesis] = []
        seen: set[tuple[str, ...]] = set()
        for r in sorted(self._decoder.get_all_final_hypothesis(), key=lambda r: r.score, reverse=True):
            words = tuple(self._words[i] for i in r.words if i >= 0)
            if words in seen:
                continue
            seen.add(words)
            # tokens: one per frame between the search's start and end states
            hyps.append(WordHypothesis(words, float(r.score), float(r.emittingModelScore), float(r.lmScore) * LN10,
                                       path_phonemes(list(r.tokens)[1:-1])))
            if len(hyps) == self.nbest:
                break
        return hyps

    def decode_batch(self, log_probs: Any, lengths: Any = None) -> list[str]:
        """Best sentence of each trial.

        Args:
            log_probs: (B, T, 41) log-probabilities, numpy or torch.
            lengths: (B,) valid frames per trial; None means all T.
        """
        out = []
        for trial in batch_trials(log_probs, lengths):
            hyps = self.decode(trial)
            out.append(hyps[0].sentence if hyps else "")
        return out
