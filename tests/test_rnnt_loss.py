"""RNN-T loss against an enumeration of every alignment and a plain-Python lattice."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from mode_ssm.models.rnnt_loss import (
    _mask_outside_lattice,
    emitted_symbols,
    rnnt_loss,
    transducer_alpha,
    transducer_beta,
)

torch.set_num_threads(1)


def brute_force_nll(logits: torch.Tensor, targets: list[int], blank: int = 0) -> torch.Tensor:
    """-log sum over every alignment of its probability. logits: (T, U+1, V) for one sequence."""
    log_probs = logits.log_softmax(-1)
    frames, labels = log_probs.shape[0], len(targets)
    path_log_probs = []
    # An alignment is T blanks and U labels in some order, the last symbol a blank.
    for label_slots in itertools.combinations(range(frames + labels - 1), labels):
        t = u = 0
        total = log_probs.new_zeros(())
        for step in range(frames + labels - 1):
            if step in label_slots:
                total = total + log_probs[t, u, targets[u]]
                u += 1
            else:
                total = total + log_probs[t, u, blank]
                t += 1
        path_log_probs.append(total + log_probs[frames - 1, labels, blank])
    return -torch.logsumexp(torch.stack(path_log_probs), dim=0)


def python_lattice_nll(logits: torch.Tensor, targets: list[int], blank: int = 0) -> float:
    """Node-by-node alpha recursion in float64 Python. logits: (T, U+1, V)."""
    log_probs = logits.double().log_softmax(-1).tolist()
    frames, labels = len(log_probs), len(targets)
    alpha = [[-math.inf] * (labels + 1) for _ in range(frames)]
    for t in range(frames):
        for u in range(labels + 1):
            if t == 0 and u == 0:
                alpha[t][u] = 0.0
                continue
            terms = []
            if t > 0:
                terms.append(alpha[t - 1][u] + log_probs[t - 1][u][blank])
            if u > 0:
                terms.append(alpha[t][u - 1] + log_probs[t][u - 1][targets[u - 1]])
            top = max(terms)
            alpha[t][u] = top + math.log(sum(math.exp(x - top) for x in terms))
    return -(alpha[frames - 1][labels] + log_probs[frames - 1][labels][blank])


def make_batch(logit_lengths, target_lengths, max_frames, max_labels, vocab, dtype, seed):
    generator = torch.Generator().manual_seed(seed)
    batch = len(logit_lengths)
    logits = torch.randn(batch, max_frames, max_labels + 1, vocab, generator=generator, dtype=dtype)
    targets = torch.randint(1, vocab, (batch, max_labels), generator=generator)
    targets = targets.masked_fill(torch.arange(max_labels)[None] >= torch.tensor(target_lengths)[:, None], 0)
    return logits, targets, torch.tensor(logit_lengths), torch.tensor(target_lengths)


def test_matches_enumeration_of_all_alignments_value_and_gradient():
    logit_lengths, target_lengths = [4, 2, 3, 1, 4], [3, 0, 2, 2, 1]
    logits, targets, ll, tl = make_batch(logit_lengths, target_lengths, 4, 3, 4, torch.float64, seed=0)
    logits.requires_grad_(True)
    losses = rnnt_loss(logits, targets, ll, tl, reduction="none")
    # Weight each sequence differently so a mix-up between sequences shows in the gradient.
    weights = torch.tensor([1.0, -0.5, 2.0, 0.25, 1.5], dtype=torch.float64)
    (grad,) = torch.autograd.grad((losses * weights).sum(), logits)

    reference = torch.stack(
        [
            brute_force_nll(logits[b, : ll[b]], targets[b, : tl[b]].tolist())
            for b in range(len(logit_lengths))
        ]
    )
    (reference_grad,) = torch.autograd.grad((reference * weights).sum(), logits)
    assert torch.allclose(losses, reference, atol=1e-12, rtol=0)
    assert torch.allclose(grad, reference_grad, atol=1e-12, rtol=0)
    assert (losses > 0).all()


def test_matches_python_lattice_for_medium_sizes_in_float64_and_float32():
    logit_lengths, target_lengths = [30, 17, 25], [12, 5, 0]
    logits, targets, ll, tl = make_batch(logit_lengths, target_lengths, 30, 12, 9, torch.float64, seed=1)
    expected = torch.tensor(
        [python_lattice_nll(logits[b, : ll[b]], targets[b, : tl[b]].tolist()) for b in range(3)],
        dtype=torch.float64,
    )
    losses64 = rnnt_loss(logits, targets, ll, tl, reduction="none")
    losses32 = rnnt_loss(logits.float(), targets, ll, tl, reduction="none")
    assert torch.allclose(losses64, expected, atol=1e-9, rtol=0)
    assert torch.allclose(losses32.double(), expected, rtol=1e-5, atol=0)


def test_gradient_is_finite_difference_of_the_loss():
    logits, targets, ll, tl = make_batch([6, 4], [3, 2], 6, 3, 5, torch.float64, seed=2)
    logits.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda z: rnnt_loss(z, targets, ll, tl, reduction="sum"), (logits,), eps=1e-6, atol=1e-7
    )


def test_alpha_and_beta_agree_on_the_total_probability():
    logits, targets, ll, tl = make_batch([7, 3, 5], [4, 4, 1], 7, 4, 6, torch.float64, seed=3)
    symbols = emitted_symbols(targets, tl)
    log_probs = torch.gather(logits.log_softmax(-1), -1, symbols[:, None].expand(3, 7, 5, 2))
    blank, label = _mask_outside_lattice(log_probs[..., 0], log_probs[:, :, :-1, 1], ll, tl)
    alpha = transducer_alpha(blank, label)
    beta = transducer_beta(blank, label, ll, tl)
    rows = torch.arange(3)
    from_alpha = alpha[rows, ll - 1, tl] + blank[rows, ll - 1, tl]
    assert torch.allclose(beta[:, 0, 0], from_alpha, atol=1e-12, rtol=0)
    # Every path crosses each frame boundary exactly once: sum_u alpha*blank*beta = P at every t < T_b.
    for b in range(3):
        for t in range(int(ll[b])):
            through_t = torch.logsumexp(alpha[b, t] + blank[b, t] + beta[b, t + 1], dim=0)
            assert abs(float(through_t - from_alpha[b])) < 1e-10


def test_padding_in_targets_and_logits_changes_nothing():
    logits, targets, ll, tl = make_batch([5, 3, 4], [2, 1, 3], 5, 3, 6, torch.float64, seed=4)
    logits.requires_grad_(True)
    losses = rnnt_loss(logits, targets, ll, tl, reduction="none")
    (grad,) = torch.autograd.grad(losses.sum(), logits)

    outside = (torch.arange(3)[None] >= tl[:, None])
    odd_targets = targets.masked_fill(outside, -1)  # not even a valid class
    odd_targets[0, 2] = 5
    padded_nodes = (torch.arange(5)[None, :, None] >= ll[:, None, None]) | (
        torch.arange(4)[None, None, :] > tl[:, None, None]
    )
    noisy_logits = logits.detach().masked_fill(padded_nodes[..., None], 1e4).requires_grad_(True)
    noisy_losses = rnnt_loss(noisy_logits, odd_targets, ll, tl, reduction="none")
    (noisy_grad,) = torch.autograd.grad(noisy_losses.sum(), noisy_logits)

    assert torch.equal(losses, noisy_losses)
    assert torch.allclose(grad, noisy_grad, atol=1e-15, rtol=0)
    assert grad[padded_nodes].abs().max() == 0


def test_empty_target_is_the_sum_of_blank_log_probs():
    logits, targets, ll, tl = make_batch([5, 3], [0, 0], 5, 2, 4, torch.float64, seed=5)
    losses = rnnt_loss(logits, targets, ll, tl, reduction="none")
    blank_log_probs = logits.log_softmax(-1)[:, :, 0, 0]
    expected = torch.stack([-blank_log_probs[0, :5].sum(), -blank_log_probs[1, :3].sum()])
    assert torch.allclose(losses, expected, atol=1e-12, rtol=0)
    assert float(rnnt_loss(logits, targets, ll, tl)) == pytest.approx(float(losses.sum()))


def test_reductions():
    logits, targets, ll, tl = make_batch([6, 4, 5], [3, 1, 2], 6, 3, 5, torch.float32, seed=6)
    losses = rnnt_loss(logits, targets, ll, tl, reduction="none")
    assert losses.shape == (3,)
    assert float(rnnt_loss(logits, targets, ll, tl, reduction="sum")) == pytest.approx(float(losses.sum()))
    assert float(rnnt_loss(logits, targets, ll, tl, reduction="mean")) == pytest.approx(float(losses.mean()))
    assert float(rnnt_loss(logits, targets, ll, tl)) == pytest.approx(float(losses.sum()) / 6)


def test_other_blank_index():
    logits, targets, ll, tl = make_batch([4, 3], [2, 3], 4, 3, 4, torch.float64, seed=7)
    # Move blank from class 0 to class 3 and relabel: the loss must not change.
    moved_logits = logits[..., [1, 2, 3, 0]]
    moved_targets = (targets - 1).clamp(min=0)
    a = rnnt_loss(logits, targets, ll, tl, reduction="none")
    b = rnnt_loss(moved_logits, moved_targets, ll, tl, blank=3, reduction="none")
    assert torch.allclose(a, b, atol=1e-12, rtol=0)


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(logit_lengths=torch.tensor([0, 3])), ">= 1"),
        (dict(logit_lengths=torch.tensor([5, 3])), "exceed"),
        (dict(target_lengths=torch.tensor([4, 1])), "exceed U"),
        (dict(target_lengths=torch.tensor([-1, 1])), ">= 0"),
        (dict(targets=torch.tensor([[1, 0, 2], [1, 1, 1]])), "blank"),
        (dict(targets=torch.tensor([[1, 9, 2], [1, 1, 1]])), "lie in"),
        (dict(targets=torch.ones(2, 2, dtype=torch.long)), "targets must be"),
        (dict(reduction="average"), "reduction"),
    ],
)
def test_impossible_inputs_raise(change, message):
    logits, targets, ll, tl = make_batch([4, 3], [3, 1], 4, 3, 5, torch.float32, seed=8)
    arguments = dict(logits=logits, targets=targets, logit_lengths=ll, target_lengths=tl)
    arguments.update(change)
    with pytest.raises(ValueError, match=message):
        rnnt_loss(**arguments)


def test_non_finite_logits_inside_the_lattice_give_a_non_finite_loss_like_ctc():
    logits, targets, ll, tl = make_batch([4, 3], [2, 1], 4, 3, 5, torch.float32, seed=9)
    clean = rnnt_loss(logits, targets, ll, tl, reduction="none")
    logits[1, 0, 0, 2] = float("nan")
    logits[0, 0, 2, 1] = float("nan")  # inside sequence 0's lattice, a node only blank leaves
    losses = rnnt_loss(logits, targets, ll, tl, reduction="none")
    assert torch.isnan(losses[1]) and not torch.isfinite(losses[0])
    logits, targets, ll, tl = make_batch([4, 3], [2, 1], 4, 3, 5, torch.float32, seed=9)
    logits[1, 3, 1, 2] = float("nan")  # outside sequence 1's lattice (T=3, U=1): never read
    assert torch.equal(rnnt_loss(logits, targets, ll, tl, reduction="none"), clean)
