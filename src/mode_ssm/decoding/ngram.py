"""Word n-gram language models: an interpolated modified Kneser-Ney ARPA writer and a small ARPA reader.

pip's ``kenlm`` can load and query ARPA files but has no ``lmplz`` to build them,
so the project writes ARPA itself. The estimate follows Chen & Goodman (1998)
as KenLM's ``lmplz`` does:

- the highest order uses raw counts; lower orders use continuation counts
  (the number of distinct words seen to the left), except n-grams that start
  with ``<s>``, which have no left context and keep raw counts;
- each order has three discounts D1, D2, D3+ from its counts-of-counts;
- every order interpolates with the next lower one, and the unigrams with the
  uniform distribution over the predictable vocabulary (words, ``</s>``,
  ``<unk>``), so ``<unk>`` and words that only appear in ``extra_words`` get
  probability mass.

Because the model is interpolated, the ARPA backoff weight of a context is
exactly its interpolation weight gamma, and the distribution given any context
sums to one. Probabilities in ARPA files are log10.

Words are the official scoring's normalised words (:func:`mode_ssm.text.normalize_sentence`),
so the LM's vocabulary is the vocabulary WER counts.
"""

from __future__ import annotations

import gzip
import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from mode_ssm.atomic import atomic_open
from mode_ssm.lexicon import Lexicon
from mode_ssm.text import sentence_words

BOS = "<s>"
EOS = "</s>"
UNK = "<unk>"
SPECIAL_WORDS = (BOS, EOS, UNK)
MAX_ORDER = 5
# KenLM's --discount_fallback values: used when an order's counts-of-counts
# cannot give valid Chen & Goodman discounts (tiny or artificial corpora).
FALLBACK_DISCOUNTS: tuple[float, float, float] = (0.5, 1.0, 1.5)
# log10 probability ARPA files give <s>, which is never predicted.
LOG10_ZERO = -99.0

NGram = tuple[str, ...]


@dataclass
class NgramModelReport:
    """What :func:`build_arpa` wrote."""

    path: Path
    order: int
    n_sentences: int
    vocabulary_size: int  # words in the unigram table, <s>, </s>, <unk> included
    ngram_counts: list[int]  # entries per order, 1..order
    discounts: list[tuple[float, float, float]]  # (D1, D2, D3+) per order
    discount_fallback: list[bool]  # True where an order used FALLBACK_DISCOUNTS
    missing_from_cmudict: list[str] = field(default_factory=list)  # filled by build_lm_from_sentences


def kneser_ney_discounts(counts_of_counts: Sequence[int]) -> tuple[float, float, float] | None:
    """Chen & Goodman's modified Kneser-Ney discounts (D1, D2, D3+).

    ``counts_of_counts[k-1]`` is the number of n-grams seen exactly k times,
    k = 1..4. Returns None when they are degenerate (a zero count, or a
    discount outside (0, k)), where a discount would make a probability
    negative or leave nothing for the lower order.
    """
    if len(counts_of_counts) < 4:
        raise ValueError(f"need counts of counts for k = 1..4, got {list(counts_of_counts)}")
    n1, n2, n3, n4 = (int(c) for c in counts_of_counts[:4])
    if min(n1, n2, n3, n4) <= 0:
        return None
    y = n1 / (n1 + 2 * n2)
    d = (1 - 2 * y * n2 / n1, 2 - 3 * y * n3 / n2, 3 - 4 * y * n4 / n3)
    if not all(0.0 < dk < k for k, dk in zip((1, 2, 3), d)):
        return None
    return d


def _sentence_tokens(sentence: str) -> list[str] | None:
    words = sentence_words(sentence)
    return [BOS, *words, EOS] if words else None


def _count_ngrams(token_lists: Sequence[list[str]], order: int) -> list[Counter]:
    """Raw counts; ``counts[n-1]`` holds the n-grams."""
    counts = [Counter() for _ in range(order)]
    for tokens in token_lists:
        for n in range(1, order + 1):
            c = counts[n - 1]
            for i in range(len(tokens) - n + 1):
                c[tuple(tokens[i : i + n])] += 1
    return counts


def _adjusted_counts(raw: list[Counter], order: int) -> list[dict[NGram, int]]:
    """Raw counts at the top order and for n-grams starting with <s>; continuation counts elsewhere."""
    adjusted: list[dict[NGram, int]] = [dict() for _ in range(order)]
    adjusted[order - 1] = dict(raw[order - 1])
    for n in range(order - 1, 0, -1):
        left_extensions: Counter = Counter(g[1:] for g in raw[n])
        adjusted[n - 1] = {
            g: (c if g[0] == BOS else left_extensions[g]) for g, c in raw[n - 1].items()
        }
    return adjusted


def _discount(count: int, d: tuple[float, float, float]) -> float:
    return 0.0 if count == 0 else d[min(count, 3) - 1]


def _format_log10(value: float) -> str:
    return f"{value:.7f}"


