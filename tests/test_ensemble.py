"""Ensembles: members' CTC log-probabilities averaged per frame, in evaluate as on a batch."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from helpers import run_script
from mode_ssm.models.mode_ssm import ModeSSM, ModeSSMConfig
from mode_ssm.runtime.ensemble import EnsembleModel, load_checkpoints


def member(seed: int) -> ModeSSM:
    torch.manual_seed(seed)
    return ModeSSM(ModeSSMConfig(n_days=2, d_model=32, n_layers=1, head_dim=16, chunk_size=16, mode_hidden=16,
                                 predictor_dim=16, joiner_dim=16)).eval()


def batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(3, 90, 512, generator=g), torch.tensor([90, 61, 33]), torch.tensor([0, 1, 1])


def test_an_ensemble_of_two_different_members_is_the_average_of_their_log_probabilities():
    a, b = member(0), member(1)
    x, lengths, days = batch()
    with torch.no_grad():
        la = a(x, lengths, days)["phoneme_logits"].log_softmax(-1)
        lb = b(x, lengths, days)["phoneme_logits"].log_softmax(-1)
        out = EnsembleModel([a, b])(x, lengths, days)
    assert float((la - lb).abs().max()) > 0.1  # the members do differ
    torch.testing.assert_close(out["phoneme_logits"], (la + lb) / 2)
    assert torch.equal(out["out_lengths"], a(x, lengths, days)["out_lengths"])
    with torch.no_grad():
        pa = a(x, lengths, days)["mode_logits"].softmax(-1)
        pb = b(x, lengths, days)["mode_logits"].softmax(-1)
    torch.testing.assert_close(out["mode_probs"], (pa + pb) / 2)


def test_a_member_without_a_mode_signal_does_not_vote_on_the_mode():
    a, b = member(0), member(1)
    b.mode_head.mode_signal.fill_(False)
    x, lengths, days = batch()
    with torch.no_grad():
        out = EnsembleModel([a, b])(x, lengths, days)
        alone = a(x, lengths, days)["mode_logits"].softmax(-1)
    torch.testing.assert_close(out["mode_probs"], alone)
    a.mode_head.mode_signal.fill_(False)
    with torch.no_grad():
        assert "mode_logits" not in EnsembleModel([a, b])(x, lengths, days)


@pytest.mark.slow
def test_evaluate_with_two_copies_of_a_checkpoint_equals_the_checkpoint_alone(tmp_path, tiny_data_root, tiny_checkpoint):
    common = ["split=val", f"data.data_root={tiny_data_root}"]
    run_script("evaluate.py", [f"checkpoint={tiny_checkpoint}", *common, "output_dir=one"], tmp_path)
    proc = run_script("evaluate.py", [f"checkpoint=[{tiny_checkpoint},{tiny_checkpoint}]", *common, "output_dir=two"],
                      tmp_path)
    read = lambda d: list(csv.DictReader(open(tmp_path / d / "predictions.csv", newline="")))  # noqa: E731
    one, two = read("one"), read("two")
    assert [r["predicted_phonemes"] for r in one] == [r["predicted_phonemes"] for r in two]
    assert [r["predicted_sentence"] for r in one] == [r["predicted_sentence"] for r in two]
    m1 = json.loads((tmp_path / "one" / "metrics.json").read_text())["metrics"]
    m2 = json.loads((tmp_path / "two" / "metrics.json").read_text())["metrics"]
    assert m1["per"] == pytest.approx(m2["per"]) and m1["loss"] == pytest.approx(m2["loss"], rel=1e-5)
    assert "ensemble of 2" in (tmp_path / "two" / "summary.md").read_text()


def test_members_that_cannot_be_averaged_are_refused_by_name(tmp_path, tiny_checkpoint):
    from mode_ssm.runtime.checkpoint import load_checkpoint

    state = load_checkpoint(tiny_checkpoint)
    state["config"]["augmentation"]["smooth_std"] = 3.5  # trained on inputs smoothed otherwise
    other = tmp_path / "other.pt"
    torch.save(state, other)
    with pytest.raises(ValueError, match="read their input differently"):
        load_checkpoints([str(tiny_checkpoint), str(other)], tmp_path, "cpu")
    with pytest.raises(ValueError, match="a path or a list of paths"):
        load_checkpoints([], tmp_path, "cpu")
