from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mode_ssm.decoding.lexicon_decoder import (
    LN10,
    PronunciationIndex,
    WordDecoder,
    build_vocabulary,
    greedy_words,
)
from mode_ssm.decoding.ngram import ArpaModel, build_arpa
from mode_ssm.lexicon import Lexicon
from mode_ssm.phonemes import BLANK, BOUNDARY, PHONEME_TO_ID

torch.set_num_threads(1)

LM_CORPUS = [
    "the cat sat on the mat",
    "the dog ran over there",
    "their house is very big",
    "we went over there",
    "i want to go home",
    "the dog sat on the mat",
    "the bat flew over the house",
    "they left their car at home",
    "a big dog ran home",
    "we want to sit on the mat",
]
TEST_SENTENCES = [
    "the cat sat on the mat",
    "we want to go over there",  # not in the LM corpus as a whole
    "their dog sat on a big mat",
    "the house is big",
]


def frames_log_probs(frames: list[int], rng: np.random.Generator, peak: float, noise: float) -> np.ndarray:
    """(T, 41) log-probabilities whose argmax follows ``frames``, with Gaussian logit noise."""
    logits = rng.normal(0.0, noise, size=(len(frames), 41))
    logits[np.arange(len(frames)), frames] += peak
    logits -= logits.max(axis=1, keepdims=True)
    return (logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))).astype(np.float32)


def synthetic_log_probs(ids: list[int], rng: np.random.Generator, peak: float = 5.0, noise: float = 1.0) -> np.ndarray:
    """(T, 41) CTC-like log-probabilities for a label sequence: blank runs, 1-3 frame label runs, noise."""
    frames: list[int] = [BLANK] * int(rng.integers(1, 5))
    for i, c in enumerate(ids):
        if i > 0 and ids[i - 1] == c:
            frames.append(BLANK)  # CTC needs a blank between repeated labels
        frames += [c] * int(rng.integers(1, 4))
        frames += [BLANK] * int(rng.integers(0, 4))
    frames += [BLANK] * int(rng.integers(1, 5))
    return frames_log_probs(frames, rng, peak, noise)


@pytest.fixture(scope="module")
def lexicon() -> Lexicon:
    vocab = build_vocabulary(LM_CORPUS + TEST_SENTENCES, extra_words=["cats", "pat"])
    assert vocab.missing_from_cmudict == []
    return vocab.lexicon()


