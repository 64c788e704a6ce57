"""RNN-T search over phonemes, and words from its n-best, as plain functions.

They take the encoder output the RNN-T head reads (``model(...)["head_features"]``)
and the head's two parts, ``model.rnnt.predictor`` and ``model.rnnt.joiner``,
through their single-step API only (see :mod:`mode_ssm.models.heads`):

- ``predictor.step(labels (N,), state | None) -> (out (N, P), state)``, state an
  LSTM ``(h, c)`` each ``(layers, N, P)``; the first call gets all-BLANK labels
  and ``None`` (BLANK doubles as the start symbol);
- ``joiner.step(enc (N, D), pred (N, P)) -> logits (N, V)``.

Both searches are frame-synchronous and let a frame emit at most
``max_symbols_per_frame`` labels before a blank must move on to the next frame
(a trained transducer rarely emits more than one or two phonemes per 80 ms
frame; the cap bounds the cost). Scores are natural-log path probabilities
including every blank, so the two searches' scores compare directly.

Words: :class:`NbestWordScorer` is *not* a lexicon-constrained search. It maps
each of beam search's n-best phoneme hypotheses to words after the fact (split
at the boundary class, each chunk to its nearest lexicon pronunciation as
:func:`~mode_ssm.decoding.lexicon_decoder.greedy_words` does), then ranks the
hypotheses by transducer score + LM score; cheap, but it cannot recover a word
whose phonemes no hypothesis spelt out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Sequence

import torch
import torch.nn.functional as F

from mode_ssm.decoding.ctc import _logaddexp
from mode_ssm.decoding.lexicon_decoder import PronunciationIndex
from mode_ssm.phonemes import BLANK, BOUNDARY

_NEG_INF = -math.inf
LN10 = math.log(10.0)

PredictorState = Any  # the predictor's own state, e.g. LSTM (h, c) each (layers, N, P)


class StepPredictor(Protocol):
    def step(
        self, labels: torch.Tensor, state: PredictorState | None = None
    ) -> tuple[torch.Tensor, PredictorState]: ...


class StepJoiner(Protocol):
    def step(self, enc_frame: torch.Tensor, pred_out: torch.Tensor) -> torch.Tensor: ...


@dataclass(frozen=True)
class TransducerHypothesis:
    """A phoneme sequence (no blanks) and its natural-log transducer score."""

    ids: tuple[int, ...]
    log_prob: float


def _select_state(state: PredictorState, keep: torch.Tensor, new: PredictorState) -> PredictorState:
    """Per hypothesis (dim 1 of each (layers, N, P) tensor), ``new`` where ``keep`` else ``state``."""
    mask = keep[None, :, None]
    return tuple(torch.where(mask, n, s) for s, n in zip(state, new))


class GreedyTransducer:
    """Greedy RNN-T search that can be fed frames in pieces: the predictor state is carried.

    ``advance(encoder_out, lengths)`` reads more frames of the same B trials (in streaming a
    batch of one, any number of frames at a time); ``hypotheses()`` says what was emitted so far.
    Feeding a trial in pieces gives exactly what one call on all its frames gives.
    """

    def __init__(self, predictor: StepPredictor, joiner: StepJoiner, batch: int, device: Any = "cpu",
                 max_symbols_per_frame: int = 3, blank: int = BLANK):
        if max_symbols_per_frame < 0:
            raise ValueError(f"max_symbols_per_frame must be >= 0, got {max_symbols_per_frame}")
        self.predictor, self.joiner, self.blank = predictor, joiner, blank
        self.max_symbols_per_frame = max_symbols_per_frame
        self.labels = torch.full((batch,), blank, dtype=torch.long, device=device)
        with torch.no_grad():
            self.pred_out, self.state = predictor.step(self.labels, None)
        self.scores = torch.zeros(batch, dtype=torch.float64, device=device)
        self.emitted: list[list[int]] = [[] for _ in range(batch)]

    @torch.no_grad()
    def advance(self, encoder_out: torch.Tensor, lengths: torch.Tensor | None = None) -> None:
        """encoder_out (B, T, D): the next T frames; lengths (B,): how many of them are valid (None: all)."""
        if encoder_out.ndim != 3:
            raise ValueError(f"encoder_out must be (B, T, D), got shape {tuple(encoder_out.shape)}")
        batch, frames, _ = encoder_out.shape
        device = encoder_out.device
        lengths = torch.full((batch,), frames, device=device) if lengths is None else lengths.to(device)
        blank, labels = self.blank, self.labels
        for t in range(frames):
            open_ = lengths > t  # trials still reading this frame
            if not bool(open_.any()):
                break
            enc_t = encoder_out[:, t].float()
            for s in range(self.max_symbols_per_frame + 1):
                log_probs = F.log_softmax(self.joiner.step(enc_t, self.pred_out).float(), dim=-1)
                choice = log_probs.argmax(-1)
                if s == self.max_symbols_per_frame:
                    choice = torch.full_like(choice, blank)
                step_score = log_probs.gather(1, choice[:, None])[:, 0].double()
                self.scores = self.scores + torch.where(open_, step_score, torch.zeros_like(step_score))
                emit = open_ & (choice != blank)
                if not bool(emit.any()):
                    break
                for b in emit.nonzero()[:, 0].tolist():
                    self.emitted[b].append(int(choice[b]))
                new_out, new_state = self.predictor.step(torch.where(emit, choice, labels), self.state)
                self.pred_out = torch.where(emit[:, None], new_out, self.pred_out)
                self.state = _select_state(self.state, emit, new_state)
                open_ = emit

    def hypotheses(self) -> list[TransducerHypothesis]:
        return [TransducerHypothesis(tuple(ids), float(score)) for ids, score in zip(self.emitted, self.scores.tolist())]


@torch.no_grad()
def rnnt_greedy_search(
    encoder_out: torch.Tensor,
    lengths: torch.Tensor | None,
    predictor: StepPredictor,
    joiner: StepJoiner,
    max_symbols_per_frame: int = 3,
    blank: int = BLANK,
) -> list[TransducerHypothesis]:
    """Best label at every step, all trials of a batch in lockstep.

    Args:
        encoder_out: (B, T, D) encoder features.
        lengths: (B,) valid frames per trial; None means all T.
        max_symbols_per_frame: labels a frame may emit before a blank is forced.
    Returns:
        One hypothesis per trial; ``log_prob`` is the log-probability of the
        path taken (its labels and its blanks). Cost: at most
        T * (max_symbols_per_frame + 1) joiner calls and T * max_symbols_per_frame
        predictor steps on a batch of B.
    """
    if encoder_out.ndim != 3:
        raise ValueError(f"encoder_out must be (B, T, D), got shape {tuple(encoder_out.shape)}")
    search = GreedyTransducer(predictor, joiner, encoder_out.shape[0], encoder_out.device, max_symbols_per_frame, blank)
    search.advance(encoder_out, lengths)
    return search.hypotheses()


@torch.no_grad()
def rnnt_beam_search(
    encoder_out: torch.Tensor,
    predictor: StepPredictor,
    joiner: StepJoiner,
    beam: int = 4,
    max_symbols_per_frame: int = 3,
    nbest: int | None = None,
    blank: int = BLANK,
) -> list[TransducerHypothesis]:
    """Frame-synchronous transducer beam search over one trial.

    Within a frame, each hypothesis either ends the frame with a blank or
    grows by one of its ``beam`` best labels, up to ``max_symbols_per_frame``
    times; after each growth step and at the end of the frame the ``beam``
    best are kept. Hypotheses with the same labels share one predictor state,
    so they are merged exactly by adding their probabilities (log-sum-exp):
    a score is the probability of the labels summed over the alignments the
    beam kept, never less than the best single path among them.

    Args:
        encoder_out: (T, D) encoder features of one trial (valid frames only).
        nbest: hypotheses returned (default ``beam``).
    Returns:
        Hypotheses, best first. Cost per frame: at most max_symbols_per_frame + 1
        joiner calls and max_symbols_per_frame predictor steps on up to ``beam`` rows.
    """
    if encoder_out.ndim != 2:
        raise ValueError(f"encoder_out must be (T, D) for one trial, got shape {tuple(encoder_out.shape)}")
    if beam < 1 or max_symbols_per_frame < 0:
        raise ValueError(f"need beam >= 1 and max_symbols_per_frame >= 0, got {beam}, {max_symbols_per_frame}")
    device = encoder_out.device
    start_out, start_state = predictor.step(torch.full((1,), blank, dtype=torch.long, device=device), None)
    # labels -> (predictor output (P,), state sliced to one hypothesis)
    cache: dict[tuple[int, ...], tuple[torch.Tensor, PredictorState]] = {(): (start_out[0], start_state)}
    hyps: dict[tuple[int, ...], float] = {(): 0.0}
    for t in range(encoder_out.shape[0]):
        enc_t = encoder_out[t].float()
        ended: dict[tuple[int, ...], float] = {}
        active = hyps
        for s in range(max_symbols_per_frame + 1):
            if not active:
                break
            keys = list(active)
            pred = torch.stack([cache[k][0] for k in keys])
            log_probs = F.log_softmax(joiner.step(enc_t.expand(len(keys), -1), pred).float(), dim=-1)
            base = torch.tensor([active[k] for k in keys], dtype=torch.float64, device=device)
            totals = (base[:, None] + log_probs.double()).cpu()
            grown: dict[tuple[int, ...], float] = {}
            for i, k in enumerate(keys):
                ended[k] = _logaddexp(ended.get(k, _NEG_INF), float(totals[i, blank]))
                if s == max_symbols_per_frame:
                    continue
                row = totals[i].clone()
                row[blank] = _NEG_INF
                top = torch.topk(row, min(beam, row.numel() - 1))
                for score, label in zip(top.values.tolist(), top.indices.tolist()):
                    key = k + (label,)
                    grown[key] = _logaddexp(grown.get(key, _NEG_INF), score)
            active = dict(sorted(grown.items(), key=lambda kv: kv[1], reverse=True)[:beam])
            _extend_cache(cache, [k for k in active if k not in cache], predictor, device)
        hyps = dict(sorted(ended.items(), key=lambda kv: kv[1], reverse=True)[:beam])
        cache = {k: cache[k] for k in hyps}
    ranked = sorted(hyps.items(), key=lambda kv: kv[1], reverse=True)
    return [TransducerHypothesis(k, v) for k, v in ranked[: (beam if nbest is None else nbest)]]


def _extend_cache(cache, keys: list[tuple[int, ...]], predictor: StepPredictor, device) -> None:
    """Predictor outputs of new hypotheses, one batched step from their parents' states."""
    if not keys:
        return
    parents = [cache[k[:-1]][1] for k in keys]
    state = tuple(torch.cat([p[j] for p in parents], dim=1) for j in range(len(parents[0])))
    labels = torch.tensor([k[-1] for k in keys], dtype=torch.long, device=device)
    out, new_state = predictor.step(labels, state)
    for i, k in enumerate(keys):
        cache[k] = (out[i], tuple(x[:, i : i + 1] for x in new_state))


