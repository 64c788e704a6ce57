"""The MODE-SSM model and the GRU baseline: shapes, lengths, padding, components, learning."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import editdistance
import pytest
import torch
from omegaconf import OmegaConf

from mode_ssm.models.build import build_model, component_parameters, model_config, set_trainable
from mode_ssm.models.flow_bridge import FlowBridge
from mode_ssm.data.augment import zero_constant_channels
from mode_ssm.models.frontend import DayInputLayers, Preprocessor
from mode_ssm.models.gru_baseline import GRUBaseline, GRUBaselineConfig
from mode_ssm.models.heads import RNNTHead
from mode_ssm.models.mode_ssm import ModeSSM, ModeSSMConfig
from mode_ssm.models.losses import ctc_loss_per_token

torch.set_num_threads(1)
CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "model"


def tiny_config(**overrides) -> ModeSSMConfig:
    base = dict(
        n_days=3, n_channels=512, num_channels=256, d_model=32, n_layers=1, d_state=8, head_dim=16,
        chunk_size=16, dropout=0.0, input_dropout=0.0, mode_hidden=16, flow_hidden=32,
        predictor_dim=16, joiner_dim=16, use_cuda_kernel=False,
    )  # fmt: skip
    base.update(overrides)
    return ModeSSMConfig(**base)


def padded_batch(trials: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """List of (T_i, C) -> zero-padded (B, T_max, C), lengths (B,)."""
    lengths = torch.tensor([t.shape[0] for t in trials])
    out = torch.zeros(len(trials), int(lengths.max()), trials[0].shape[1])
    for i, t in enumerate(trials):
        out[i, : t.shape[0]] = t
    return out, lengths


def test_mode_ssm_shapes_and_lengths():
    torch.manual_seed(0)
    model = ModeSSM(tiny_config()).eval()
    x, lengths = padded_batch([torch.randn(n, 512) for n in (100, 61, 8, 7)])
    out = model(x, lengths, torch.tensor([0, 1, 2, 0]))
    assert out["out_lengths"].tolist() == [24, 14, 1, 0]  # (T - 8) // 4 + 1, never negative
    assert out["phoneme_logits"].shape == (4, 24, 41)
    assert out["mode_logits"].shape == (4, 2)
    for key in ("encoder_features", "conditioned_features", "head_features"):
        assert out[key].shape == (4, 24, 32)
        assert out[key][1, 14:].abs().max() == 0 and out[key][3].abs().max() == 0
    assert torch.isfinite(out["phoneme_logits"]).all() and torch.isfinite(out["mode_logits"]).all()


@pytest.mark.parametrize("flow", [False, True])
def test_mode_ssm_padding_invariant(flow):
    torch.manual_seed(1)
    model = ModeSSM(tiny_config(flow_bridge_enabled=flow)).eval()
    with torch.no_grad():  # non-zero FiLM and bridge so they are part of what is checked
        for p in [model.mode_head.film.weight, model.flow_bridge.out.weight]:
            p.normal_(0, 0.1)
    trials = [torch.randn(n, 512) for n in (90, 57, 33)]
    days = torch.tensor([2, 0, 1])
    x, lengths = padded_batch(trials)
    batch_out = model(x, lengths, days)
    for i, t in enumerate(trials):
        alone = model(t[None], lengths[i : i + 1], days[i : i + 1])
        n = int(alone["out_lengths"][0])
        assert n == int(batch_out["out_lengths"][i])
        torch.testing.assert_close(
            batch_out["phoneme_logits"][i, :n], alone["phoneme_logits"][0], atol=2e-5, rtol=1e-4
        )
        torch.testing.assert_close(batch_out["mode_logits"][i], alone["mode_logits"][0], atol=2e-5, rtol=1e-4)


def test_day_layers_identity_at_init_and_add_day():
    torch.manual_seed(2)
    x = torch.randn(3, 10, 256)
    days = torch.tensor([0, 2, 1])
    plain = DayInputLayers(3, 256, softsign=False)
    torch.testing.assert_close(plain(x, days), x, atol=0, rtol=0)
    with_softsign = DayInputLayers(3, 256, softsign=True)
    torch.testing.assert_close(with_softsign(x, days), x / (1 + x.abs()))
    with torch.no_grad():
        plain.weights[1].mul_(2.0)
        plain.biases[1].fill_(0.5)
    assert plain.add_day() == 3
    torch.testing.assert_close(plain(x, torch.tensor([3, 3, 3])), x, atol=0, rtol=0)
    assert plain.add_day(copy_from=1) == 4
    torch.testing.assert_close(plain(x, torch.tensor([4, 4, 4])), 2 * x + 0.5)
    # the copy is a new parameter, not a view of day 1
    assert plain.weights[4] is not plain.weights[1]
    with pytest.raises(IndexError):
        plain(x, torch.tensor([0, 5, 1]))


def test_zero_constant_channels():
    torch.manual_seed(3)
    x, lengths = padded_batch([torch.randn(20, 8), torch.randn(12, 8)])
    x[0, :20, 3] = 7.0  # stuck electrode
    x[1, :12, 5] = -2.0
    x[1, 12:, 5] = 99.0  # padding differs from the stuck value: must not make it look alive
    y = zero_constant_channels(x, lengths)
    assert y[0, :, 3].abs().max() == 0 and y[1, :, 5].abs().max() == 0
    torch.testing.assert_close(y[0, :, 5], x[0, :, 5])
    torch.testing.assert_close(y[1, :12, 3], x[1, :12, 3])
    assert y[1, 12:].abs().max() == 0


@pytest.mark.parametrize("norm", ["trial", "layer", "none"])
def test_model_ignores_value_of_stuck_channel(norm):
    torch.manual_seed(4)
    model = ModeSSM(tiny_config(norm=norm)).eval()
    x = torch.randn(1, 60, 512)
    lengths, days = torch.tensor([60]), torch.tensor([1])
    x[0, :, 17] = 3.0
    a = model(x, lengths, days)["phoneme_logits"]
    x[0, :, 17] = -40.0
    b = model(x, lengths, days)["phoneme_logits"]
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    x[0, :, 17] = torch.randn(60)  # an alive channel does matter
    assert (model(x, lengths, days)["phoneme_logits"] - a).abs().max() > 1e-4


def test_learned_gate_can_silence_a_channel():
    torch.manual_seed(5)
    pre = Preprocessor(16, 8, downsample=2, stem_kernel=4, norm="none")
    torch.testing.assert_close(pre.channel_gates(), torch.ones(16))
    x, lengths = torch.randn(1, 20, 16), torch.tensor([20])
    base, out_len = pre(x, lengths)
    assert out_len.tolist() == [9]
    with torch.no_grad():
        pre.gate_logits[4] = -30.0
    x2 = x.clone()
    x2[0, :, 4] = torch.randn(20) * 10
    torch.testing.assert_close(pre(x2, lengths)[0], pre(x, lengths)[0], atol=1e-5, rtol=0)
    assert (pre(x, lengths)[0] - base).abs().max() > 1e-3


def test_components_partition_parameters():
    for model in (ModeSSM(tiny_config()), GRUBaseline(GRUBaselineConfig(n_units=16, n_layers=2, num_channels=256))):
        all_ids = [id(p) for p in model.parameters()]
        seen: list[int] = []
        for name in model.COMPONENTS:
            seen += [id(p) for p in component_parameters(model, [name])]
        assert sorted(seen) == sorted(all_ids)  # every parameter in exactly one component
    with pytest.raises(ValueError, match="unknown component"):
        component_parameters(model, ["mode_head"])  # the GRU baseline has none


def test_set_trainable_freezes_the_rest():
    torch.manual_seed(6)
    model = ModeSSM(tiny_config())
    trainable = set_trainable(model, ["encoder", "ctc_head"])
    assert {id(p) for p in trainable} == {id(p) for p in model.parameters() if p.requires_grad}
    optimizer = torch.optim.AdamW(trainable, lr=1e-2, weight_decay=0.1)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    x, lengths = padded_batch([torch.randn(80, 512), torch.randn(64, 512)])
    out = model(x, lengths, torch.tensor([0, 1]))
    targets, target_lengths = torch.tensor([[3, 4, 5], [6, 7, 0]]), torch.tensor([3, 2])
    loss = ctc_loss_per_token(out["phoneme_logits"], out["out_lengths"], targets, target_lengths)
    loss.backward()
    optimizer.step()
    for name, p in model.named_parameters():
        changed = not torch.equal(p, before[name])
        if name.startswith(("encoder.", "ctc_head.")):
            assert changed or p.grad is None or p.grad.abs().max() == 0, name
        else:
            assert not changed and p.grad is None, name
    assert not torch.equal(model.ctc_head.proj.weight, before["ctc_head.proj.weight"])
    name = "encoder.layers.0.forward_block.in_proj.weight"
    assert not torch.equal(model.get_parameter(name), before[name])


def test_film_changes_outputs_and_none_does_not():
    torch.manual_seed(7)
    film = ModeSSM(tiny_config(mode_conditioning="film")).eval()
    none = ModeSSM(tiny_config(mode_conditioning="none")).eval()
    none.load_state_dict({k: v for k, v in film.state_dict().items() if not k.startswith("mode_head.film")})
    x, lengths, days = torch.randn(2, 70, 512), torch.tensor([70, 50]), torch.tensor([0, 1])
    # zero-initialised FiLM is an identity
    torch.testing.assert_close(film(x, lengths, days)["phoneme_logits"], none(x, lengths, days)["phoneme_logits"])
    with torch.no_grad():
        film.mode_head.film.weight.normal_(0, 0.5)
    on, off = film(x, lengths, days), none(x, lengths, days)
    assert (on["phoneme_logits"] - off["phoneme_logits"]).abs().max() > 1e-2
    torch.testing.assert_close(on["mode_logits"], off["mode_logits"])  # the posterior is read before FiLM
    vocal = film(x, lengths, days, mode_probs=torch.tensor([[1.0, 0.0], [1.0, 0.0]]))["phoneme_logits"]
    silent = film(x, lengths, days, mode_probs=torch.tensor([[0.0, 1.0], [0.0, 1.0]]))["phoneme_logits"]
    assert (vocal - silent).abs().max() > 1e-2
    vocal_none = none(x, lengths, days, mode_probs=torch.tensor([[1.0, 0.0], [1.0, 0.0]]))["phoneme_logits"]
    torch.testing.assert_close(vocal_none, off["phoneme_logits"])


def test_flow_bridge_identity_until_trained_and_learns():
    torch.manual_seed(8)
    bridge = FlowBridge(16, n_steps=4, hidden=32, enabled=True)
    x, lengths = torch.randn(3, 20, 16), torch.tensor([20, 15, 9])
    torch.testing.assert_close(bridge(x, lengths), x, atol=0, rtol=0)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        assert abs(float(bridge.loss(x, lengths, generator=g)) - 1.0) < 0.05  # zero velocity scores E[eps^2] = 1
    # clean features on a 2-d subspace: noise off the subspace is predictable, so the loss must fall well below 1
    basis = torch.randn(2, 16)
    clean = torch.randn(8, 30, 2) @ basis
    clean_lengths = torch.full((8,), 30)
    opt = torch.optim.Adam(bridge.parameters(), lr=3e-3)
    for _ in range(300):
        opt.zero_grad()
        bridge.loss(clean, clean_lengths, generator=g).backward()
        opt.step()
    with torch.no_grad():
        final = sum(float(bridge.loss(clean, clean_lengths, generator=g)) for _ in range(5)) / 5
        noisy = clean + 0.5 * clean.pow(2).mean().sqrt() * torch.randn(clean.shape, generator=g)
        err_before = (noisy - clean).pow(2).mean()
        err_after = (bridge(noisy, clean_lengths) - clean).pow(2).mean()
    assert final < 0.45
    assert err_after < 0.5 * err_before
    bridge.enabled = False
    torch.testing.assert_close(bridge(noisy, clean_lengths), noisy, atol=0, rtol=0)


def test_rnnt_head_steps_match_full_joint():
    torch.manual_seed(9)
    head = RNNTHead(enc_dim=12, pred_dim=10, pred_layers=2, joiner_dim=14).eval()
    enc = torch.randn(2, 5, 12)
    targets = torch.tensor([[3, 7, 40], [5, 0, 0]])
    joint = head(enc, targets)
    assert joint.shape == (2, 5, 4, 41)
    labels = torch.zeros(2, dtype=torch.long)  # blank = start symbol
    state = None
    for u in range(4):
        pred_out, state = head.predictor.step(labels, state)
        for t in range(5):
            torch.testing.assert_close(head.joiner.step(enc[:, t], pred_out), joint[:, t, u], atol=1e-5, rtol=1e-5)
        if u < 3:
            labels = targets[:, u]


def test_gru_baseline_lengths_and_padding():
    torch.manual_seed(10)
    model = GRUBaseline(GRUBaselineConfig(n_days=2, n_units=24, n_layers=2, num_channels=512)).eval()
    trials = [torch.randn(n, 512) for n in (101, 30, 14, 10)]
    x, lengths = padded_batch(trials)
    out = model(x, lengths, torch.tensor([0, 1, 1, 0]))
    assert out["out_lengths"].tolist() == [(101 - 14) // 4 + 1, (30 - 14) // 4 + 1, 1, 0]
    assert out["phoneme_logits"].shape == (4, 22, 41) and out["mode_logits"] is None
    alone = model(trials[1][None], lengths[1:2], torch.tensor([1]))
    torch.testing.assert_close(out["phoneme_logits"][1, :5], alone["phoneme_logits"][0], atol=1e-5, rtol=1e-4)


def test_configs_build_and_bad_keys_raise():
    small = build_model(OmegaConf.load(CONFIGS / "mode_ssm_small.yaml"), n_days=4, n_channels=512)
    assert isinstance(small, ModeSSM) and small.config.d_model <= 192 and small.config.downsample == 4
    official = model_config(OmegaConf.load(CONFIGS / "gru_baseline.yaml"), n_days=45, n_channels=512)
    assert (official.n_units, official.n_layers, official.patch_size, official.patch_stride) == (768, 5, 14, 4)
    assert (official.input_dropout, official.rnn_dropout, official.day_softsign) == (0.2, 0.4, True)
    gru_small = build_model(OmegaConf.load(CONFIGS / "gru_small.yaml"), n_days=2, n_channels=512)
    assert isinstance(gru_small, GRUBaseline)
    paper_yaml = OmegaConf.to_container(OmegaConf.load(CONFIGS / "mode_ssm.yaml"))
    paper = model_config(paper_yaml, n_days=45, n_channels=256)
    assert paper.n_days == 45 and paper.n_channels == 256
    del paper_yaml["name"]
    # every option of the file reaches the config (mode_ssm_small.yaml would not show it: it holds the defaults)
    assert {k: getattr(paper, k) for k in paper_yaml} == paper_yaml
    fields = {f.name for f in dataclasses.fields(ModeSSMConfig)}
    assert fields >= set(OmegaConf.load(CONFIGS / "mode_ssm.yaml")) - {"name"}
    with pytest.raises(ValueError, match="d_modle"):
        build_model({"name": "mode_ssm", "d_modle": 64}, n_days=1, n_channels=512)
    with pytest.raises(ValueError, match="only 256"):
        build_model({"name": "mode_ssm", "num_channels": 512}, n_days=1, n_channels=256)


# ---------------------------------------------------------------------------
# Learning: a tiny model must overfit structured synthetic trials


def synthetic_trials(n_trials: int, n_channels: int, seed: int, n_phonemes: int = 40, noise: float = 1.0):
    """Trials of phonemes 1..n_phonemes, each with a fixed feature pattern held for 6..14 bins, under noise."""
    g = torch.Generator().manual_seed(seed)
    patterns = torch.randn(41, n_channels, generator=g)
    trials, labels = [], []
    for _ in range(n_trials):
        n_labels = int(torch.randint(5, 10, (1,), generator=g))
        seq = torch.randint(1, n_phonemes + 1, (n_labels,), generator=g)
        durations = torch.randint(6, 15, (n_labels,), generator=g)
        rest = torch.zeros(8, n_channels)
        body = patterns[seq].repeat_interleave(durations, dim=0)
        x = torch.cat([rest, body, rest])
        trials.append(x + noise * torch.randn(x.shape, generator=g))
        labels.append(seq)
    return trials, labels


def greedy_ctc(logits: torch.Tensor, length: int) -> list[int]:
    """(T, V) -> collapsed, blank-free argmax path."""
    path = logits[:length].argmax(-1).tolist()
    return [p for i, p in enumerate(path) if p != 0 and (i == 0 or p != path[i - 1])]


def test_tiny_model_overfits_synthetic_trials():
    torch.manual_seed(11)
    trials, labels = synthetic_trials(8, 256, seed=11)
    x, lengths = padded_batch(trials)
    targets = torch.nn.utils.rnn.pad_sequence(labels, batch_first=True)
    target_lengths = torch.tensor([len(s) for s in labels])
    days = torch.tensor([0, 1] * 4)
    model = ModeSSM(tiny_config(n_days=2, n_channels=256, flow_bridge=False))
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3)
    for step in range(150):
        out = model(x, lengths, days)
        loss = ctc_loss_per_token(out["phoneme_logits"], out["out_lengths"], targets, target_lengths)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        out = model(x, lengths, days)
    errors = sum(
        editdistance.eval(greedy_ctc(out["phoneme_logits"][i], int(out["out_lengths"][i])), labels[i].tolist())
        for i in range(8)
    )
    per = errors / int(target_lengths.sum())
    assert per <= 0.02, f"PER {per:.3f} after 150 steps, loss {float(loss):.3f}"
    assert loss.item() < 0.1
