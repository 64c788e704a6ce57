"""The text LM trainer (scripts/train_text_lm.py) and LLM n-best rescoring as evaluate / make_submission wire it."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import run_script
from mode_ssm.data.writer import TrialRecord, write_trials
from mode_ssm.decoding.lexicon_decoder import WordDecoder, WordHypothesis, build_vocabulary
from mode_ssm.decoding.ngram import build_arpa
from mode_ssm.decoding.rescoring import CausalLMScorer, RescoringDecoder
from mode_ssm.decoding.text_lm import TextLMSettings, lm_text, split_heldout, train_text_lm
from mode_ssm.evaluation.pipeline import rescoring_decoder
from test_lexicon_decoder import LM_CORPUS, synthetic_log_probs

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

torch.set_num_threads(1)

TINY = dict(n_layer=2, n_head=2, n_embd=32, context=16, dropout=0.0, batch_size=8, lr=0.01, warmup_steps=5)
TINY_ARGS = [f"{k}={v}" for k, v in TINY.items()]
VAL_ONLY = "zebra quietly jumped"  # in data_val.hdf5 only: must never reach the text LM


def manual_log_prob(model, ids: list[int]) -> float:
    """ln P(ids[1:] | ids[0]) from one unbatched forward pass."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].float()
    lp = torch.log_softmax(logits[:-1], dim=-1)
    return float(lp[torch.arange(len(ids) - 1), torch.tensor(ids[1:])].sum())


def manual_perplexity(model, tokenizer, sentences) -> float:
    nll, n = 0.0, 0
    for s in sentences:
        ids = [tokenizer.bos_token_id, *tokenizer(s, add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]
        nll -= manual_log_prob(model, ids)
        n += len(ids) - 1
    return math.exp(nll / n)


def write_root(root: Path) -> list[str]:
    """Two sessions whose train files hold LM_CORPUS (and a val file with VAL_ONLY); returns the train sentences."""
    rng = np.random.default_rng(0)
    train = []
    for k, session in enumerate(["t15.2023.08.13", "t15.2023.08.18"]):
        sentences = LM_CORPUS[k::2]
        train += sentences
        trials = [TrialRecord(rng.standard_normal((30, 512)).astype(np.float32), session, 1, i, s, [5, 6, 7])
                  for i, s in enumerate(sentences)]
        write_trials(root / session / "data_train.hdf5", trials)
        write_trials(root / session / "data_val.hdf5",
                     [TrialRecord(np.zeros((30, 512), np.float32), session, 2, 0, VAL_ONLY, [5, 6])])
    return train


# --------------------------------------------------------------------------- training


@pytest.mark.slow  # runs the script
def test_script_trains_on_train_text_only_and_writes_a_folder_transformers_loads(tmp_path):
    root, out = tmp_path / "root", tmp_path / "lm" / "text_lm"
    train = write_root(root)
    proc = run_script("train_text_lm.py", [f"data.data_root={root}", f"output={out}", "tokenizer=word", "vocab_size=0",
                                           "steps=60", "heldout_fraction=0.2", *TINY_ARGS,
                                           f"hydra.run.dir={tmp_path / 'hydra'}"], tmp_path)
    assert f"read {len(train)} sentences from {root}" in proc.stdout
    assert "perplexity held-out (2 train sentences kept aside)" in proc.stdout

    tokenizer = transformers.AutoTokenizer.from_pretrained(out, local_files_only=True)
    model = transformers.AutoModelForCausalLM.from_pretrained(out, local_files_only=True).eval()
    assert isinstance(model, transformers.GPT2LMHeadModel) and model.config.n_positions == 16
    vocab = tokenizer.get_vocab()
    assert {"the", "mat", "their", "there"} <= set(vocab)
    assert not {"zebra", "quietly", "jumped"} & set(vocab)  # val text never entered

    fit, held = split_heldout(lm_text(train), 0.2, seed=0)
    assert len(held) == 2 and not set(held) & set(fit)
    record = json.loads((out / "text_lm.json").read_text())
    assert (record["n_train"], record["n_heldout"]) == (len(fit), 2)
    trained = manual_perplexity(model, tokenizer, fit)
    assert record["perplexity"]["train"]["per_token"] == pytest.approx(trained, rel=1e-3)
    torch.manual_seed(1)
    untrained = manual_perplexity(transformers.GPT2LMHeadModel(model.config).eval(), tokenizer, fit)
    assert untrained > 0.5 * len(vocab)  # a random model is about uniform
    assert trained < untrained / 5


@pytest.mark.slow  # runs the script
def test_script_names_a_missing_data_root(tmp_path):
    proc = run_script("train_text_lm.py", [f"data.data_root={tmp_path / 'absent'}", f"output={tmp_path / 'o'}",
                                           f"hydra.run.dir={tmp_path / 'hydra'}"], tmp_path, expect_rc=1)
    assert f"data root {tmp_path / 'absent'} is not a folder" in proc.stderr
    assert not (tmp_path / "o").exists()


def test_bpe_model_learns_and_refuses_to_overwrite_a_foreign_folder(tmp_path):
    settings = TextLMSettings(tokenizer="bpe", vocab_size=300, steps=40, heldout_fraction=0.0, **TINY)
    report = train_text_lm(LM_CORPUS, tmp_path / "lm", settings)
    assert report.heldout is None and report.n_train == len(LM_CORPUS)
    assert report.train.per_word < report.init_train.per_word / 5
    tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "lm", local_files_only=True)
    assert tokenizer("zyzzyva", add_special_tokens=False)["input_ids"]  # byte-level: any word encodes
    again = train_text_lm(LM_CORPUS[:3], tmp_path / "lm", TextLMSettings(**{**vars(settings), "steps": 1}))
    assert again.n_train == 3  # its own earlier folder is replaced
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="did not write"):
        train_text_lm(LM_CORPUS, foreign, settings)
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_heldout_split_keeps_copies_together_and_settings_are_checked():
    sentences = ["a b", "c d", "a b", "e f", "g h", "c d"] * 2
    train, held = split_heldout(sentences, 0.5, seed=3)
    assert set(train).isdisjoint(held) and sorted(train + held) == sorted(sentences)
    assert len(set(held)) == 2 and split_heldout(sentences, 0.5, seed=3) == (train, held)
    assert split_heldout(sentences, 0.0) == (sentences, [])
    assert split_heldout(["x"] * 4, 0.5) == (["x"] * 4, [])
    with pytest.raises(ValueError, match="n_embd=30 is not a multiple of n_head=4"):
        TextLMSettings(n_embd=30)
    with pytest.raises(ValueError, match="vocab_size=100: a byte-level BPE needs at least 260"):
        TextLMSettings(vocab_size=100)
    with pytest.raises(ValueError, match="steps='many': must be an integer"):
        TextLMSettings.from_mapping({"steps": "many"})


