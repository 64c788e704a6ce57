"""The searches evaluation decodes with, and the word decoder a checkpoint was trained with.

- :class:`WordDecoding` builds the lexicon and n-gram LM from the train
  sentences of the sessions the model trained on, with
  :func:`mode_ssm.decoding.words.word_resources` as training does, so
  evaluation decodes with the vocabulary and LM that val/wer was measured with.
- :func:`make_search` turns a decoder name into the ``search`` that
  :func:`mode_ssm.runtime.decode.decode_split` runs on the model's outputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

from mode_ssm.data.sentences import train_sentences
from mode_ssm.decoding.ctc import ctc_greedy
from mode_ssm.decoding.lexicon_decoder import PronunciationIndex, batch_trials, greedy_words
from mode_ssm.decoding.nbest_merge import merge_nbests
from mode_ssm.decoding.rescoring import RescoringDecoder, rescore_nbests
from mode_ssm.decoding.rnnt_search import NbestWordScorer, rnnt_beam_search, rnnt_greedy_search
from mode_ssm.decoding.words import lm_path, make_word_decoder, word_resources
from mode_ssm.runtime.decode import Search
from mode_ssm.runtime.loading import LoadedModel

DECODERS = ("ctc_lm", "ctc_greedy", "rnnt_greedy", "rnnt_beam")
MERGE_NBEST = 10  # sentences per group merged by a mixed-frame-rate ensemble (rescore.nbest when rescoring)


class WordDecoding:
    """The lexicon and LM of a checkpoint's word decoder, built from ``data_root``'s train sentences.

    Only the train files of the sessions in the model's day index are read (all
    train files if ``data_root`` has none of them), so a model trained on some
    sessions is decoded with the language its training run had.

    The LM file is looked up first in the training run's own cache (beside the
    checkpoint, ``RUN_DIR/lm/``), by the hash of what builds it; if another data
    root or other ``lm_order`` / ``extra_vocabulary`` settings make it a
    different LM, it is built in ``lm_dir``.
    """

    def __init__(self, loaded: LoadedModel, data_root: str | Path, lm_dir: str | Path,
                 overrides: Mapping[str, Any] | None = None):
        self.settings = loaded.decoding(overrides)
        # the text of the sessions the model trained on, as training read it (data.max_sessions included)
        trained_sessions = [s for s in loaded.day_index.sessions if (Path(data_root) / s / "data_train.hdf5").exists()]
        sentences = train_sentences(data_root, trained_sessions or None, loaded.day_index)
        run_lm_dir = loaded.path.resolve().parent.parent / "lm"
        self.lm_dir = run_lm_dir if lm_path(self.settings, sentences, run_lm_dir).is_file() else Path(lm_dir)
        self.lexicon, self.lm_path = word_resources(self.settings, sentences, self.lm_dir)
        self._index = None

    def decoder(self, **overrides: Any):
        """A flashlight :class:`~mode_ssm.decoding.lexicon_decoder.WordDecoder` (``overrides``: lm_weight, ...)."""
        return make_word_decoder(self.settings, self.lexicon, self.lm_path, **overrides)

    @property
    def pronunciation_index(self):
        if self._index is None:
            self._index = PronunciationIndex(self.lexicon)
        return self._index


@dataclass
class RNNTSettings:
    beam: int = 4
    max_symbols_per_frame: int = 3
    nbest: int = 4
    mismatch_penalty: float = 1.0


def make_search(
    name: str, loaded: LoadedModel, words: WordDecoding | None, rnnt: RNNTSettings | None = None
) -> tuple[Search | None, Any | None]:
    """(search, word_decoder) for :func:`mode_ssm.runtime.decode.decode_split` by decoder name.

    - ``ctc_lm``: CTC greedy phonemes, words from the lexicon + n-gram beam search (training's val/wer).
    - ``ctc_greedy``: CTC greedy phonemes, each boundary-separated chunk mapped to its nearest word (no LM).
    - ``rnnt_greedy``: RNN-T greedy phonemes, chunks to nearest words (no LM).
    - ``rnnt_beam``: RNN-T beam search; its n-best mapped to words and reranked with the LM
      (see :class:`mode_ssm.decoding.rnnt_search.NbestWordScorer`).
    """
    if name not in DECODERS:
        raise ValueError(f"decoder must be one of {DECODERS}, got {name!r}")
    if name == "ctc_lm":
        if words is None:
            raise ValueError("decoder=ctc_lm needs the word decoder's lexicon and LM")
        return None, words.decoder()
    index = words.pronunciation_index if words is not None else None
    if name == "ctc_greedy":
        def ctc_greedy_search(out, log_probs, lengths):
            ids = ctc_greedy(log_probs, lengths)
            sentences = [" ".join(greedy_words(i, index)) for i in ids] if index is not None else None
            return ids, sentences

        return ctc_greedy_search, None
    if not loaded.has_rnnt:
        raise ValueError(f"decoder={name} needs an RNN-T head; {loaded.path} holds a "
                         f"{type(loaded.model).__name__} without one (use ctc_lm or ctc_greedy)")
    rnnt = rnnt or RNNTSettings()
    head = loaded.model.rnnt
    scorer = None
    if words is not None:
        scorer = NbestWordScorer(
            index, words.lm_path if name == "rnnt_beam" else None, lm_weight=float(words.settings["lm_weight"]),
            word_score=float(words.settings["word_score"]), mismatch_penalty=rnnt.mismatch_penalty,
        )

    def transducer_search(out, log_probs, lengths):
        enc = out["head_features"].float()
        if name == "rnnt_greedy":
            hyps = rnnt_greedy_search(enc, lengths, head.predictor, head.joiner, rnnt.max_symbols_per_frame)
            nbests = [[h] for h in hyps]
        else:
            nbests = [rnnt_beam_search(enc[b, : int(lengths[b])], head.predictor, head.joiner, rnnt.beam,
                                       rnnt.max_symbols_per_frame, rnnt.nbest) for b in range(enc.shape[0])]
        ids = [list(n[0].ids) if n else [] for n in nbests]
        sentences = [scorer.best_sentence(n) for n in nbests] if scorer is not None else None
        return ids, sentences

    return transducer_search, None


def merged_nbest_search(word_decoder: Any) -> Search:
    """The search of a :class:`~mode_ssm.runtime.ensemble.MergedEnsemble` (``decoder=ctc_lm``): each group's
    n-best from ``word_decoder``'s lexicon + n-gram search, merged and rescored by every group
    (:func:`mode_ssm.decoding.nbest_merge.merge_nbests`), then re-ranked by the neural LM when
    ``word_decoder`` is a :class:`RescoringDecoder`. Phonemes: CTC greedy of the first group."""
    rescoring = word_decoder if isinstance(word_decoder, RescoringDecoder) else None
    base = rescoring.decoder if rescoring is not None else word_decoder
    base.nbest = rescoring.nbest if rescoring is not None else max(base.nbest, MERGE_NBEST)

    def search(out, log_probs, lengths):
        ids = ctc_greedy(log_probs, lengths)
        groups = [batch_trials(lp, n) for lp, n in zip(out["group_log_probs"], out["group_lengths"])]
        merged = []
        for b in range(len(ids)):
            trial = [torch.from_numpy(g[b]) for g in groups]
            merged.append(merge_nbests([base.decode(t) for t in trial], trial, base.lm_weight, base.word_score))
        if rescoring is not None:
            merged = rescore_nbests(merged, rescoring.scorer, rescoring.alpha, rescoring.length_bonus)
        return ids, [m[0].sentence if m else "" for m in merged]

    return search
