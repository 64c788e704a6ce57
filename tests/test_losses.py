"""compute_losses: CTC normalisation by hand, RNN-T targets, mode targets, weights, non-finite reporting."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mode_ssm.models.losses import compute_losses, ctc_loss_per_token, trim_targets
from mode_ssm.models.gru_baseline import GRUBaseline, GRUBaselineConfig
from mode_ssm.models.mode_ssm import ModeSSM, ModeSSMConfig
from mode_ssm.models.rnnt_loss import rnnt_loss

torch.set_num_threads(1)


def tiny_model(**overrides) -> ModeSSM:
    base = dict(
        n_days=2, n_channels=256, num_channels=256, d_model=32, n_layers=1, d_state=8, head_dim=16,
        chunk_size=16, dropout=0.0, input_dropout=0.0, mode_hidden=16, flow_hidden=32,
        predictor_dim=16, joiner_dim=16, use_cuda_kernel=False,
    )  # fmt: skip
    base.update(overrides)
    return ModeSSM(ModeSSMConfig(**base))


class GroundTruthGuard(dict):
    """A batch whose simulator ground truth must not be read by training code."""

    def __getitem__(self, key):
        if key == "speaking_mode":
            raise AssertionError("compute_losses read speaking_mode")
        return super().__getitem__(key)

    def get(self, key, default=None):
        if key == "speaking_mode":
            raise AssertionError("compute_losses read speaking_mode")
        return super().get(key, default)


def make_batch(seed: int = 0) -> GroundTruthGuard:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([80, 64, 48])
    features = torch.randn(3, 80, 256, generator=g)
    for i, n in enumerate(lengths.tolist()):
        features[i, n:] = 0
    phoneme_lengths = torch.tensor([5, 3, 7])
    phoneme_ids = torch.zeros(3, 12, dtype=torch.long)  # padded past the longest label sequence, as loaded
    for i, n in enumerate(phoneme_lengths.tolist()):
        phoneme_ids[i, :n] = torch.randint(1, 41, (n,), generator=g)
    return GroundTruthGuard(
        features=features,
        feature_lengths=lengths,
        phoneme_ids=phoneme_ids,
        phoneme_lengths=phoneme_lengths,
        day_index=torch.tensor([0, 1, 1]),
        speaking_mode=torch.tensor([0, 1, -1]),
    )


def forward(model, batch, rnnt: bool = False, denoise: bool = False):
    """The model's forward as training calls it: the RNN-T joint and the denoising loss inside it."""
    targets = trim_targets(batch["phoneme_ids"], batch["phoneme_lengths"]) if rnnt else None
    return model(batch["features"], batch["feature_lengths"], batch["day_index"], rnnt_targets=targets,
                 denoise=denoise)


def test_ctc_by_hand_two_frames():
    # classes: 0 blank, 1 "a", 2 "b"; two frames
    logits = torch.tensor([[[0.3, 1.2, -0.5], [0.1, -0.4, 0.9]]]).repeat(2, 1, 1)
    p = logits.softmax(-1)[0]
    # trial 0 says "a": paths (a, a), (a, _), (_, a); trial 1 says "a b": only path (a, b)
    nll_a = -math.log(p[0, 1] * p[1, 1] + p[0, 1] * p[1, 0] + p[0, 0] * p[1, 1])
    nll_ab = -math.log(p[0, 1] * p[1, 2])
    loss = ctc_loss_per_token(logits, torch.tensor([2, 2]), torch.tensor([[1, 0], [1, 2]]), torch.tensor([1, 2]))
    assert float(loss) == pytest.approx((nll_a + nll_ab) / 3, rel=1e-5)  # per token, not per trial
    assert float(loss) != pytest.approx((nll_a / 1 + nll_ab / 2) / 2, rel=1e-3)  # torch's "mean"


def test_ctc_per_token_matches_torch_sum():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 12, 41, generator=g)
    out_lengths = torch.tensor([12, 9, 10])
    targets = torch.randint(1, 41, (3, 6), generator=g)
    target_lengths = torch.tensor([4, 2, 6])
    per_trial = F.ctc_loss(
        logits.log_softmax(-1).transpose(0, 1), targets, out_lengths, target_lengths, reduction="none"
    )
    ours = ctc_loss_per_token(logits, out_lengths, targets, target_lengths)
    torch.testing.assert_close(ours, per_trial.sum() / 12)


def test_non_finite_rnnt_is_reported_like_ctc():
    model = tiny_model()
    batch = make_batch()
    outputs = forward(model, batch, rnnt=True)
    outputs["rnnt_joint"] = outputs["rnnt_joint"].clone()
    outputs["rnnt_joint"][1, 0, 0, 3] = float("nan")
    losses = compute_losses(model, batch, outputs, {"ctc": 1.0, "rnnt": 0.5})
    assert losses["nonfinite"] == ["rnnt"] and math.isfinite(losses["ctc"].item())
    assert math.isnan(losses["total"].item())


def test_infeasible_ctc_is_reported_not_hidden():
    model = tiny_model()
    batch = make_batch()
    batch["phoneme_lengths"] = torch.tensor([5, 3, 12])  # trial 2 has only (48 - 8) // 4 + 1 = 11 frames
    batch["phoneme_ids"][2] = torch.arange(1, 13)
    losses = compute_losses(model, batch, forward(model, batch), {"ctc": 1.0})
    assert losses["nonfinite"] == ["ctc"]
    assert math.isinf(losses["ctc"].item()) and math.isinf(losses["total"].item())