# --------------------------------------------------------------------------- rescoring


@pytest.fixture(scope="module")
def random_lm(tmp_path_factory):
    """A tiny random GPT-2 and a word-level tokenizer, saved as a Hugging Face folder."""
    words = ["<pad>", "<unk>", "<s>", "</s>", "we", "went", "over", "there", "their", "the", "house", "home"]
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=len(words), n_positions=8, n_embd=16, n_layer=2, n_head=2,
                                     bos_token_id=2, eos_token_id=3, pad_token_id=0)
    model = transformers.GPT2LMHeadModel(config).eval()
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab={w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
    hf = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>",
                                              eos_token="</s>", pad_token="<pad>")
    path = tmp_path_factory.mktemp("random_lm")
    model.save_pretrained(path)
    hf.save_pretrained(path)
    return path, model, {w: i for i, w in enumerate(words)}


class FixedNbest:
    """A stand-in word decoder whose n-best is given."""

    def __init__(self, hyps):
        self.hyps, self.nbest, self.lexicon = hyps, 1, "lexicon"

    def decode(self, log_probs):
        return list(self.hyps[: self.nbest])


def test_rescoring_reranks_a_hand_made_nbest_exactly_as_the_scores_say(random_lm, tmp_path):
    path, model, vocab = random_lm
    sentences = ["we went over there", "we went over their", "we went home", "the house"]
    lm = {s: manual_log_prob(model, [2, *(vocab[w] for w in s.split()), 3]) for s in sentences}
    assert len(set(lm.values())) == len(lm)
    # the decoder ranks them in the LM's reverse order, with margins the LM weight overturns
    by_lm = sorted(sentences, key=lm.get)
    hyps = [WordHypothesis(tuple(s.split()), -10.0 - 0.01 * i, -9.0, -1.0) for i, s in enumerate(by_lm)]
    alpha, bonus = 2.0, 0.3
    base = FixedNbest(hyps)
    decoder = rescoring_decoder(base, {"model": str(path), "weight": alpha, "length_bonus": bonus, "nbest": 3,
                                       "score_eos": True, "batch_size": 2}, tmp_path)
    assert isinstance(decoder, RescoringDecoder) and base.nbest == 3 and decoder.lexicon == "lexicon"
    expected = {h.sentence: h.score + alpha * lm[h.sentence] + bonus * len(h.words) for h in hyps[:3]}
    ranked = decoder.decode(np.zeros((5, 41), np.float32))
    assert [h.sentence for h in ranked] == sorted(expected, key=expected.get, reverse=True)
    assert [h.sentence for h in ranked] != [h.sentence for h in hyps[:3]]  # the ranking did change
    for h in ranked:
        assert h.score == pytest.approx(expected[h.sentence], abs=1e-4)
        assert h.llm_log_prob == pytest.approx(lm[h.sentence], abs=1e-4)
    assert decoder.decode_batch(np.zeros((2, 5, 41), np.float32), [5, 3]) == [ranked[0].sentence] * 2
    # weight 0: the decoder's order stands
    plain = rescoring_decoder(FixedNbest(hyps), {"model": str(path), "weight": 0.0, "nbest": 4}, tmp_path)
    assert [h.sentence for h in plain.decode(None)] == by_lm


