from __future__ import annotations

import sys

import pytest
import torch

from mode_ssm.decoding.lexicon_decoder import WordHypothesis
from mode_ssm.decoding.rescoring import CausalLMScorer, rescore_nbest

torch.set_num_threads(1)


def test_combined_score_reranks_nbest():
    # a fake LLM that likes "there" and dislikes "their"
    llm = {"over there": -2.0, "over their": -9.0, "overt here": -12.0}
    nbest = [
        WordHypothesis(("over", "their"), -10.0, -8.0, -3.0),
        WordHypothesis(("over", "there"), -11.0, -8.0, -4.0),
        ("overt here", -10.5),
    ]
    scorer = lambda sentences: [llm[s] for s in sentences]  # noqa: E731
    out = rescore_nbest(nbest, scorer, alpha=0.5, length_bonus=0.25)
    assert [h.sentence for h in out] == ["over there", "over their", "overt here"]
    assert out[0].score == pytest.approx(-11.0 + 0.5 * -2.0 + 0.25 * 2)
    assert out[1].score == pytest.approx(-10.0 + 0.5 * -9.0 + 0.25 * 2)
    # with alpha 0 the decoder's order stands
    assert rescore_nbest(nbest, scorer, alpha=0.0)[0].sentence == "over their"
    assert rescore_nbest([], scorer) == []
    with pytest.raises(ValueError, match="returned 1 scores for 3"):
        rescore_nbest(nbest, lambda s: [0.0])


def test_missing_transformers_gives_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "transformers", None)  # import now fails as if not installed
    with pytest.raises(ImportError, match="pip install transformers"):
        CausalLMScorer.from_pretrained(tmp_path)


def _manual_log_prob(model: torch.nn.Module, ids: list[int]) -> float:
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0]
    lp = torch.log_softmax(logits[:-1].float(), dim=-1)
    return float(lp[torch.arange(len(ids) - 1), torch.tensor(ids[1:])].sum())


def test_causal_lm_scores_match_unbatched_computation(tmp_path):
    transformers = pytest.importorskip("transformers")
    tokenizers = pytest.importorskip("tokenizers")
    torch.manual_seed(0)
    words = ["[UNK]", "<s>", "</s>", "the", "cat", "sat", "on", "mat", "dog", "ran"]
    config = transformers.GPT2Config(
        vocab_size=len(words), n_positions=32, n_embd=16, n_layer=2, n_head=2, bos_token_id=1, eos_token_id=2
    )
    model = transformers.GPT2LMHeadModel(config).eval()  # random weights: never downloaded
    vocab = {w: i for i, w in enumerate(words)}
    encode = lambda s: [vocab.get(w, 0) for w in s.split()]  # noqa: E731

    sentences = ["the cat sat on the mat", "dog ran", "the dog sat", "mat"]
    scorer = CausalLMScorer(model, encode, bos_token_id=1, eos_token_id=2, batch_size=3)
    expected = [_manual_log_prob(model, [1] + encode(s)) for s in sentences]
    assert scorer(sentences) == pytest.approx(expected, abs=1e-4)  # right padding changes nothing
    with_eos = CausalLMScorer(model, encode, bos_token_id=1, eos_token_id=2, score_eos=True)
    assert with_eos(sentences[:1]) == pytest.approx([_manual_log_prob(model, [1] + encode(sentences[0]) + [2])], abs=1e-4)
    no_bos = CausalLMScorer(model, encode)
    assert no_bos(["dog ran"]) == pytest.approx([_manual_log_prob(model, encode("dog ran"))], abs=1e-4)
    assert no_bos(["dog"]) == [0.0]  # one token and no context: nothing to score

    # the same model and a word-level tokenizer saved to disk load back offline
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    hf_tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", bos_token="<s>", eos_token="</s>"
    )
    hf_tokenizer.save_pretrained(tmp_path)
    model.save_pretrained(tmp_path)
    loaded = CausalLMScorer.from_pretrained(tmp_path)
    assert loaded(sentences) == pytest.approx(expected, abs=1e-4)

    best = rescore_nbest([(s, 0.0) for s in sentences], scorer, alpha=1.0)[0]
    assert best.sentence == sentences[max(range(4), key=lambda i: expected[i])]
    with pytest.raises(FileNotFoundError, match="no model folder"):
        CausalLMScorer.from_pretrained(tmp_path / "absent")
