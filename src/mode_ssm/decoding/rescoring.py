"""Optional n-best rescoring with a causal language model already on disk.

The model is a Hugging Face causal LM folder: one ``scripts/train_text_lm.py``
trained on the train sentences (:mod:`mode_ssm.decoding.text_lm`), or any other
the user has. ``transformers`` is imported only by
:meth:`CausalLMScorer.from_pretrained`, which loads with ``local_files_only``
so nothing is ever downloaded. Any callable mapping sentences to natural-log
probabilities can stand in for the scorer.

Combined score of a hypothesis:
``decoder_score + alpha * ln P_LLM(sentence) + length_bonus * n_words``.
The decoder score (acoustic + weighted n-gram + word score) is natural-log
(see :mod:`mode_ssm.decoding.lexicon_decoder`), so ``alpha`` weighs
like-for-like units. :class:`RescoringDecoder` puts this behind the word
decoder's ``decode_batch``, which is how evaluate and make_submission use it
(``rescore.model=DIR``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from mode_ssm.decoding.lexicon_decoder import batch_trials

SentenceScorer = Callable[[Sequence[str]], Sequence[float]]


@dataclass(frozen=True)
class RescoredHypothesis:
    sentence: str
    decoder_score: float
    llm_log_prob: float
    score: float  # the combined score hypotheses are ranked by


class CausalLMScorer:
    """ln P(sentence) under a causal LM: the sum of its tokens' log-probabilities given the prefix.

    Args:
        model: a causal LM whose ``model(input_ids=..., attention_mask=...)``
            returns ``.logits`` of shape (batch, length, vocab) (any Hugging Face
            ``*ForCausalLM`` does).
        encode: sentence -> token ids, without special tokens.
        bos_token_id: prepended so the first token is scored too; without one
            the first token has no context and is not scored.
        eos_token_id: appended and scored when ``score_eos`` (rewards complete sentences).
        batch_size: sentences per forward pass.
    """

    def __init__(
        self,
        model: Any,
        encode: Callable[[str], Sequence[int]],
        bos_token_id: int | None = None,
        eos_token_id: int | None = None,
        score_eos: bool = False,
        batch_size: int = 16,
        device: str = "cpu",
    ):
        if score_eos and eos_token_id is None:
            raise ValueError("score_eos needs an eos_token_id")
        self.model = model
        self.encode = encode
        self.bos_token_id = bos_token_id
        self.eos_token_id = eos_token_id
        self.score_eos = score_eos
        self.batch_size = batch_size
        self.device = device

    @classmethod
    def from_pretrained(
        cls, path: str | Path, device: str = "cpu", model_kwargs: dict[str, Any] | None = None, **kwargs: Any
    ) -> "CausalLMScorer":
        """Load a Hugging Face causal LM and its tokenizer from a local folder (never downloads).

        ``model_kwargs`` go to ``AutoModelForCausalLM.from_pretrained`` (e.g. a
        dtype, under the name your transformers version uses); ``kwargs`` to the
        constructor (``score_eos``, ``batch_size``).
        """
        try:
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError:
            raise ImportError(
                "LLM rescoring needs the 'transformers' package, which MODE-SSM does not install: "
                "pip install transformers"
            ) from None
        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"no model folder at {path} (rescoring only loads models already on disk)")
        if not (path / "config.json").is_file():
            raise ValueError(f"{path} is not a Hugging Face model folder: it has no config.json "
                             "(write one with scripts/train_text_lm.py or save_pretrained)")
        try:
            tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
            model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, **(model_kwargs or {}))
        except (OSError, ValueError, KeyError, TypeError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ValueError(f"{path}: not a causal LM and tokenizer that load offline ({first})") from None
        model.to(device).eval()
        return cls(
            model,
            encode=lambda s: tokenizer(s, add_special_tokens=False)["input_ids"],
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            device=device,
            **kwargs,
        )

    def _token_ids(self, sentence: str) -> list[int]:
        """Ids to feed; every one but the first is scored."""
        ids = [int(i) for i in self.encode(sentence)]
        if self.score_eos:
            ids.append(int(self.eos_token_id))  # type: ignore[arg-type]
        if self.bos_token_id is not None:
            ids.insert(0, int(self.bos_token_id))
        return ids

    @property
    def max_length(self) -> int | None:
        """Longest sequence the model takes (GPT-2's ``n_positions``); None if it does not say."""
        config = getattr(self.model, "config", None)
        for key in ("n_positions", "max_position_embeddings"):
            value = getattr(config, key, None)
            if isinstance(value, int) and value >= 2:
                return value
        return None

    def _token_log_probs(self, encoded: Sequence[Sequence[int]]) -> Any:
        """(B, L-1) log-probability of each token given the ones before it (0 at padding)."""
        import torch

        max_len = max(len(ids) for ids in encoded)
        input_ids = torch.zeros((len(encoded), max_len), dtype=torch.long)
        attention_mask = torch.zeros_like(input_ids)
        for b, ids in enumerate(encoded):
            input_ids[b, : len(ids)] = torch.tensor(list(ids))
            attention_mask[b, : len(ids)] = 1
        with torch.no_grad():
            logits = self.model(
                input_ids=input_ids.to(self.device), attention_mask=attention_mask.to(self.device)
            ).logits.float()
        # position i predicts token i + 1; right padding leaves real positions untouched
        log_probs = torch.log_softmax(logits[:, :-1], dim=-1)
        targets = input_ids[:, 1:].to(log_probs.device)
        token_lp = log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        return token_lp * attention_mask[:, 1:].to(token_lp.device)

    def _long_log_prob(self, ids: Sequence[int], window: int) -> float:
        """ln P of a sequence longer than the model's window: strided, each token scored once with at
        least ``window // 2`` tokens of context (the standard way for fixed-length models)."""
        total = float(self._token_log_probs([ids[:window]]).sum())
        keep = window // 2  # context carried into each later window
        scored = window  # tokens 1..window-1 are done
        while scored < len(ids):
            new = min(window - keep, len(ids) - scored)
            chunk = ids[scored - keep : scored + new]
            total += float(self._token_log_probs([chunk])[0, keep - 1 :].sum())
            scored += new
        return total

    def __call__(self, sentences: Sequence[str]) -> list[float]:
        """Natural-log probability of each sentence."""
        window = self.max_length
        encoded_all = [self._token_ids(s) for s in sentences]
        out: list[float] = [0.0] * len(sentences)  # one token and no context: nothing to score
        short = [i for i, ids in enumerate(encoded_all) if len(ids) >= 2 and (window is None or len(ids) <= window)]
        for start in range(0, len(short), self.batch_size):
            which = short[start : start + self.batch_size]
            for i, lp in zip(which, self._token_log_probs([encoded_all[i] for i in which]).sum(dim=1).tolist()):
                out[i] = lp
        for i, ids in enumerate(encoded_all):
            if window is not None and len(ids) > window:
                out[i] = self._long_log_prob(ids, window)
        return out


def rescore_nbest(
    nbest: Sequence[Any],
    scorer: SentenceScorer,
    alpha: float = 0.5,
    length_bonus: float = 0.0,
) -> list[RescoredHypothesis]:
    """Re-rank one trial's n-best list with an LLM.

    Args:
        nbest: ``WordHypothesis`` objects (``.sentence``, ``.score``) or (sentence, decoder_score) pairs.
        scorer: sentences -> natural-log probabilities, e.g. a :class:`CausalLMScorer`.
        alpha: weight of the LLM log-probability.
        length_bonus: added per word.
    Returns:
        Hypotheses, best combined score first.
    """
    return rescore_nbests([nbest], scorer, alpha, length_bonus)[0]


def _pairs(nbest: Sequence[Any]) -> list[tuple[str, float]]:
    pairs: list[tuple[str, float]] = []
    for h in nbest:
        if hasattr(h, "sentence") and hasattr(h, "score"):
            pairs.append((h.sentence, float(h.score)))
        else:
            sentence, score = h
            pairs.append((str(sentence), float(score)))
    return pairs


def rescore_nbests(
    nbests: Sequence[Sequence[Any]],
    scorer: SentenceScorer,
    alpha: float = 0.5,
    length_bonus: float = 0.0,
) -> list[list[RescoredHypothesis]]:
    """:func:`rescore_nbest` for several trials, with one scorer call for all their sentences.

    Ties keep the decoder's order (the sort is stable).
    """
    pairs = [_pairs(n) for n in nbests]
    sentences = [s for p in pairs for s, _ in p]
    llm = list(scorer(sentences)) if sentences else []
    if len(llm) != len(sentences):
        raise ValueError(f"the scorer returned {len(llm)} scores for {len(sentences)} sentences")
    out: list[list[RescoredHypothesis]] = []
    k = 0
    for p in pairs:
        rescored = [
            RescoredHypothesis(s, d, float(lp), d + alpha * float(lp) + length_bonus * len(s.split()))
            for (s, d), lp in zip(p, llm[k : k + len(p)])
        ]
        k += len(p)
        rescored.sort(key=lambda h: h.score, reverse=True)
        out.append(rescored)
    return out


class RescoringDecoder:
    """A word decoder whose sentences are its n-best re-ranked by a causal LM (:func:`rescore_nbests`).

    It stands where a :class:`~mode_ssm.decoding.lexicon_decoder.WordDecoder` stands
    (``decode_batch``, ``decode``, ``lexicon``), so evaluation, submissions and
    TTA's pseudo-labels use it unchanged. The wrapped decoder's ``nbest`` (the
    distinct sentences its :meth:`decode` returns from flashlight's final
    hypotheses) is raised to ``nbest``; its search is otherwise untouched.

    Args:
        decoder: a ``WordDecoder`` (anything with ``decode(log_probs) -> [WordHypothesis]``, best first).
        scorer: sentences -> natural-log probabilities, e.g. a :class:`CausalLMScorer`.
        alpha, length_bonus: see :func:`rescore_nbest`.
        nbest: hypotheses per trial to rescore.
        description: for logs (what model rescores).
    """

    def __init__(self, decoder: Any, scorer: SentenceScorer, alpha: float = 0.5, length_bonus: float = 0.0,
                 nbest: int = 10, description: str = ""):
        if nbest < 1:
            raise ValueError(f"rescoring needs nbest >= 1, got {nbest}")
        self.decoder = decoder
        self.scorer = scorer
        self.alpha = float(alpha)
        self.length_bonus = float(length_bonus)
        self.nbest = int(nbest)
        decoder.nbest = self.nbest
        self.description = description or (f"{self.nbest}-best rescored with weight {self.alpha:g}, "
                                           f"length bonus {self.length_bonus:g}")

    @property
    def lexicon(self) -> Any:
        return self.decoder.lexicon

    def decode(self, log_probs: Any) -> list[RescoredHypothesis]:
        """One trial's n-best, best combined score first."""
        return rescore_nbests([self.decoder.decode(log_probs)], self.scorer, self.alpha, self.length_bonus)[0]

    def decode_batch(self, log_probs: Any, lengths: Any = None) -> list[str]:
        """Best rescored sentence of each trial (``log_probs`` (B, T, 41), ``lengths`` (B,) as for ``WordDecoder``)."""
        nbests = [self.decoder.decode(trial) for trial in batch_trials(log_probs, lengths)]
        ranked = rescore_nbests(nbests, self.scorer, self.alpha, self.length_bonus)
        return [r[0].sentence if r else "" for r in ranked]