def test_default_leaves_the_word_decoder_untouched_and_bad_paths_are_named(tmp_path, random_lm):
    vocab = build_vocabulary(LM_CORPUS)
    arpa = tmp_path / "lm.arpa"
    build_arpa(LM_CORPUS, order=3, out_path=arpa)
    decoder = WordDecoder(vocab.lexicon(), arpa, lm_weight=0.5)
    x = np.stack([synthetic_log_probs(vocab.lexicon().sentence_to_ids(s), np.random.default_rng(i))[:40]
                  for i, s in enumerate(["the cat sat on the mat", "we went over there"])])
    before = decoder.decode_batch(x, [40, 40])
    for rescore in (None, {}, {"model": None, "weight": 3.0, "nbest": 7}):
        assert rescoring_decoder(decoder, rescore, tmp_path) is decoder
    assert decoder.nbest == 1 and decoder.decode_batch(x, [40, 40]) == before
    assert rescoring_decoder(None, {"model": None}, tmp_path, decoder_name="ctc_greedy") is None

    with pytest.raises(FileNotFoundError, match=r"rescore.model=nowhere/lm: no model folder at .*nowhere/lm"):
        rescoring_decoder(decoder, {"model": "nowhere/lm"}, tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"rescore.model=empty: .*empty is not a Hugging Face model folder"):
        rescoring_decoder(decoder, {"model": "empty"}, tmp_path)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"rescore.model=broken: .*broken: not a causal LM"):
        rescoring_decoder(decoder, {"model": "broken"}, tmp_path)
    with pytest.raises(ValueError, match="needs decoder=ctc_lm, not decoder=ctc_greedy"):
        rescoring_decoder(None, {"model": str(random_lm[0])}, tmp_path, decoder_name="ctc_greedy")


def test_a_trained_text_lm_overturns_the_ngram_on_homophones(tmp_path):
    """End to end: flashlight's n-best, an n-gram that prefers "there", a text LM trained to prefer "their"."""
    vocab = build_vocabulary(LM_CORPUS + ["we went over their house"])
    arpa = tmp_path / "lm.arpa"
    build_arpa(LM_CORPUS, order=3, out_path=arpa)
    log_probs = synthetic_log_probs(vocab.lexicon().sentence_to_ids("we went over there"), np.random.default_rng(4))
    decoder = WordDecoder(vocab.lexicon(), arpa, lm_weight=0.5)
    assert decoder.decode_batch(log_probs[None]) == ["we went over there"]
    train_text_lm(["we went over their house", "we went over their car"] * 4, tmp_path / "text_lm",
                  TextLMSettings(tokenizer="word", vocab_size=0, steps=40, heldout_fraction=0.0, **TINY))
    rescored = rescoring_decoder(decoder, {"model": "text_lm", "weight": 1.0, "nbest": 10}, tmp_path)
    ranked = rescored.decode(log_probs)
    assert {"we went over there", "we went over their"} <= {h.sentence for h in ranked}
    assert rescored.decode_batch(log_probs[None]) == ["we went over their"]
    assert ranked[0].sentence == "we went over their"


def test_sentences_longer_than_the_model_window_are_scored_in_strides(random_lm):
    _, model, vocab = random_lm
    scorer = CausalLMScorer(model, lambda s: [vocab[w] for w in s.split()], bos_token_id=2, eos_token_id=3,
                            score_eos=True)
    assert scorer.max_length == 8
    words = "we went over there the house home their we went over".split()
    ids = [2, *(vocab[w] for w in words), 3]  # 13 tokens, window 8: contexts start at 0, then 4, then 8
    expected = 0.0
    for j in range(1, len(ids)):  # token j given the window's tokens before it, one forward pass each
        start = 0 if j < 8 else 4 * ((j - 8) // 4 + 1)
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids[start:j]])).logits[0, -1].float()
        expected += float(torch.log_softmax(logits, -1)[ids[j]])
    short = "we went home"
    got = scorer([" ".join(words), short])
    assert got[0] == pytest.approx(expected, abs=1e-4)
    assert got[1] == pytest.approx(manual_log_prob(model, [2, vocab["we"], vocab["went"], vocab["home"], 3]), abs=1e-4)
