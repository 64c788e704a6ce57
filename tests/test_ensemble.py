"""Ensembles: members' CTC log-probabilities averaged per frame, in evaluate as on a batch."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from helpers import REPO, run_script
from mode_ssm.models.mode_ssm import ModeSSM, ModeSSMConfig
from mode_ssm.runtime.ensemble import EnsembleModel, MergedEnsemble, load_checkpoints

TINY_GRU = ["model=gru_small", "model.n_units=16", "model.n_layers=1", "decoding.extra_vocabulary=100",
            "decoding.beam=8", "data.train_wer_trials=8", "training.max_steps=3", "data.max_sessions=3"]


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


@pytest.fixture(scope="module")
def tiny_gru(tmp_path_factory, tiny_data_root):
    run_dir = tmp_path_factory.mktemp("gru_run")
    run_script("train.py", [f"data.data_root={tiny_data_root}", *TINY_GRU, f"hydra.run.dir={run_dir}"], REPO)
    return run_dir / "checkpoints" / "best.pt"


def test_models_at_other_frame_rates_merge_their_nbest_lists(tmp_path, tiny_data_root, tiny_checkpoint, tiny_gru):
    """MODE-SSM (80 ms frames) + the GRU baseline (14-bin patches): the search of the merged ensemble is
    each model's own n-best, merged by :func:`merge_nbests`; evaluate runs it end to end."""
    from mode_ssm.decoding.nbest_merge import merge_nbests
    from mode_ssm.evaluation.pipeline import open_split, raw_batches
    from mode_ssm.evaluation.search import MERGE_NBEST, WordDecoding, merged_nbest_search

    loaded = load_checkpoints([str(tiny_checkpoint), str(tiny_gru)], tmp_path, "cpu")
    assert isinstance(loaded.model, MergedEnsemble) and len(loaded.model.groups) == 2
    data = open_split(loaded, tiny_data_root, "val")
    batch = next(raw_batches(data, list(range(min(4, len(data)))), 4, None, loaded.device))
    x, n, days = batch["features"], batch["feature_lengths"], batch["day_index"]
    with torch.no_grad():
        out = loaded.model(x, n, days)
        own = [g(x, n, days) for g in loaded.model.groups]
    assert out["group_log_probs"][0].shape[1] != out["group_log_probs"][1].shape[1]  # the frame rates differ
    words = WordDecoding(loaded, tiny_data_root, tmp_path / "lm")
    _, sentences = merged_nbest_search(words.decoder())(out, out["phoneme_logits"], out["out_lengths"])
    decoder = words.decoder()
    decoder.nbest = MERGE_NBEST
    for b, sentence in enumerate(sentences):
        trial = [o["phoneme_logits"][b, : int(o["out_lengths"][b])].float().log_softmax(-1) for o in own]
        merged = merge_nbests([decoder.decode(t) for t in trial], trial, decoder.lm_weight, decoder.word_score)
        assert sentence == merged[0].sentence
    common = ["split=val", f"data.data_root={tiny_data_root}"]
    run_script("evaluate.py", [f"checkpoint=[{tiny_checkpoint},{tiny_gru}]", *common, "output_dir=mixed"], tmp_path)
    rows = list(csv.DictReader(open(tmp_path / "mixed" / "predictions.csv", newline="")))
    assert len(rows) == len(data)
    bad = run_script("evaluate.py", [f"checkpoint=[{tiny_checkpoint},{tiny_gru}]", *common, "decoder=ctc_greedy",
                                     "output_dir=bad"], tmp_path, expect_rc=1)
    assert "decodes with decoder=ctc_lm only" in bad.stderr + bad.stdout
