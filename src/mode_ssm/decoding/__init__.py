"""From phoneme posteriors to words: CTC decoding, n-gram LMs, lexicon beam search, LLM rescoring."""

from __future__ import annotations

from mode_ssm.decoding.ctc import PhonemeHypothesis, collapse_ctc, ctc_greedy, ctc_prefix_beam_search
from mode_ssm.decoding.lexicon_decoder import (
    PronunciationIndex,
    Vocabulary,
    WordDecoder,
    WordHypothesis,
    build_vocabulary,
    greedy_words,
)
from mode_ssm.decoding.ngram import ArpaModel, NgramModelReport, build_arpa, build_lm_from_sentences
from mode_ssm.decoding.rescoring import CausalLMScorer, RescoredHypothesis, rescore_nbest

__all__ = [
    "ArpaModel",
    "CausalLMScorer",
    "NgramModelReport",
    "PhonemeHypothesis",
    "PronunciationIndex",
    "RescoredHypothesis",
    "Vocabulary",
    "WordDecoder",
    "WordHypothesis",
    "build_arpa",
    "build_lm_from_sentences",
    "build_vocabulary",
    "collapse_ctc",
    "ctc_greedy",
    "ctc_prefix_beam_search",
    "greedy_words",
    "rescore_nbest",
]