@pytest.fixture(scope="module")
def arpa(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("lm") / "lm.arpa"
    build_arpa(LM_CORPUS, order=3, out_path=path, extra_words=["cats", "pat"])
    return str(path)


@pytest.mark.parametrize("boundary", ["optional", "required"])
def test_decodes_noisy_posteriors_to_the_right_words(lexicon, arpa, boundary):
    decoder = WordDecoder(lexicon, arpa, lm_weight=0.5, beam=50, boundary=boundary)
    rng = np.random.default_rng(0)
    for sentence in TEST_SENTENCES:
        for _ in range(2):
            log_probs = synthetic_log_probs(lexicon.sentence_to_ids(sentence), rng)
            best = decoder.decode(log_probs)[0]
            assert best.sentence == sentence


def test_optional_boundary_survives_a_dropped_boundary(lexicon, arpa):
    ids = lexicon.sentence_to_ids("the cat sat on the mat")
    del ids[[k for k, i in enumerate(ids) if i == BOUNDARY][1]]  # the model missed the boundary after "cat"
    frames = [BLANK]
    for c in ids:  # one frame per label: a word-final phoneme lasting one frame can end a word
        frames += [c, BLANK]
    log_probs = frames_log_probs(frames, np.random.default_rng(1), peak=8.0, noise=0.3)
    optional = WordDecoder(lexicon, arpa, lm_weight=0.5, boundary="optional").decode(log_probs)[0]
    required = WordDecoder(lexicon, arpa, lm_weight=0.5, boundary="required").decode(log_probs)[0]
    assert optional.sentence == "the cat sat on the mat"
    # every frame's argmax is on the optional path, so it costs only the non-peak mass (about -0.6 in all)
    assert optional.acoustic_score == pytest.approx(float(log_probs[np.arange(len(frames)), frames].sum()), abs=1e-4)
    # "required" has to read the missing boundary out of a blank frame (about -8 nats) or decode other words
    assert required.score < optional.score - 5.0


def test_score_is_acoustic_plus_weighted_lm_in_natural_log(lexicon, arpa):
    lm_weight, word_score = 0.7, 1.5
    decoder = WordDecoder(lexicon, arpa, lm_weight=lm_weight, word_score=word_score, nbest=3)
    log_probs = synthetic_log_probs(lexicon.sentence_to_ids("the dog ran home"), np.random.default_rng(2))
    hyps = decoder.decode(log_probs)
    assert hyps[0].sentence == "the dog ran home"
    assert len(hyps) == 3 and len({h.words for h in hyps}) == 3
    assert hyps[0].score >= hyps[1].score >= hyps[2].score
    reference_lm = ArpaModel(arpa)
    for h in hyps:
        assert h.lm_log_prob == pytest.approx(reference_lm.score_sentence(h.sentence) * LN10, abs=1e-3)
        expected = h.acoustic_score + lm_weight * h.lm_log_prob + word_score * len(h.words)
        assert h.score == pytest.approx(expected, abs=1e-3)


def _mixed_log_probs(lexicon: Lexicon, sentence: str, a: int, b: int, seed: int) -> np.ndarray:
    """Posteriors where every frame of class ``a`` is split 50/50 between ``a`` and ``b``."""
    log_probs = synthetic_log_probs(lexicon.sentence_to_ids(sentence), np.random.default_rng(seed), noise=0.0, peak=8.0)
    for t in np.flatnonzero(log_probs.argmax(axis=1) == a):
        log_probs[t] = -12.0
        log_probs[t, [a, b]] = math.log(0.5)
    return log_probs


def test_lm_resolves_acoustic_ambiguity(lexicon, arpa, tmp_path):
    # B and P equally likely: "the bat flew ..." is in the LM corpus, "pat" only as an extra word.
    log_probs = _mixed_log_probs(lexicon, "the bat flew over the house", PHONEME_TO_ID["B"], PHONEME_TO_ID["P"], seed=3)
    no_lm_hyps = {h.sentence for h in WordDecoder(lexicon, None, nbest=5).decode(log_probs)}
    assert {"the bat flew over the house", "the pat flew over the house"} <= no_lm_hyps
    assert WordDecoder(lexicon, arpa).decode(log_probs)[0].sentence == "the bat flew over the house"
    # Homophones: identical acoustics, so the LM alone decides, and a different LM decides differently.
    log_probs = synthetic_log_probs(lexicon.sentence_to_ids("we went over there"), np.random.default_rng(4))
    assert WordDecoder(lexicon, arpa).decode(log_probs)[0].sentence == "we went over there"
    other = tmp_path / "their.arpa"
    build_arpa(["we went over their house"] * 3 + ["their car"], order=3, out_path=other)
    assert WordDecoder(lexicon, other).decode(log_probs)[0].sentence == "we went over their"


def test_unknown_words(lexicon, arpa):
    # "cats" is in the lexicon and the ARPA only as an extra word; "pat" likewise: both still decode.
    rng = np.random.default_rng(5)
    log_probs = synthetic_log_probs(lexicon.sentence_to_ids("the cats sat"), rng)
    assert WordDecoder(lexicon, arpa).decode(log_probs)[0].sentence == "the cats sat"
    # A lexicon word the ARPA has never heard of is scored with the LM's <unk>.
    small_lm_lexicon = Lexicon({**lexicon.entries, "zebra": Lexicon.from_cmudict(["zebra"]).entries["zebra"]})
    log_probs = synthetic_log_probs(small_lm_lexicon.sentence_to_ids("the zebra sat"), rng)
    hyp = WordDecoder(small_lm_lexicon, arpa).decode(log_probs)[0]
    assert hyp.sentence == "the zebra sat"
    assert hyp.lm_log_prob == pytest.approx(ArpaModel(arpa).score_sentence("the <unk> sat") * LN10, abs=1e-3)
    # Spoken "cat" with only "cats" in the lexicon: with an unk score the prefix K AE T becomes <unk>.
    no_cat = Lexicon({w: p for w, p in lexicon.entries.items() if w != "cat"})
    ids = lexicon.sentence_to_ids("the cat sat")
    log_probs = synthetic_log_probs(ids, np.random.default_rng(6))
    hyp = WordDecoder(no_cat, arpa, unk_score=0.0).decode(log_probs)[0]
    assert hyp.words == ("the", "<unk>", "sat")
    assert "<unk>" not in WordDecoder(no_cat, arpa).decode(log_probs)[0].words


def test_decode_batch_with_lengths_and_torch(lexicon, arpa):
    rng = np.random.default_rng(7)
    a = synthetic_log_probs(lexicon.sentence_to_ids("i want to go home"), rng)
    b = synthetic_log_probs(lexicon.sentence_to_ids("the dog sat"), rng)
    batch = np.full((2, max(len(a), len(b)) + 5, 41), math.log(1 / 41), dtype=np.float32)  # padding is noise
    batch[0, : len(a)] = a
    batch[1, : len(b)] = b
    decoder = WordDecoder(lexicon, arpa)
    out = decoder.decode_batch(torch.from_numpy(batch), torch.tensor([len(a), len(b)]))
    assert out == ["i want to go home", "the dog sat"]
    with pytest.raises(ValueError, match=r"\(T, 41\)"):
        decoder.decode(np.zeros((10, 40), dtype=np.float32))
    with pytest.raises(ValueError, match="lengths"):
        decoder.decode_batch(batch, [len(a)])
    with pytest.raises(FileNotFoundError, match="nowhere.arpa"):
        WordDecoder(lexicon, "nowhere.arpa")


def test_greedy_words_baseline(lexicon):
    index = PronunciationIndex(lexicon)
    ids = lexicon.sentence_to_ids("the dog ran home")
    assert greedy_words(ids, index) == ["the", "dog", "ran", "home"]
    # homophones go to the more frequent word
    by_frequency = PronunciationIndex(lexicon, word_frequency={"there": 2e-3, "their": 1e-3})
    assert greedy_words(lexicon.sentence_to_ids("over their"), by_frequency) == ["over", "there"]
    by_frequency = PronunciationIndex(lexicon, word_frequency={"there": 1e-3, "their": 2e-3})
    assert greedy_words(lexicon.sentence_to_ids("over there"), by_frequency) == ["over", "their"]
    # one phoneme wrong in "dog" (D AO G -> D AO K) and no final boundary
    dok = [PHONEME_TO_ID[p] for p in ("D", "AO", "K")]
    assert greedy_words([BLANK] + dok, lexicon) == ["dog"]
    assert greedy_words([BOUNDARY, BOUNDARY], index) == []


def test_pruned_nearest_search_equals_full_scan():
    import editdistance

    lexicon = Lexicon.from_cmudict(["cat", "cats", "scat", "at", "a", "catalog", "dog", "dogs", "go", "mat"])
    freq = {w: 0.0 for w in lexicon.words}
    index = PronunciationIndex(lexicon, word_frequency=freq)
    rng = np.random.default_rng(8)
    prons = [(w, p) for w in sorted(lexicon.words) for p in lexicon.entries[w]]
    for _ in range(200):
        query = list(rng.integers(1, 40, size=int(rng.integers(1, 8))))
        word, dist = index.nearest_word(query)
        full_best = min(editdistance.eval(query, list(p)) for _, p in prons)
        assert dist == full_best
        assert editdistance.eval(query, list(lexicon.entries[word][0])) == full_best or any(
            editdistance.eval(query, list(p)) == full_best for p in lexicon.entries[word]
        )
        # equal frequencies: ties go alphabetically
        assert word == min(w for w, p in prons if editdistance.eval(query, list(p)) == full_best)


def test_build_vocabulary_reports_gaps_and_spells_compounds():
    vocab = build_vocabulary(["Twenty-one cats, Zqxj!"], extra_words=["Dog", "cats"])
    assert vocab.words == ["twenty-one", "cats", "zqxj", "dog"]
    assert list(vocab) == vocab.words and len(vocab) == 4 and "dog" in vocab
    assert vocab.missing_from_cmudict == ["zqxj"]
    lex = vocab.lexicon()
    assert set(lex.words) == {"twenty-one", "cats", "dog"}
    assert lex.entries["twenty-one"][0] == lex.pronunciations("twenty-one")[0]
    # CMUdict's own entry wins (W AH N, not the W AA N of "one") ...
    cmu = Lexicon.from_cmudict(["twenty-one", "twenty", "one", "dog", "house"]).entries
    assert lex.entries["twenty-one"] == cmu["twenty-one"] != (cmu["twenty"][0] + cmu["one"][0],)
    # ... and a compound CMUdict lacks is spelt from its parts' first pronunciations, with no boundary inside
    compound = build_vocabulary(["The dog-house."])
    assert compound.missing_from_cmudict == [] and "dog-house" not in cmu
    assert compound.lexicon().entries["dog-house"] == (cmu["dog"][0] + cmu["house"][0],)


def test_homophone_limit_keeps_the_likeliest_words(tmp_path):
    pron = (PHONEME_TO_ID["DH"], PHONEME_TO_ID["EH"], PHONEME_TO_ID["R"])
    names = ["aa", "bb", "cc", "dd", "ee", "ff", "gg", "hh"]
    lexicon = Lexicon.from_mapping({w: [pron] for w in names})
    path = tmp_path / "lm.arpa"
    build_arpa(["aa"] * 5 + ["bb", "cc", "dd", "ee", "ff"], order=2, out_path=path)  # gg, hh only via <unk>
    with pytest.warns(UserWarning, match="2 words share a pronunciation"):
        decoder = WordDecoder(lexicon, path)
    assert sorted(decoder.dropped_homophones) == ["gg", "hh"]
    log_probs = synthetic_log_probs(list(pron) + [BOUNDARY], np.random.default_rng(9))
    assert decoder.decode(log_probs)[0].sentence == "aa"