def test_weights_select_and_sum_components():
    torch.manual_seed(2)
    model = tiny_model()
    batch = make_batch()
    with pytest.raises(ValueError, match="no rnnt_joint: call the model with rnnt_targets"):
        compute_losses(model, batch, forward(model, batch), {"rnnt": 1.0})
    with pytest.raises(ValueError, match="no denoise_loss: call the model with denoise=True"):
        compute_losses(model, batch, forward(model, batch), {"denoise": 1.0})
    outputs = forward(model, batch, rnnt=True, denoise=True)
    mode_targets = torch.tensor([1, 0, -1])
    weights = {"ctc": 1.0, "rnnt": 0.5, "mode": 0.2, "denoise": 0.1}
    torch.manual_seed(3)
    all_losses = compute_losses(model, batch, outputs, weights, mode_targets)
    assert all_losses["nonfinite"] == []
    expected = sum(weights[k] * all_losses[k] for k in weights)
    torch.testing.assert_close(all_losses["total"], expected)
    assert all(all_losses[k].item() > 0 for k in weights)
    ctc_only = compute_losses(model, batch, outputs, {"ctc": 1.0, "rnnt": 0.0}, mode_targets)
    assert ctc_only["rnnt"] is None and ctc_only["mode"] is None and ctc_only["denoise"] is None
    torch.testing.assert_close(ctc_only["total"], all_losses["ctc"])
    with pytest.raises(ValueError, match="unknown loss"):
        compute_losses(model, batch, outputs, {"ctcc": 1.0})


def test_rnnt_uses_only_the_labels_within_length():
    torch.manual_seed(4)
    model = tiny_model().eval()
    batch = make_batch()
    outputs = forward(model, batch, rnnt=True)
    loss = compute_losses(model, batch, outputs, {"rnnt": 1.0})["rnnt"]
    trimmed = trim_targets(batch["phoneme_ids"], batch["phoneme_lengths"])
    assert trimmed.shape == (3, 7)
    joint = model.rnnt(outputs["head_features"], trimmed)
    assert joint.shape == (3, 19, 8, 41)
    direct = rnnt_loss(joint, trimmed, outputs["out_lengths"], batch["phoneme_lengths"], blank=0)
    torch.testing.assert_close(loss, direct)
    # labels past each length are padding: garbage there must change nothing
    batch["phoneme_ids"][1, 3:] = 17
    batch["phoneme_ids"][0, 5:] = 40
    torch.testing.assert_close(compute_losses(model, batch, forward(model, batch, rnnt=True), {"rnnt": 1.0})["rnnt"],
                               loss)
    # and the per-token normalisation: sum over trials / 15 labels
    per_trial = rnnt_loss(joint, trimmed, outputs["out_lengths"], batch["phoneme_lengths"], reduction="none")
    torch.testing.assert_close(loss, per_trial.sum() / 15)


def test_mode_loss_ignores_unknown_targets():
    torch.manual_seed(5)
    model = tiny_model()
    batch = make_batch()
    outputs = forward(model, batch)
    logits = outputs["mode_logits"]
    loss = compute_losses(model, batch, outputs, {"mode": 1.0}, torch.tensor([1, -1, 0]))["mode"]
    torch.testing.assert_close(loss, F.cross_entropy(logits[[0, 2]], torch.tensor([1, 0])))
    none_known = compute_losses(model, batch, outputs, {"mode": 1.0}, torch.tensor([-1, -1, -1]))
    assert none_known["mode"].item() == 0.0 and none_known["nonfinite"] == []
    assert none_known["mode"].requires_grad
    assert compute_losses(model, batch, outputs, {"mode": 1.0}, None)["mode"].item() == 0.0


def test_denoise_loss_at_init_is_one():
    torch.manual_seed(6)
    model = tiny_model()
    batch = make_batch()
    outputs = forward(model, batch, denoise=True)
    loss = compute_losses(model, batch, outputs, {"denoise": 1.0})["denoise"]
    assert loss.item() == pytest.approx(1.0, abs=0.05)  # zero-initialised velocity: E[eps^2]
    loss.backward()
    assert model.flow_bridge.out.weight.grad.abs().max() > 0
    assert model.encoder.final_norm.weight.grad is None  # the encoder is not trained by this loss


def test_gru_baseline_ctc_and_missing_parts():
    torch.manual_seed(7)
    model = GRUBaseline(GRUBaselineConfig(n_days=2, n_channels=256, num_channels=256, n_units=16, n_layers=1))
    batch = make_batch()
    outputs = forward(model, batch)
    losses = compute_losses(model, batch, outputs, {"ctc": 1.0})
    assert losses["nonfinite"] == []
    per_trial = [  # each trial alone, on its own valid frames and labels
        F.ctc_loss(outputs["phoneme_logits"][b, : outputs["out_lengths"][b]].log_softmax(-1),
                   batch["phoneme_ids"][b, : batch["phoneme_lengths"][b]], outputs["out_lengths"][b : b + 1],
                   batch["phoneme_lengths"][b : b + 1], reduction="sum")
        for b in range(3)
    ]
    torch.testing.assert_close(losses["ctc"], sum(per_trial) / 15)  # 5 + 3 + 7 labels
    for name in ("rnnt", "mode", "denoise"):
        with pytest.raises(ValueError, match=name if name != "denoise" else "flow bridge"):
            compute_losses(model, batch, outputs, {"ctc": 1.0, name: 1.0}, torch.tensor([0, 1, 0]))