def build_arpa(
    sentences: Iterable[str],
    order: int = 3,
    out_path: str | Path = "lm.arpa",
    smoothing: str = "modified_kneser_ney",
    extra_words: Iterable[str] = (),
    discounts: Sequence[tuple[float, float, float]] | None = None,
) -> NgramModelReport:
    """Estimate an interpolated modified Kneser-Ney n-gram LM and write it as ARPA.

    Args:
        sentences: raw sentences; each is normalised like the official scoring.
        order: 1..5.
        out_path: ARPA file to write (parent folders are created).
        smoothing: only "modified_kneser_ney".
        extra_words: words added to the vocabulary with no counts: they get the
            uniform share of the unigram distribution, like ``<unk>``.
        discounts: (D1, D2, D3+) for each order 1..order, overriding the
            estimates from counts-of-counts.
    """
    if smoothing != "modified_kneser_ney":
        raise ValueError(f"unknown smoothing {smoothing!r}; only 'modified_kneser_ney' is implemented")
    if not 1 <= order <= MAX_ORDER:
        raise ValueError(f"n-gram order must be 1..{MAX_ORDER}, got {order}")
    if discounts is not None and len(discounts) != order:
        raise ValueError(f"need {order} discount triples (one per order), got {len(discounts)}")
    out_path = Path(out_path)

    token_lists = [t for t in (_sentence_tokens(s) for s in sentences) if t is not None]
    if not token_lists:
        raise ValueError(f"no words to build {out_path} from: every sentence is empty after normalisation")

    raw = _count_ngrams(token_lists, order)
    adjusted = _adjusted_counts(raw, order)

    # Predictable vocabulary: everything but <s>, which only ever is a context.
    vocab = sorted({g[0] for g in adjusted[0]} | {UNK} | set(_normalised_words(extra_words)))
    vocab.remove(BOS)

    used_discounts: list[tuple[float, float, float]] = []
    fallback: list[bool] = []
    for n in range(1, order + 1):
        if discounts is not None:
            used_discounts.append(tuple(float(x) for x in discounts[n - 1]))  # type: ignore[arg-type]
            fallback.append(False)
            continue
        coc = Counter(c for g, c in adjusted[n - 1].items() if g != (BOS,) and c <= 4)
        d = kneser_ney_discounts([coc[1], coc[2], coc[3], coc[4]])
        fallback.append(d is None)
        used_discounts.append(FALLBACK_DISCOUNTS if d is None else d)

    # prob[n-1][ngram] = interpolated probability; gamma[n-1][context] = interpolation weight
    prob: list[dict[NGram, float]] = []
    gamma: list[dict[NGram, float]] = []
    for n in range(1, order + 1):
        d = used_discounts[n - 1]
        by_context: dict[NGram, list[tuple[str, int]]] = defaultdict(list)
        for g, c in adjusted[n - 1].items():
            if g != (BOS,):
                by_context[g[:-1]].append((g[-1], c))
        gamma_n: dict[NGram, float] = {}
        prob_n: dict[NGram, float] = {}
        for context, followers in by_context.items():
            total = sum(c for _, c in followers)
            gamma_n[context] = sum(_discount(c, d) for _, c in followers) / total
            for word, c in followers:
                prob_n[context + (word,)] = (c - _discount(c, d)) / total
        if n == 1:
            uniform = gamma_n[()] / len(vocab)
            prob_n = {(w,): prob_n.get((w,), 0.0) + uniform for w in vocab}
        else:
            lower = prob[n - 2]
            for g in prob_n:
                prob_n[g] += gamma_n[g[:-1]] * lower[g[1:]]
        prob.append(prob_n)
        gamma.append(gamma_n)

    _write_arpa(out_path, order, prob, gamma)
    return NgramModelReport(
        path=out_path,
        order=order,
        n_sentences=len(token_lists),
        vocabulary_size=len(prob[0]) + 1,
        ngram_counts=[len(p) + (1 if n == 0 else 0) for n, p in enumerate(prob)],
        discounts=used_discounts,
        discount_fallback=fallback,
    )


def _normalised_words(words: Iterable[str]) -> list[str]:
    out: list[str] = []
    for w in words:
        out.extend(sentence_words(w))
    return out


def _write_arpa(
    path: Path, order: int, prob: list[dict[NGram, float]], gamma: list[dict[NGram, float]]
) -> None:
    counts = [len(p) for p in prob]
    counts[0] += 1  # <s>
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write("\n\\data\\\n")
        for n, c in enumerate(counts, start=1):
            f.write(f"ngram {n}={c}\n")
        for n in range(1, order + 1):
            f.write(f"\n\\{n}-grams:\n")
            # Contexts that were never followed by anything back off with weight 1 (log10 0).
            contexts = gamma[n] if n < order else None
            entries = sorted(prob[n - 1].items())
            if n == 1:
                entries = sorted(entries + [((BOS,), 0.0)])
            for g, p in entries:
                logp = LOG10_ZERO if g == (BOS,) else math.log10(p)
                line = f"{_format_log10(logp)}\t{' '.join(g)}"
                if contexts is not None:
                    line += f"\t{_format_log10(math.log10(contexts[g]) if g in contexts else 0.0)}"
                f.write(line + "\n")
        f.write("\n\\end\\\n")


