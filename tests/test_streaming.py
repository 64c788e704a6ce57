"""The causal model and its stream: chunked == one offline forward, no future bin reaches a past output."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mode_ssm.data.augment import Augmenter, causal_smooth, gaussian_smooth
from mode_ssm.decoding.lexicon_decoder import WordDecoder, build_vocabulary
from mode_ssm.models.mode_ssm import ModeSSM, ModeSSMConfig
from mode_ssm.streaming import CausalStream, StreamingDecoder

LENGTHS = (37, 64, 101)


def causal_model(seed: int = 0, **overrides) -> ModeSSM:
    torch.manual_seed(seed)
    config = dict(n_days=2, n_channels=512, num_channels=512, causal=True, norm="running", bidirectional=False,
                  flow_bridge=False, d_model=32, n_layers=2, d_state=8, head_dim=16, chunk_size=16, mode_hidden=16,
                  predictor_dim=16, joiner_dim=16, dropout=0.0, input_dropout=0.0)
    config.update(overrides)
    model = ModeSSM(ModeSSMConfig(**config))
    with torch.no_grad():  # exercise every path a trained model has: FiLM, gates, learnt rate statistics
        model.mode_head.film.weight.normal_(0, 0.5)
        model.preprocessor.gate_logits.normal_(0, 0.5)
        model.mode_head.rate_norm.running_mean.copy_(torch.tensor([-1.5, 2.0]))
        model.mode_head.rate_norm.running_var.copy_(torch.tensor([0.3, 0.8]))
        for w in model.day_layers.weights:
            w.add_(0.02 * torch.randn_like(w))
    return model.eval()


def trials(seed: int = 1) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for n in LENGTHS:
        x = rng.normal(size=(n, 512)).astype(np.float32)
        x[:, 5] = 0.7  # a dead electrode: constant throughout
        x[: n // 2, 9] = -0.3  # one that only starts moving halfway
        out.append(x)
    return out


SMOOTHING = Augmenter({"smooth_std": 2.0, "causal": True})  # the input pipeline training's default gives it


def offline_log_probs(model: ModeSSM, xs: list[np.ndarray], days: list[int],
                      augmenter: Augmenter | None = None) -> list[torch.Tensor]:
    """One padded batch through the ordinary forward (after ``augmenter``'s evaluation pipeline)."""
    lengths = torch.tensor([len(x) for x in xs])
    batch = torch.zeros(len(xs), int(lengths.max()), 512)
    for i, x in enumerate(xs):
        batch[i, : len(x)] = torch.from_numpy(x)
    if augmenter is not None:
        batch, lengths = augmenter(batch, lengths, None, train=False)
    with torch.no_grad():
        out = model(batch, lengths, torch.tensor(days))
    log_probs = out["phoneme_logits"].float().log_softmax(-1)
    return [log_probs[i, : int(n)] for i, n in enumerate(out["out_lengths"])]


@pytest.mark.parametrize("chunk, augmenter", [(1, SMOOTHING), (3, None), (17, SMOOTHING)])
def test_chunked_stream_equals_one_offline_forward(chunk, augmenter):
    model, xs, days = causal_model(), trials(), [0, 1, 1]
    expected = offline_log_probs(model, xs, days, augmenter)
    stream = CausalStream(model, augmenter=augmenter)
    for x, day, want in zip(xs, days, expected):
        stream.reset(day)
        got = torch.cat([stream.push(x[i : i + chunk]) for i in range(0, len(x), chunk)])
        assert got.shape == want.shape == ((len(x) - 8) // 4 + 1, 41)
        assert float((got - want).abs().max()) < 1e-4
    assert stream.mode_probs is not None and abs(float(stream.mode_probs.sum()) - 1) < 1e-5


def test_no_future_bin_changes_a_past_output():
    model, x = causal_model(), trials()[2]
    base = offline_log_probs(model, [x], [0], SMOOTHING)[0]
    t = 61  # frames k read bins 4k .. 4k + 7: frames 0..13 end before bin 61, frame 14 reads it
    bumped = x.copy()
    bumped[t:] += np.random.default_rng(3).normal(size=bumped[t:].shape).astype(np.float32)
    after = offline_log_probs(model, [bumped], [0], SMOOTHING)[0]
    assert torch.equal(after[:14], base[:14])
    assert float((after[14:] - base[14:]).abs().max()) > 1e-3  # the change does reach later frames


def test_the_bidirectional_model_is_not_causal_and_cannot_stream():
    torch.manual_seed(0)
    offline = ModeSSM(ModeSSMConfig(n_days=1, d_model=32, n_layers=1, head_dim=16, chunk_size=16, mode_hidden=16,
                                    predictor_dim=16, joiner_dim=16)).eval()
    x = trials()[1]
    bumped = x.copy()
    bumped[-4:] += 1.0
    a, b = offline_log_probs(offline, [x], [0])[0], offline_log_probs(offline, [bumped], [0])[0]
    assert float((a[0] - b[0]).abs().max()) > 1e-4  # the last bins move the first frame
    with pytest.raises(ValueError, match="needs a causal model"):
        CausalStream(offline)


@pytest.mark.parametrize("option, value", [("bidirectional", True), ("norm", "trial"), ("flow_bridge", True)])
def test_a_causal_model_refuses_what_reads_the_future(option, value):
    with pytest.raises(ValueError, match=option):
        causal_model(**{option: value})


def test_streamed_words_equal_the_offline_search():
    model, xs = causal_model(), trials()
    vocabulary = build_vocabulary(["the cat sat on a mat", "we want to go home now", "i am fine thank you"])
    decoder = WordDecoder(vocabulary.lexicon(), beam=16, nbest=3)
    stream = StreamingDecoder(model, decoder, day_index=0, augmenter=SMOOTHING)
    for x, log_probs in zip(xs, offline_log_probs(model, xs, [0, 0, 0], SMOOTHING)):
        offline = decoder.decode(log_probs)
        stream.start(0)
        partials = [stream.push(x[i : i + 5]) for i in range(0, len(x), 5)]
        final = stream.finish()
        assert [h.words for h in final.hypotheses] == [h.words for h in offline]
        assert final.words == offline[0].words and len(final.words) > 0
        assert partials[-1].frames == final.frames == len(log_probs)


def test_causal_smoothing_reads_the_past_only_and_carries_its_history():
    x = torch.from_numpy(np.random.default_rng(4).normal(size=(1, 40, 3)).astype(np.float32))
    lengths = torch.tensor([40])
    whole, _ = causal_smooth(x, lengths, 2.0)
    first, history = causal_smooth(x[:, :13], torch.tensor([13]), 2.0)
    rest, _ = causal_smooth(x[:, 13:], torch.tensor([27]), 2.0, history=history)
    torch.testing.assert_close(torch.cat([first, rest], 1), whole)
    bumped = x.clone()
    bumped[:, 20] += 5.0
    after, _ = causal_smooth(bumped, lengths, 2.0)
    assert torch.equal(after[:, :20], whole[:, :20]) and float((after[:, 20] - whole[:, 20]).abs().min()) > 0.5
    centred = gaussian_smooth(bumped, lengths, 2.0)  # the offline smoothing spreads the bump backwards too
    assert float((centred[:, 19] - gaussian_smooth(x, lengths, 2.0)[:, 19]).abs().min()) > 0.1


def test_streamed_rnnt_greedy_search_equals_the_offline_search():
    from mode_ssm.decoding.rnnt_search import rnnt_greedy_search

    model, xs = causal_model(seed=2), trials()
    lengths = torch.tensor([len(x) for x in xs])
    batch = torch.zeros(len(xs), int(lengths.max()), 512)
    for i, x in enumerate(xs):
        batch[i, : len(x)] = torch.from_numpy(x)
    with torch.no_grad():
        out = model(batch, lengths, torch.zeros(len(xs), dtype=torch.long))
    offline = rnnt_greedy_search(out["head_features"].float(), out["out_lengths"], model.rnnt.predictor,
                                 model.rnnt.joiner, max_symbols_per_frame=2)
    stream = StreamingDecoder(model, None, transducer=True, max_symbols_per_frame=2)
    for x, want in zip(xs, offline):
        stream.start(0)
        for i in range(0, len(x), 7):
            partial = stream.push(x[i : i + 7])
        assert stream.finish().rnnt_phonemes == partial.rnnt_phonemes == list(want.ids)
    assert sum(len(h.ids) for h in offline) > 10  # an untrained joiner emits labels too: the test compares something
