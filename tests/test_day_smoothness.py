"""The day-layer smoothness penalty (training.day_smoothness): its value and the gradient the trainer adds."""

from __future__ import annotations

import torch

from mode_ssm.models.frontend import DayInputLayers
from mode_ssm.training.trainer import add_day_smoothness_gradient


def _layers(n_days=3, channels=4, seed=0):
    torch.manual_seed(seed)
    layers = DayInputLayers(n_days, channels)
    with torch.no_grad():
        for w, b in zip(layers.weights, layers.biases):
            w.add_(torch.randn_like(w))
            b.add_(torch.randn_like(b))
    return layers


def test_penalty_is_the_mean_squared_step_between_adjacent_days():
    layers = _layers()
    w, b = [p.detach() for p in layers.weights], [p.detach() for p in layers.biases]
    by_hand = sum(((w[d + 1] - w[d]) ** 2).sum() + ((b[d + 1] - b[d]) ** 2).sum() for d in range(2)) / 2
    assert torch.allclose(layers.smoothness_penalty(), by_hand)
    assert float(DayInputLayers(1, 4).smoothness_penalty()) == 0.0
    assert float(DayInputLayers(3, 4).smoothness_penalty()) == 0.0  # identity layers: nothing to smooth


def test_gradient_is_added_to_the_loss_gradient_of_every_day():
    layers = _layers()
    # a loss gradient on day 0 only, as from a batch of day 0's trials
    (layers.weights[0].sum() * 2.0).backward()
    before0 = layers.weights[0].grad.clone()
    penalty = add_day_smoothness_gradient(layers, weight=0.5)
    w = [p.detach() for p in layers.weights]
    # d/dW1 of mean_d ||W[d+1]-W[d]||^2 over 2 pairs = (2(W1-W0) - 2(W2-W1)) / 2
    assert torch.allclose(layers.weights[1].grad, 0.5 * ((w[1] - w[0]) - (w[2] - w[1])))
    assert torch.allclose(layers.weights[0].grad, before0 + 0.5 * -(w[1] - w[0]))
    assert torch.allclose(layers.weights[2].grad, 0.5 * (w[2] - w[1]))
    assert abs(penalty - float(layers.smoothness_penalty())) < 1e-6 and penalty > 1.0


def test_gradient_steps_pull_neighbouring_days_together():
    layers = _layers(n_days=5)
    start = float(layers.smoothness_penalty())
    opt = torch.optim.SGD(layers.parameters(), lr=0.1)
    for _ in range(20):
        opt.zero_grad(set_to_none=True)
        add_day_smoothness_gradient(layers, weight=1.0)
        opt.step()
    assert float(layers.smoothness_penalty()) < 0.2 * start
    # the mean layer does not move: the penalty only removes differences between days
    mean_now = torch.stack([p.detach() for p in layers.weights]).mean(0)
    mean_start = torch.stack([p.detach() for p in _layers(n_days=5).weights]).mean(0)
    assert torch.allclose(mean_now, mean_start, atol=1e-5)