def build_lm_from_sentences(
    sentences: Iterable[str],
    out_path: str | Path,
    order: int = 3,
    extra_words: Iterable[str] = (),
    discounts: Sequence[tuple[float, float, float]] | None = None,
) -> NgramModelReport:
    """Build an ARPA LM from raw sentences and report which of its words CMUdict cannot pronounce."""
    sentences = list(sentences)
    extra_words = list(extra_words)
    report = build_arpa(sentences, order=order, out_path=out_path, extra_words=extra_words, discounts=discounts)
    words = [w for s in sentences for w in sentence_words(s)] + _normalised_words(extra_words)
    report.missing_from_cmudict = Lexicon.from_cmudict().missing(words)
    return report


class ArpaModel:
    """A pure-Python ARPA back-off LM (log10), for tests and small checks; use kenlm for speed."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        # entries[n-1][ngram] = (log10 prob, log10 backoff)
        self.entries: list[dict[NGram, tuple[float, float]]] = []
        self._read()
        self.order = len(self.entries)

    def _read(self) -> None:
        opener = gzip.open if self.path.suffix == ".gz" else open
        try:
            f = opener(self.path, "rt", encoding="utf-8")
        except FileNotFoundError:
            raise FileNotFoundError(f"ARPA file {self.path} does not exist") from None
        declared: dict[int, int] = {}
        section = None  # "data", or the n of an n-gram section
        with f:
            for lineno, raw_line in enumerate(f, start=1):
                line = raw_line.strip()
                if not line:
                    continue
                where = f"{self.path}:{lineno}"
                if line == "\\data\\":
                    section = "data"
                elif line == "\\end\\":
                    break
                elif line.startswith("\\") and line.endswith("-grams:"):
                    try:
                        n = int(line[1 : -len("-grams:")])
                    except ValueError:
                        raise ValueError(f"{where}: bad section header {line!r}") from None
                    if n != len(self.entries) + 1:
                        raise ValueError(f"{where}: {n}-grams section out of order")
                    self.entries.append({})
                    section = n
                elif section == "data":
                    if not line.startswith("ngram ") or "=" not in line:
                        raise ValueError(f"{where}: expected 'ngram N=COUNT' in the \\data\\ section, got {line!r}")
                    n_str, c_str = line[len("ngram ") :].split("=", 1)
                    declared[int(n_str)] = int(c_str)
                elif isinstance(section, int):
                    parts = line.split()
                    n = section
                    if len(parts) not in (n + 1, n + 2):
                        raise ValueError(f"{where}: a {n}-gram line needs log10 prob, {n} words and an optional backoff")
                    try:
                        logp = float(parts[0])
                        bow = float(parts[n + 1]) if len(parts) == n + 2 else 0.0
                    except ValueError:
                        raise ValueError(f"{where}: not a number in {line!r}") from None
                    self.entries[n - 1][tuple(parts[1 : n + 1])] = (logp, bow)
                else:
                    raise ValueError(f"{where}: text outside any ARPA section: {line!r}")
        if not self.entries:
            raise ValueError(f"{self.path}: no n-gram sections; not an ARPA file")
        for n, table in enumerate(self.entries, start=1):
            if declared.get(n) != len(table):
                raise ValueError(f"{self.path}: header declares {declared.get(n)} {n}-grams, the file holds {len(table)}")
        if (UNK,) not in self.entries[0]:
            raise ValueError(f"{self.path}: no <unk> unigram")

    @property
    def vocabulary(self) -> list[str]:
        """Unigram words, <s>, </s> and <unk> included."""
        return [g[0] for g in self.entries[0]]

    def log10_prob(self, word: str, context: Sequence[str] = ()) -> float:
        """log10 P(word | context) with back-off; unknown words count as <unk>.

        ``context`` lists the preceding words, oldest first (``<s>`` for a sentence start).
        """
        unigrams = self.entries[0]
        word = word if (word,) in unigrams else UNK
        context = tuple(w if (w,) in unigrams else UNK for w in context)[-(self.order - 1) :] if self.order > 1 else ()
        backoff = 0.0
        while True:
            entry = self.entries[len(context)].get(context + (word,))
            if entry is not None:
                return backoff + entry[0]
            ctx_entry = self.entries[len(context) - 1].get(context) if context else None
            if ctx_entry is not None:
                backoff += ctx_entry[1]
            context = context[1:]

    def score_sentence(self, sentence: str | Sequence[str], bos: bool = True, eos: bool = True) -> float:
        """Total log10 probability of a sentence (a normalised string is split on spaces)."""
        words = sentence.split() if isinstance(sentence, str) else list(sentence)
        history = [BOS] if bos else []
        total = 0.0
        for w in words + ([EOS] if eos else []):
            total += self.log10_prob(w, history)
            history.append(w)
        return total
