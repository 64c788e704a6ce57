from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mode_ssm.decoding.ngram import (
    BOS,
    EOS,
    FALLBACK_DISCOUNTS,
    UNK,
    ArpaModel,
    build_arpa,
    build_lm_from_sentences,
    kneser_ney_discounts,
)


def _zipf_corpus(seed: int, n_sentences: int = 400, n_words: int = 300) -> list[str]:
    rng = np.random.default_rng(seed)
    # letters only: digits would be stripped by the official normalisation
    words = ["w" + "abcdefghijklmnopqrstuvwxyz"[i // 26] + "abcdefghijklmnopqrstuvwxyz"[i % 26] for i in range(n_words)]
    weights = 1.0 / np.arange(1, n_words + 1)
    weights /= weights.sum()
    out = []
    for _ in range(n_sentences):
        n = int(rng.integers(1, 9))
        # a little structure so higher orders have repeated n-grams
        first = rng.choice(n_words, p=weights)
        seq = [first] + [(first + k * int(rng.integers(1, 3))) % n_words for k in range(1, n)]
        out.append(" ".join(words[i] for i in seq))
    return out


def test_hand_computed_bigram(tmp_path):
    # <s> a b </s>, <s> a c </s>: continuation counts a=1 b=1 c=1 </s>=2 (raw a=2);
    # counts-of-counts have no 3s, so the fallback discounts 0.5 / 1 / 1.5 apply.
    report = build_arpa(["a b", "A, c."], order=2, out_path=tmp_path / "lm.arpa")
    assert report.discount_fallback == [True, True]
    assert report.discounts == [FALLBACK_DISCOUNTS, FALLBACK_DISCOUNTS]
    assert report.ngram_counts == [6, 5]  # <s> </s> <unk> a b c; <s>a ab ac b</s> c</s>
    lm = ArpaModel(report.path)
    p = lambda w, ctx=(): 10 ** lm.log10_prob(w, ctx)  # noqa: E731
    # unigram: S = 5, gamma = (0.5*3 + 1*1)/5 = 0.5, uniform share 0.5/5 over {a b c </s> <unk>}
    assert p("a") == pytest.approx(0.2, abs=1e-6)
    assert p(EOS) == pytest.approx(0.3, abs=1e-6)
    assert p(UNK) == pytest.approx(0.1, abs=1e-6)
    assert p("never-seen") == pytest.approx(0.1, abs=1e-6)
    # bigram: P(a|<s>) = (2-1)/2 + 0.5*0.2 ; P(b|a) = (1-0.5)/2 + 0.5*0.2 ; P(</s>|b) = 0.5 + 0.5*0.3
    assert p("a", [BOS]) == pytest.approx(0.6, abs=1e-6)
    assert p("b", ["a"]) == pytest.approx(0.35, abs=1e-6)
    assert p(EOS, ["b"]) == pytest.approx(0.65, abs=1e-6)
    # unseen after "a": backoff weight gamma(a) = 0.5 times the unigram
    assert p(EOS, ["a"]) == pytest.approx(0.15, abs=1e-6)
    assert lm.entries[0][("a",)][1] == pytest.approx(math.log10(0.5), abs=1e-6)
    assert lm.score_sentence("a b") == pytest.approx(math.log10(0.6 * 0.35 * 0.65), abs=1e-6)


def test_chen_goodman_discounts():
    # Y = 10/(10+10) = 0.5; D1 = 1 - 2*.5*5/10; D2 = 2 - 3*.5*3/5; D3 = 3 - 4*.5*2/3
    assert kneser_ney_discounts([10, 5, 3, 2]) == pytest.approx((0.5, 1.1, 3 - 4 / 3))
    assert kneser_ney_discounts([3, 1, 0, 0]) is None
    assert kneser_ney_discounts([10, 5, 20, 2]) is None  # D2 = 2 - 3*.5*20/5 < 0


@pytest.mark.parametrize("order", [1, 2, 3, 5])
def test_distributions_sum_to_one(tmp_path, order):
    corpus = _zipf_corpus(seed=order)
    report = build_arpa(corpus, order=order, out_path=tmp_path / "lm.arpa", extra_words=["zebra"])
    assert report.discount_fallback[0] is False  # a 400-sentence corpus gives proper discounts
    lm = ArpaModel(report.path)
    vocab = [w for w in lm.vocabulary if w != BOS]
    assert "zebra" in vocab and UNK in vocab and EOS in vocab
    rng = np.random.default_rng(100 + order)
    contexts: list[list[str]] = [[], [BOS], ["zebra"], ["wad", "unseen-word"]]
    for s in rng.choice(corpus, size=12, replace=False):
        tokens = [BOS] + s.split()
        cut = int(rng.integers(1, len(tokens) + 1))
        contexts.append(tokens[:cut])
    for ctx in contexts:
        total = sum(10 ** lm.log10_prob(w, ctx) for w in vocab)
        assert total == pytest.approx(1.0, abs=1e-4), ctx


def test_kenlm_agrees_with_arpa_reader(tmp_path):
    kenlm = pytest.importorskip("kenlm")
    corpus = _zipf_corpus(seed=7)
    report = build_arpa(corpus, order=3, out_path=tmp_path / "lm.arpa")
    ours = ArpaModel(report.path)
    model = kenlm.Model(str(report.path))
    assert model.order == 3
    for sentence in corpus[:15] + ["wab wac unseen wad", "unseen"]:
        kenlm_scores = [s[0] for s in model.full_scores(sentence, bos=True, eos=True)]
        history = [BOS]
        for word, k in zip(sentence.split() + [EOS], kenlm_scores):
            assert ours.log10_prob(word, history) == pytest.approx(k, abs=1e-4), (sentence, word)
            history.append(word)
        assert ours.score_sentence(sentence) == pytest.approx(model.score(sentence), abs=1e-4)


def test_words_are_normalised_and_cmudict_gaps_reported(tmp_path):
    report = build_lm_from_sentences(
        ["Hello, World!", "HELLO world again.", "Zqxj's here."], tmp_path / "lm.arpa", order=2
    )
    lm = ArpaModel(report.path)
    assert set(lm.vocabulary) == {BOS, EOS, UNK, "hello", "world", "again", "zqxj's", "here"}
    assert report.missing_from_cmudict == ["zqxj's"]
    assert report.vocabulary_size == 8 and report.n_sentences == 3


def test_bad_input_is_named(tmp_path):
    with pytest.raises(ValueError, match="order"):
        build_arpa(["a b"], order=6, out_path=tmp_path / "x.arpa")
    with pytest.raises(ValueError, match="empty"):
        build_arpa(["", "?!"], order=2, out_path=tmp_path / "x.arpa")
    bad = tmp_path / "bad.arpa"
    bad.write_text("\\data\\\nngram 1=3\n\n\\1-grams:\n-1.0\t<unk>\n-0.5\ta\n\n\\end\\\n")
    with pytest.raises(ValueError, match=r"bad\.arpa.*declares 3 1-grams"):
        ArpaModel(bad)
    with pytest.raises(FileNotFoundError, match="missing.arpa"):
        ArpaModel(tmp_path / "missing.arpa")


@pytest.mark.slow
def test_build_lm_script_reads_train_sentences(tmp_path):
    from mode_ssm.data.writer import TrialRecord, write_trials

    for session, sentences in [("t15.2023.08.11", ["Hello there.", "How are you?"]), ("t15.2023.08.13", ["Fine, thanks."])]:
        write_trials(tmp_path / "data" / session / "data_train.hdf5",
                     [TrialRecord(np.zeros((40, 512), np.float32), session, 2, i, s, [1, 2, 40])
                      for i, s in enumerate(sentences)])
    script = Path(__file__).resolve().parents[1] / "scripts" / "build_lm.py"
    result = subprocess.run(
        [sys.executable, str(script), "data_root=data", "order=2", "output=lm/out.arpa"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "read 3 sentences" in result.stdout
    lm = ArpaModel(tmp_path / "lm" / "out.arpa")  # relative to where the command ran
    assert set(lm.vocabulary) == {BOS, EOS, UNK, "hello", "there", "how", "are", "you", "fine", "thanks"}
    missing = subprocess.run(
        [sys.executable, str(script), "data_root=nowhere"], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert missing.returncode != 0 and "nowhere is not a folder" in missing.stderr