# --------------------------------------------------------------------------- words from the n-best


@dataclass(frozen=True)
class ScoredSentence:
    words: tuple[str, ...]
    score: float  # transducer + lm_weight * ln P_LM + word_score * n_words - mismatch_penalty * edits
    transducer_log_prob: float
    lm_log_prob: float  # natural log, with <s> and </s>
    phoneme_edits: int  # edits between the hypothesis' chunks and the chosen words' pronunciations

    @property
    def sentence(self) -> str:
        return " ".join(self.words)


class NbestWordScorer:
    """Words for RNN-T phoneme hypotheses: nearest lexicon words per chunk, ranked with an n-gram LM.

    Args:
        lexicon: the word decoder's lexicon (or a prebuilt
            :class:`~mode_ssm.decoding.lexicon_decoder.PronunciationIndex` of it).
        arpa_path: ARPA LM read with ``kenlm``; None ranks without an LM.
        lm_weight, word_score: as in :class:`~mode_ssm.decoding.lexicon_decoder.WordDecoder`
            (natural-log units).
        mismatch_penalty: subtracted per phoneme edit between a chunk and its
            word's pronunciation, so a hypothesis that spells real words wins.
    """

    def __init__(
        self,
        lexicon: Any,
        arpa_path: str | Path | None = None,
        lm_weight: float = 1.0,
        word_score: float = 0.0,
        mismatch_penalty: float = 1.0,
    ):
        self.index = lexicon if isinstance(lexicon, PronunciationIndex) else PronunciationIndex(lexicon)
        self.lm_weight = lm_weight
        self.word_score = word_score
        self.mismatch_penalty = mismatch_penalty
        self.lm = None
        if arpa_path is not None:
            import kenlm

            if not Path(arpa_path).is_file():
                raise FileNotFoundError(f"language model file {arpa_path} does not exist")
            self.lm = kenlm.Model(str(arpa_path))

    def words(self, ids: Sequence[int]) -> tuple[tuple[str, ...], int]:
        """(words, total phoneme edits) of one phoneme sequence, split at the boundary class."""
        words: list[str] = []
        edits = 0
        chunk: list[int] = []
        for i in list(ids) + [BOUNDARY]:
            if i == BOUNDARY:
                if chunk:
                    word, distance = self.index.nearest_word(chunk)
                    words.append(word)
                    edits += distance
                    chunk = []
            elif i != BLANK:
                chunk.append(int(i))
        return tuple(words), edits

    def lm_log_prob(self, words: Sequence[str]) -> float:
        if self.lm is None:
            return 0.0
        return float(self.lm.score(" ".join(words), bos=True, eos=True)) * LN10

    def rank(self, hyps: Sequence[TransducerHypothesis]) -> list[ScoredSentence]:
        """Hypotheses as sentences, best first; hypotheses giving the same words keep their best score."""
        best: dict[tuple[str, ...], ScoredSentence] = {}
        for h in hyps:
            words, edits = self.words(h.ids)
            lm = self.lm_log_prob(words)
            score = h.log_prob + self.lm_weight * lm + self.word_score * len(words) - self.mismatch_penalty * edits
            if words not in best or score > best[words].score:
                best[words] = ScoredSentence(words, score, h.log_prob, lm, edits)
        return sorted(best.values(), key=lambda s: s.score, reverse=True)

    def best_sentence(self, hyps: Sequence[TransducerHypothesis]) -> str:
        ranked = self.rank(hyps)
        return ranked[0].sentence if ranked else ""

