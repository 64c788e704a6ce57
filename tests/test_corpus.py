"""Simulated sentences: pronounceable, corpus-like, deterministic, val/test kept out of train text."""

from __future__ import annotations

import numpy as np
import pytest

from mode_ssm.lexicon import Lexicon
from mode_ssm.phonemes import BOUNDARY
from mode_ssm.sim.corpus import (
    CORPORA,
    FIFTY_WORDS,
    LENGTH_RANGE,
    SentenceGenerator,
    build_vocabulary,
    frequency_list,
    sentence_key,
)
from mode_ssm.sim.plan import corpus_text, make_plan
from mode_ssm.text import sentence_words

TINY = {
    "name": "tiny",
    "sessions": ["t15.2023.08.13", "t15.2023.10.22", "t15.2025.01.12"],
    "trial_fraction": 0.1,
    "max_words": 5,
}


@pytest.fixture(scope="module")
def generator() -> SentenceGenerator:
    return SentenceGenerator()


@pytest.fixture(scope="module")
def samples(generator) -> dict[str, list[str]]:
    rng = np.random.default_rng(123)
    return {c: [generator.sentence(c, rng) for _ in range(300)] for c in CORPORA}


def test_every_word_is_in_cmudict(samples):
    lexicon = Lexicon.from_cmudict()
    for corpus, sentences in samples.items():
        assert lexicon.missing(w for s in sentences for w in sentence_words(s)) == [], corpus
        ids = lexicon.sentence_to_ids(sentences[0])
        assert ids[-1] == BOUNDARY and ids.count(BOUNDARY) == len(sentence_words(sentences[0]))


def test_same_seed_same_sentences_other_seed_others(generator):
    def draw(seed):
        rng = np.random.default_rng(seed)
        return [generator.sentence(c, rng) for c in CORPORA for _ in range(20)]

    assert draw(5) == draw(5)
    assert sum(a != b for a, b in zip(draw(5), draw(6))) > 90  # of 120


def test_fifty_word_corpus_uses_only_the_fifty_words(samples):
    words = {w for s in samples["50-Word"] for w in sentence_words(s)}
    assert words <= set(FIFTY_WORDS)
    assert len(words) >= 35  # and most of them


def test_lengths_follow_the_corpus(samples, generator):
    mean = {c: np.mean([len(sentence_words(s)) for s in ss]) for c, ss in samples.items()}
    for corpus, sentences in samples.items():
        lo, hi = LENGTH_RANGE[corpus]
        assert all(lo <= len(sentence_words(s)) <= hi for s in sentences), corpus
    assert 3.0 < mean["50-Word"] < 4.5
    assert 5.0 < mean["Switchboard"] < 8.0
    assert 9.0 < mean["Openwebtext"] < 14.0
    assert mean["50-Word"] < mean["Switchboard"] < mean["Openwebtext"]
    rng = np.random.default_rng(0)
    assert max(len(sentence_words(generator.sentence("Openwebtext", rng, max_words=5))) for _ in range(50)) <= 5


def test_cue_text_looks_like_the_release(samples):
    s = samples["Switchboard"]
    assert all(x[0].isupper() and x[-1] in ".?" for x in s)
    assert any(x.endswith("?") for x in s) and any(" I " in f" {x} " or x.startswith("I ") for x in s)


def test_vocabulary_is_a_few_thousand_words_and_freq_words_are_frequent(samples):
    vocab = build_vocabulary()
    assert 2500 < len(vocab.words()) < 10000
    assert len(vocab.verbs) > 200 and len(vocab.adjectives) > 500 and len(vocab.nouns) > 500
    rank = {w: i for i, w in enumerate(frequency_list())}

    def share_frequent(corpus):
        words = [w for s in samples[corpus] for w in sentence_words(s)]
        return np.mean([rank.get(w, 10**9) < 1500 for w in words])

    assert share_frequent("Freq words") > 0.9
    assert share_frequent("Freq words") > share_frequent("Switchboard") + 0.04
    assert share_frequent("Random") < 0.2


def test_plan_keeps_val_test_sentences_out_of_train():
    plan = make_plan("full", seed=0)
    train = {sentence_key(s) for s in plan.train_sentences()}
    held_out = {sentence_key(s) for s in plan.val_test_sentences()}
    assert train and held_out and not train & held_out
    counts = plan.counts()  # the release: 8,072 train, 1,426 val, 1,450 test
    assert abs(counts["train"] - 8072) < 250 and abs(counts["val"] - 1426) < 100 and abs(counts["test"] - 1450) < 100
    assert len(plan.sessions) == 45


def test_corpus_text_is_train_text_plus_extra_outside_val_test():
    plan = make_plan(TINY, seed=1)
    text = corpus_text(TINY, seed=1, n_extra=400, plan=plan)
    assert text[: len(plan.train_sentences())] == plan.train_sentences()
    assert len(text) == len(plan.train_sentences()) + 400
    held_out = {sentence_key(s) for s in plan.val_test_sentences()}
    assert not held_out & {sentence_key(s) for s in text}
    assert text == corpus_text(TINY, seed=1, n_extra=400)
    assert all(len(sentence_words(s)) <= 5 for s in text)
