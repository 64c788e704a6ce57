"""Speed (and sanity-check accuracy) of word decoding on synthetic phoneme posteriors, one CPU thread.

    python benchmarks/decode_speed.py [--vocab 2000] [--sentences 30] [--beams 10 50 100 200]

A Markov-chain "language" over the most frequent CMUdict words gives an LM
corpus and held-out test sentences; test posteriors have 2-5 frames per
phoneme, blank runs, Gaussian logit noise, some phonemes swapped for others and
some word boundaries dropped, so T is 300-600 frames for 10-16 words. Reports
ms per sentence of the lexicon + 3-gram beam search for both boundary modes,
the WER it reaches, and the no-LM baselines (greedy phonemes -> PER, greedy
phonemes + lexicon -> WER). The WER numbers depend entirely on the simulated
noise: they check that the pieces fit, not how good a real decoder is.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mode_ssm.decoding.ctc import ctc_greedy, ctc_prefix_beam_search
from mode_ssm.decoding.lexicon_decoder import PronunciationIndex, WordDecoder, greedy_words
from mode_ssm.decoding.ngram import build_arpa
from mode_ssm.lexicon import Lexicon
from mode_ssm.metrics import phoneme_error_rate, word_error_rate
from mode_ssm.phonemes import BLANK, BOUNDARY


def vocabulary(size: int) -> list[str]:
    import wordfreq

    cmu = Lexicon.from_cmudict()
    words = [w for w in wordfreq.top_n_list("en", size * 3) if w.isalpha() and w in cmu]
    return words[:size]


def markov_sentences(words: list[str], n: int, rng: np.random.Generator) -> list[str]:
    """Sentences from a sparse random word bigram chain with Zipf-like weights (deterministic per rng)."""
    v = len(words)
    successors = rng.integers(0, v, size=(v, 12))
    weights = 1.0 / np.arange(1, 13)
    weights /= weights.sum()
    out = []
    for _ in range(n):
        w = int(rng.integers(0, min(v, 200)))
        seq = [w]
        for _ in range(int(rng.integers(9, 16))):
            w = int(successors[w, rng.choice(12, p=weights)]) if rng.random() < 0.9 else int(rng.integers(0, v))
            seq.append(w)
        out.append(" ".join(words[i] for i in seq))
    return out


def noisy_log_probs(
    ids: list[int], rng: np.random.Generator, peak: float = 6.0, noise: float = 1.0, swap: float = 0.1,
    drop_boundary: float = 0.1,
) -> np.ndarray:
    """(T, 41) log-probabilities for a label sequence.

    2-5 frames per label and 0-3 blank frames between labels; Gaussian logit
    noise; with probability ``swap`` a phoneme's frames favour another phoneme
    while the true one keeps a logit 1.5 lower (a confusion with evidence left,
    as a real acoustic model makes); with probability ``drop_boundary`` a word
    boundary is missing.
    """
    frames: list[int] = [BLANK] * 3
    runner_up: list[int] = [-1] * 3
    prev = None
    for c in ids:
        if c == BOUNDARY and rng.random() < drop_boundary:
            continue
        shown, hidden = c, -1
        if c != BOUNDARY and rng.random() < swap:
            shown, hidden = int(rng.integers(1, BOUNDARY)), c
        if shown == prev:
            frames.append(BLANK)
            runner_up.append(-1)
        n = int(rng.integers(2, 6))
        frames += [shown] * n
        runner_up += [hidden] * n
        gap = int(rng.integers(0, 4))
        frames += [BLANK] * gap
        runner_up += [-1] * gap
        prev = shown
    frames += [BLANK] * 3
    runner_up += [-1] * 3
    rows = np.arange(len(frames))
    logits = rng.normal(0.0, noise, size=(len(frames), 41))
    logits[rows, frames] += peak
    has_hidden = np.asarray(runner_up) >= 0
    logits[rows[has_hidden], np.asarray(runner_up)[has_hidden]] += peak - 1.5
    return torch.log_softmax(torch.from_numpy(logits), dim=-1).numpy().astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab", type=int, default=2000)
    parser.add_argument("--lm-sentences", type=int, default=20000)
    parser.add_argument("--sentences", type=int, default=30)
    parser.add_argument("--beams", type=int, nargs="+", default=[10, 50, 100, 200])
    parser.add_argument("--lm-weight", type=float, default=1.0)
    parser.add_argument("--word-score", type=float, default=0.0)
    parser.add_argument("--beam-threshold", type=float, default=25.0)
    parser.add_argument("--beam-size-token", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(args.seed)

    words = vocabulary(args.vocab)
    lexicon = Lexicon.from_cmudict(words)
    corpus = markov_sentences(words, args.lm_sentences + args.sentences, rng)
    lm_corpus, test = corpus[: args.lm_sentences], corpus[args.lm_sentences :]
    tmp = Path(tempfile.mkdtemp())
    t0 = time.perf_counter()
    report = build_arpa(lm_corpus, order=3, out_path=tmp / "lm.arpa")
    build_s = time.perf_counter() - t0
    print(f"vocabulary {len(lexicon)} words; LM: {args.lm_sentences} sentences, 3-gram, n-grams {report.ngram_counts}, "
          f"built in {build_s:.1f} s")

    log_probs = [noisy_log_probs(lexicon.sentence_to_ids(s), rng) for s in test]
    lengths = [len(x) for x in log_probs]
    print(f"{len(test)} test sentences, {min(lengths)}-{max(lengths)} frames (mean {np.mean(lengths):.0f})")

    greedy = [ctc_greedy(x) for x in log_probs]
    per = phoneme_error_rate([lexicon.sentence_to_ids(s) for s in test], greedy)[0]
    t0 = time.perf_counter()
    index = PronunciationIndex(lexicon)
    greedy_text = [" ".join(greedy_words(g, index)) for g in greedy]
    greedy_ms = (time.perf_counter() - t0) * 1000 / len(test)
    print(f"greedy phonemes: PER {per:.3f}; greedy phonemes + lexicon: WER {word_error_rate(test, greedy_text)[0]:.3f} "
          f"({greedy_ms:.1f} ms/sentence incl. index build)")

    t0 = time.perf_counter()
    for x in log_probs[:5]:
        ctc_prefix_beam_search(x, beam=16, beam_size_token=8)
    print(f"phoneme prefix beam search (beam 16, 8 tokens/frame, pure Python): "
          f"{(time.perf_counter() - t0) * 1000 / 5:.0f} ms/sentence")

    print(f"\nlexicon + 3-gram beam search (flashlight + KenLM), lm_weight {args.lm_weight}, "
          f"word_score {args.word_score}, beam_threshold {args.beam_threshold}, beam_size_token {args.beam_size_token}")
    # CPU time as well as wall time: on a shared machine wall time includes waiting for a core
    print(f"{'boundary':>9} {'beam':>5} {'wall ms/sent':>13} {'cpu ms/sent':>12} {'cpu ms/frame':>13} {'WER':>6}")
    for boundary in ("optional", "required"):
        for beam in args.beams:
            decoder = WordDecoder(
                lexicon, tmp / "lm.arpa", lm_weight=args.lm_weight, word_score=args.word_score, beam=beam,
                beam_threshold=args.beam_threshold, beam_size_token=args.beam_size_token,
                boundary=boundary,  # type: ignore[arg-type]
            )
            decoder.decode(log_probs[0])  # warm-up
            t0, c0 = time.perf_counter(), time.process_time()
            hyps = [decoder.decode(x)[0].sentence for x in log_probs]
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            wer = word_error_rate(test, hyps)[0]
            print(f"{boundary:>9} {beam:>5} {wall * 1000 / len(test):>13.1f} {cpu * 1000 / len(test):>12.1f} "
                  f"{cpu * 1000 / sum(lengths):>13.3f} {wer:>6.3f}")


if __name__ == "__main__":
    main()
