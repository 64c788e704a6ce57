"""Test-time adaptation: whitening statistics, the entropy objective, what adapts and that it is undone."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mode_ssm.models.build import build_model
from mode_ssm.evaluation.tta import (
    FeatureWhitener, TTAConfig, adaptable_parameters, adapted_to_session, ctc_entropy, tta_settings,
    whiten_batches,
)

TINY_MODEL = {"name": "mode_ssm", "d_model": 16, "n_layers": 1, "predictor_dim": 8, "joiner_dim": 8,
              "flow_hidden": 8, "mode_hidden": 8, "head_dim": 8, "chunk_size": 8, "num_channels": 512}


def test_whitener_with_equal_weights_pools_two_trials_exactly():
    rng = np.random.default_rng(0)
    a, b = rng.normal(1.0, 2.0, (30, 512)), rng.normal(-3.0, 0.5, (30, 512))
    features = torch.zeros(2, 40, 512, dtype=torch.float64)
    features[0, :30], features[1, :30] = torch.from_numpy(a), torch.from_numpy(b)
    whitener = FeatureWhitener(momentum=0.5, eps=0.0)
    whitener.update(features, torch.tensor([30, 30]))  # the padding (rows 30..39) must not count
    both = np.concatenate([a, b])
    np.testing.assert_allclose(whitener.mean.numpy(), both.mean(0), atol=1e-12)
    np.testing.assert_allclose(whitener.var.numpy(), both.var(0), atol=1e-12)
    assert whitener.trials == 2


def test_whitener_follows_a_drifting_session_and_keeps_padding_zero():
    whitener = FeatureWhitener(momentum=0.9, eps=1e-2)
    lengths = torch.tensor([20, 12])
    x = torch.zeros(2, 20, 512)
    x[0, :20] = 5.0 + torch.arange(20.0)[:, None]  # mean 14.5, var 33.25
    x[1, :12] = 7.0
    whitener.update(x[:1], lengths[:1])
    assert whitener.mean[0].item() == pytest.approx(14.5) and whitener.var[0].item() == pytest.approx(33.25)
    whitener.update(x[1:], lengths[1:])
    assert whitener.mean[0].item() == pytest.approx(0.9 * 14.5 + 0.1 * 7.0)
    assert whitener.var[0].item() == pytest.approx(0.9 * 33.25 + 0.1 * 0.0 + 0.09 * 7.5**2)
    out = whitener(x, lengths)
    expected = (7.0 - whitener.mean[0].item()) / math.sqrt(whitener.var[0].item() + 1e-2)
    assert out[1, 0, 0].item() == pytest.approx(expected, rel=1e-5)
    assert out[1, 12:].abs().max().item() == 0.0


def test_ctc_entropy_counts_only_valid_non_blank_frames():
    logits = torch.full((2, 3, 4), 0.0)
    logits[0, 0] = torch.tensor([0.0, 0.0, 0.0, 0.0])  # uniform: argmax is blank (index 0) -> skipped
    logits[0, 1] = torch.tensor([0.0, 5.0, 5.0, 0.0])  # non-blank argmax
    logits[0, 2] = torch.tensor([0.0, 9.0, 0.0, 0.0])  # padding (length 2): never counted
    logits[1, 0] = torch.tensor([0.0, 0.0, 3.0, 0.0])
    lengths = torch.tensor([2, 1])

    def entropy(row):
        p = torch.softmax(row, -1)
        return float(-(p * p.log()).sum())

    with_blank = ctc_entropy(logits, lengths, skip_blank_frames=False)
    assert with_blank.item() == pytest.approx((math.log(4) + entropy(logits[0, 1]) + entropy(logits[1, 0])) / 3)
    no_blank = ctc_entropy(logits, lengths, skip_blank_frames=True)
    assert no_blank.item() == pytest.approx((entropy(logits[0, 1]) + entropy(logits[1, 0])) / 2)
    assert ctc_entropy(logits, lengths, temperature=1e6, skip_blank_frames=False).item() == pytest.approx(math.log(4))
    assert ctc_entropy(torch.zeros(1, 2, 4), torch.tensor([2])) is None  # all blank: nothing to adapt on
    # information maximisation: minus the entropy of the kept frames' mean non-blank distribution
    mean_non_blank = (torch.softmax(logits[0, 1, 1:], -1) + torch.softmax(logits[1, 0, 1:], -1)) / 2
    h_mean = float(-(mean_non_blank * mean_non_blank.log()).sum())
    diverse = ctc_entropy(logits, lengths, diversity=0.5)
    assert diverse.item() == pytest.approx(no_blank.item() - 0.5 * h_mean)


def test_config_rejects_unknown_options():
    assert TTAConfig.from_mapping({"params": ["day_bias", "norms"]}).params == ("day_bias", "norms")
    with pytest.raises(ValueError, match="unknown tta option"):
        TTAConfig.from_mapping({"step": 3})
    with pytest.raises(ValueError, match="encoder"):
        TTAConfig.from_mapping({"params": ["encoder"]})
    with pytest.raises(ValueError, match="ema_momentum"):
        TTAConfig.from_mapping({"ema_momentum": 1.0})
    with pytest.raises(ValueError, match="tta.sessions"):
        TTAConfig.from_mapping({"sessions": "seen"})


def test_tta_settings_layer_the_file_defaults_and_overrides(tmp_path):
    path = tmp_path / "tta.yaml"
    path.write_text("enabled: false\nsteps: 20\nlr: 0.001\nparams: [day_layer]\n")
    settings = tta_settings(path, ["lr=0.01", "params=[day_bias]"], {"enabled": True, "lr": 0.5, "steps": 0})
    assert settings == {"enabled": True, "steps": 0, "lr": 0.01, "params": ["day_bias"]}
    assert TTAConfig.from_mapping(settings).params == ("day_bias",)
    with pytest.raises(ValueError, match="not key=value"):
        tta_settings(path, ["lr"])
    (tmp_path / "other.yaml").write_text("- a list\n")
    with pytest.raises(ValueError, match="not a tta settings file"):
        tta_settings(tmp_path / "other.yaml")


def _session(seed: int, n: int = 3, steps: int = 40):
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(n, steps, 512, generator=g) * 1.5 + 0.5
    return {"features": features, "feature_lengths": torch.tensor([steps, steps - 8, steps - 3][:n]),
            "day_index": torch.full((n,), 1)}


@pytest.mark.parametrize("diversity", [0.0, 1.0])
def test_adaptation_changes_only_the_chosen_day_layer_and_is_undone(diversity):
    torch.manual_seed(0)
    model = build_model(TINY_MODEL, n_days=3, n_channels=512).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batch = _session(1)
    cfg = TTAConfig(enabled=True, whiten=True, steps=6, lr=0.05, params=("day_layer",), skip_blank_frames=False,
                    diversity=diversity)
    with adapted_to_session(model, lambda: [batch], whiten_batches, 1, cfg) as (prepare, report):
        inside = model.state_dict()
        changed = {k for k in before if not torch.equal(before[k], inside[k])}
        decoded = list(prepare([batch]))
    assert changed == {"day_layers.weights.1", "day_layers.biases.1"}
    assert report["steps"] == 6 and report["n_parameters"] == 512 * 512 + 512
    assert report["entropy_after"] < report["entropy_before"]
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # restored bit for bit
    assert all(p.requires_grad for p in model.parameters())  # flags restored too
    whitened = decoded[0]["features"]
    valid = whitened[0, :40]
    assert valid.mean().abs().item() < 0.05 and abs(valid.std().item() - 1.0) < 0.05


def test_parameter_groups():
    model = build_model(TINY_MODEL, n_days=2, n_channels=512)
    names = {id(p): n for n, p in model.named_parameters()}
    pick = lambda groups: sorted(names[id(p)] for p in adaptable_parameters(model, groups, 0))  # noqa: E731
    assert pick(["day_bias"]) == ["day_layers.biases.0"]
    assert pick(["gates"]) == ["preprocessor.gate_logits"]
    norms = pick(["norms"])
    assert "preprocessor.out_norm.weight" in norms and "encoder.final_norm.weight" in norms
    assert not any(n.startswith(("encoder.layers.0.forward_block.in_proj", "ctc_head", "day_layers")) for n in norms)


def test_decode_trials_with_tta_leaves_the_model_as_loaded(tiny_data_root):
    from mode_ssm.data.t15 import DayIndex
    from mode_ssm.metrics import summarize
    from mode_ssm.evaluation.pipeline import decode_trials, open_split
    from mode_ssm.runtime.loading import LoadedModel

    torch.manual_seed(0)
    day_index = DayIndex(("t15.2023.08.13", "t15.2023.08.18"))  # the later two sessions are unseen
    model = build_model(TINY_MODEL, n_days=2, n_channels=512).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loaded = LoadedModel(model, day_index, {"augmentation": {"smooth_std": 2.0}, "preprocessor": {"num_channels": 512}},
                         tiny_data_root / "none.pt", tiny_data_root, torch.device("cpu"))
    data = open_split(loaded, tiny_data_root, "val")
    plain = decode_trials(loaded, data, batch_size=4)
    tta = decode_trials(loaded, data, batch_size=4, tta=TTAConfig(enabled=True, sessions="all", steps=2, lr=0.01))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert [r["source"] for r in tta.rows] == [m["source"] for m in data.trial_metadata()]  # file order
    assert set(tta.tta) == set(data.sessions) and all(r["steps"] == 2 for r in tta.tta.values())
    # by default only the sessions decoded with a borrowed day layer adapt; the others decode as without TTA
    unseen_only = decode_trials(loaded, data, batch_size=4, tta=TTAConfig(enabled=True, steps=2, lr=0.01))
    assert set(unseen_only.tta) == {"t15.2023.08.20", "t15.2023.08.25"}
    seen_rows = lambda res: [r for r in res.rows if r["session"] in day_index.sessions]  # noqa: E731
    assert [r["ctc_loss"] for r in seen_rows(unseen_only)] == [r["ctc_loss"] for r in seen_rows(plain)]
    assert {s for s, d in tta.days.items() if not d.exact} == {"t15.2023.08.20", "t15.2023.08.25"}
    assert tta.days["t15.2023.08.25"].day == 1  # nearest earlier known session
    again = decode_trials(loaded, data, batch_size=4)
    assert summarize(again.rows)["per"] == summarize(plain.rows)["per"]  # nothing leaked into later decodes


class FixedTranscripts:
    """Stands in for the LM word decoder: the same sentences for every batch, and a two-word lexicon."""

    def __init__(self, sentences):
        from mode_ssm.lexicon import Lexicon

        self.sentences = sentences
        self.lexicon = Lexicon.from_mapping({"aa": [[1, 2]], "bb": [[3]]})

    def decode_batch(self, log_probs, lengths):
        return list(self.sentences[: log_probs.shape[0]])


class ScriptedModel(torch.nn.Module):
    """CTC logits spelling out given phoneme sequences (one per trial, padded with blanks)."""

    def __init__(self, sequences, frames=12):
        super().__init__()
        self.logits = torch.full((len(sequences), frames, 41), -10.0)
        for b, seq in enumerate(sequences):
            self.logits[b, :, 0] = 0.0
            for t, c in enumerate(seq):
                self.logits[b, 2 * t, c] = 5.0

    def forward(self, features, lengths, day_index):
        return {"phoneme_logits": self.logits, "out_lengths": torch.full((len(self.logits),), self.logits.shape[1])}



def test_decode_trials_cross_fits_self_training_and_adapts_on_extra_trials(tiny_data_root):
    from mode_ssm.data.t15 import DayIndex
    from mode_ssm.evaluation.pipeline import decode_trials, open_split
    from mode_ssm.runtime.loading import LoadedModel

    torch.manual_seed(0)
    model = build_model(TINY_MODEL, n_days=1, n_channels=512).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loaded = LoadedModel(model, DayIndex(("t15.2023.08.13",)), {"preprocessor": {"num_channels": 512}},
                         tiny_data_root / "none.pt", tiny_data_root, torch.device("cpu"))
    val, train = open_split(loaded, tiny_data_root, "val"), open_split(loaded, tiny_data_root, "train")
    per_session = lambda split: {s: sum(m["session"] == s for m in split.trial_metadata()) for s in split.sessions}  # noqa: E731
    n_val, n_train = per_session(val), per_session(train)
    cfg = TTAConfig(enabled=True, sessions="all", whiten=False, steps=0, self_train_rounds=1, self_train_steps=2,
                    max_disagreement=100.0, self_train_folds=2)
    res = decode_trials(loaded, val, word_decoder=FixedTranscripts(["aa bb"] * 4), tta=cfg, batch_size=4,
                        adapt_also=train)
    assert [r["source"] for r in res.rows] == [m["source"] for m in val.trial_metadata()]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    for session, n in n_val.items():
        folds = res.tta[session]["folds"] if n > 1 else [res.tta[session]]
        assert [f["decoded"] for f in folds] == ([(n + 1) // 2, n // 2] if n > 1 else [1])
        for f in folds:  # each fold adapted on the other fold(s) and the session's train trials, never itself
            others = n - f["decoded"] if n > 1 else n
            assert f["adapted_on"] == others + n_train.get(session, 0)
            assert f["self_training"][0]["trials"] == f["adapted_on"]

def test_lm_pseudo_labels_keep_transcripts_the_network_nearly_agrees_with():
    from mode_ssm.evaluation.tta import lm_pseudo_labels

    # "aa bb" is [1, 2, 40, 3, 40] with the boundary (40) after each word
    greedy = [[1, 2, 40, 3, 40], [1, 2, 40, 5, 40], [7, 8, 9, 10, 11], [1, 2, 40]]
    sentences = ["aa bb", "aa bb", "aa bb", "aa zz"]  # zz has no pronunciation
    batch = {"features": torch.arange(4.0)[:, None, None].expand(4, 12, 512), "feature_lengths": torch.full((4,), 12),
             "day_index": torch.zeros(4, dtype=torch.long)}
    kept, seen = lm_pseudo_labels(ScriptedModel(greedy), [batch], FixedTranscripts(sentences), max_disagreement=0.2)
    assert seen == 4 and len(kept) == 1
    # trial 0 agrees exactly, trial 1 by 1 edit in 5 (0.2), trial 2 by 5 in 5, trial 3 is out of vocabulary
    assert kept[0]["features"][:, 0, 0].tolist() == [0.0, 1.0]
    assert kept[0]["targets"].tolist() == [[1, 2, 40, 3, 40]] * 2 and kept[0]["target_lengths"].tolist() == [5, 5]
    kept, _ = lm_pseudo_labels(ScriptedModel(greedy), [batch], FixedTranscripts(sentences), max_disagreement=0.0)
    assert kept[0]["features"][:, 0, 0].tolist() == [0.0]


def test_self_training_fits_the_transcripts_on_the_day_layer_only_and_is_undone():
    torch.manual_seed(0)
    model = build_model(TINY_MODEL, n_days=3, n_channels=512).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batch = _session(2)
    cfg = TTAConfig(enabled=True, whiten=False, steps=0, self_train_rounds=2, self_train_steps=15, self_train_lr=0.01,
                    max_disagreement=100.0)
    transcripts = FixedTranscripts(["aa bb", "bb aa", "aa"])
    with adapted_to_session(model, lambda: [batch], whiten_batches, 1, cfg, transcripts) as (_, report):
        changed = {k for k, v in model.state_dict().items() if not torch.equal(before[k], v)}
    assert changed == {"day_layers.weights.1", "day_layers.biases.1"}
    rounds = report["self_training"]
    assert [r["kept"] for r in rounds] == [3, 3] and rounds[0]["trials"] == 3
    assert rounds[1]["loss_last"] < 0.7 * rounds[0]["loss_first"]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="word decoder"):
        with adapted_to_session(model, lambda: [batch], whiten_batches, 1, cfg):
            pass
