"""Optional n-best rescoring with a causal language model the user already has on disk.

``transformers`` is not a dependency of MODE-SSM: it is imported only by
:meth:`CausalLMScorer.from_pretrained`, which loads with ``local_files_only``
so nothing is ever downloaded. Any callable mapping sentences to natural-log
probabilities can stand in for the scorer.

Combined score of a hypothesis:
``decoder_score + alpha * ln P_LLM(sentence) + length_bonus * n_words``.
The decoder score is natural-log (see :mod:`mode_ssm.decoding.lexicon_decoder`),
so ``alpha`` weighs like-for-like units.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

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
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, **(model_kwargs or {}))
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

    def __call__(self, sentences: Sequence[str]) -> list[float]:
        """Natural-log probability of each sentence."""
        import torch

        out: list[float] = []
        for start in range(0, len(sentences), self.batch_size):
            encoded = [self._token_ids(s) for s in sentences[start : start + self.batch_size]]
            max_len = max(len(ids) for ids in encoded)
            if max_len < 2:
                out.extend(0.0 for _ in encoded)
                continue
            input_ids = torch.zeros((len(encoded), max_len), dtype=torch.long)
            attention_mask = torch.zeros_like(input_ids)
            for b, ids in enumerate(encoded):
                input_ids[b, : len(ids)] = torch.tensor(ids)
                attention_mask[b, : len(ids)] = 1
            with torch.no_grad():
                logits = self.model(
                    input_ids=input_ids.to(self.device), attention_mask=attention_mask.to(self.device)
                ).logits.float()
            # position i predicts token i + 1; right padding leaves real positions untouched
            log_probs = torch.log_softmax(logits[:, :-1], dim=-1)
            targets = input_ids[:, 1:].to(log_probs.device)
            token_lp = log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # (B, L-1)
            mask = attention_mask[:, 1:].to(token_lp.device).bool()
            out.extend((token_lp * mask).sum(dim=1).tolist())
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
    if not nbest:
        return []
    pairs: list[tuple[str, float]] = []
    for h in nbest:
        if hasattr(h, "sentence") and hasattr(h, "score"):
            pairs.append((h.sentence, float(h.score)))
        else:
            sentence, score = h
            pairs.append((str(sentence), float(score)))
    llm = list(scorer([s for s, _ in pairs]))
    if len(llm) != len(pairs):
        raise ValueError(f"the scorer returned {len(llm)} scores for {len(pairs)} sentences")
    rescored = [
        RescoredHypothesis(s, d, float(lp), d + alpha * float(lp) + length_bonus * len(s.split()))
        for (s, d), lp in zip(pairs, llm)
    ]
    rescored.sort(key=lambda h: h.score, reverse=True)
    return rescored
