"""Pruned RNN-T (models/rnnt_pruned.py): the simple loss, the band bounds, the pruned lattice, memory, wiring.

Reference points: ``rnnt_loss`` (itself checked against an enumeration of every
alignment in test_rnnt_loss.py) for the full lattice, and here an enumeration of
the alignments that stay inside the bands for the pruned one.
"""

from __future__ import annotations

import itertools
import math
import weakref

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from mode_ssm.models import rnnt_pruned as rp
from mode_ssm.models.heads import Joiner, RNNTHead
from mode_ssm.models.losses import compute_losses, trim_targets
from mode_ssm.models.mode_ssm import ModeSSM, ModeSSMConfig
from mode_ssm.models.rnnt_loss import _mask_outside_lattice, emitted_symbols, rnnt_loss

torch.set_num_threads(1)
F64 = torch.float64


def random_targets(target_lengths, max_labels, vocab, generator):
    targets = torch.randint(1, vocab, (len(target_lengths), max_labels), generator=generator)
    return targets.masked_fill(torch.arange(max_labels)[None] >= torch.tensor(target_lengths)[:, None], 0)


def gather_band(full: torch.Tensor, starts: torch.Tensor, width: int) -> torch.Tensor:
    """full (B, T, U+1, ...) -> (B, T, width, ...) at nodes (t, starts[t] + k)."""
    batch, frames = starts.shape
    rows = torch.arange(batch)[:, None, None]
    t = torch.arange(frames)[None, :, None]
    return full[rows, t, rp.band_positions(starts, width)]


def full_lattice_occupancy(logits, targets, logit_lengths, target_lengths):
    """Node occupancy (B, T, U+1) of the full lattice of ``logits`` (B, T, U+1, V)."""
    symbols = emitted_symbols(targets, target_lengths)
    batch, frames, nodes, _ = logits.shape
    lp = torch.gather(logits.log_softmax(-1), -1, symbols[:, None].expand(batch, frames, nodes, 2))
    blank, label = _mask_outside_lattice(lp[..., 0], lp[:, :, :-1, 1], logit_lengths, target_lengths)
    _, blank_occ, label_occ = rp.lattice_log_likelihood(blank, label, logit_lengths, target_lengths, occupancy=True)
    return blank_occ + torch.nn.functional.pad(label_occ, (0, 1))


def check_band_constraints(starts, logit_lengths, target_lengths, width):
    for b in range(starts.shape[0]):
        s, frames = starts[b], int(logit_lengths[b])
        top = max(int(target_lengths[b]) + 1 - width, 0)
        assert int(s[0]) == 0, "the start node must lie in the first band"
        assert int(s[frames - 1]) == top, "the final node must lie in the last band"
        steps = s[1:] - s[:-1]
        assert bool((steps >= 0).all()) and bool((steps <= width - 1).all()), f"bad steps {s.tolist()}"
        assert bool((s >= 0).all()) and bool((s <= top).all())
        assert bool((s[frames:] == top).all())


# ---------------------------------------------------------------------------
# 1. The simple loss


def test_simple_loss_equals_full_loss_of_the_additive_joint_value_gradient_and_occupancy():
    g = torch.Generator().manual_seed(0)
    logit_lengths, target_lengths = [9, 4, 7, 1, 6], [5, 3, 0, 2, 5]
    batch, frames, labels, vocab = 5, 9, 5, 7
    am = (2 * torch.randn(batch, frames, vocab, generator=g, dtype=F64)).requires_grad_(True)
    lm = (2 * torch.randn(batch, labels + 1, vocab, generator=g, dtype=F64)).requires_grad_(True)
    targets = random_targets(target_lengths, labels, vocab, g)
    ll, tl = torch.tensor(logit_lengths), torch.tensor(target_lengths)
    weights = torch.tensor([1.0, -0.5, 2.0, 0.25, 1.5], dtype=F64)  # a mix-up between sequences shows

    nll, occupancy = rp.simple_rnnt(am, lm, targets, ll, tl)
    reference = rnnt_loss(am[:, :, None, :] + lm[:, None, :, :], targets, ll, tl, reduction="none")
    torch.testing.assert_close(nll, reference, atol=1e-10, rtol=0)
    grads = torch.autograd.grad((nll * weights).sum(), (am, lm))
    reference_grads = torch.autograd.grad((reference * weights).sum(), (am, lm))
    for ours, ref in zip(grads, reference_grads):
        torch.testing.assert_close(ours, ref, atol=1e-10, rtol=0)

    # node occupancy: each path visits T_b + U_b nodes, at least one per frame, none outside the lattice
    per_frame = occupancy.sum(-1)
    for b, (n_frames, n_labels) in enumerate(zip(logit_lengths, target_lengths)):
        assert float(occupancy[b].sum()) == pytest.approx(n_frames + n_labels, abs=1e-9)
        assert bool((per_frame[b, :n_frames] >= 1 - 1e-9).all())
        assert float(occupancy[b, n_frames:].abs().sum()) == 0.0
        assert float(occupancy[b, :, n_labels + 1:].abs().sum()) == 0.0
    assert not occupancy.requires_grad


def test_simple_loss_stays_exact_where_the_exp_product_underflows_in_float32():
    # Logits of +-180: for most nodes the exp-product sum underflows in float32 and the exact
    # logsumexp fallback must take over (a clamp alone was 79 nats off here).
    g = torch.Generator().manual_seed(1)
    am = (60 * torch.randn(2, 6, 9, generator=g)).requires_grad_(True)
    lm = (60 * torch.randn(2, 4, 9, generator=g)).requires_grad_(True)
    targets = random_targets([3, 2], 3, 9, g)
    ll, tl = torch.tensor([6, 5]), torch.tensor([3, 2])
    product = ((am - am.amax(-1, keepdim=True)).exp() @ (lm - lm.amax(-1, keepdim=True)).exp().transpose(1, 2))
    assert int((product < torch.finfo(torch.float32).tiny ** 0.5).sum()) > 10  # the case is exercised
    nll, _ = rp.simple_rnnt(am, lm, targets, ll, tl)
    reference = rnnt_loss((am[:, :, None] + lm[:, None]).double(), targets, ll, tl, reduction="none")
    torch.testing.assert_close(nll.double(), reference, rtol=1e-6, atol=1e-3)
    grads = torch.autograd.grad(nll.sum(), (am, lm))
    reference_grads = torch.autograd.grad(reference.sum(), (am, lm))
    for ours, ref in zip(grads, reference_grads):
        torch.testing.assert_close(ours, ref, atol=1e-3, rtol=0)


# ---------------------------------------------------------------------------
# 2. The band bounds


@pytest.mark.parametrize("width", [2, 3, 5])
def test_prune_starts_keep_a_path_through_the_bands(width):
    g = torch.Generator().manual_seed(2)
    logit_lengths, target_lengths = [12, 5, 9, 3, 12, 2], [9, 5, 0, 3, 2, 2]  # U_b <= T_b (S-1): feasible
    ll, tl = torch.tensor(logit_lengths), torch.tensor(target_lengths)
    # spiky random occupancy: the raw per-frame argmax jumps about and must be repaired
    occupancy = torch.rand(6, 12, 10, generator=g, dtype=F64) ** 8
    starts = rp.prune_starts(occupancy, ll, tl, width)
    assert starts.dtype == torch.long and starts.shape == (6, 12)
    check_band_constraints(starts, ll, tl, width)


def test_prune_starts_take_the_window_with_most_occupancy_where_free_to():
    # one path, two labels at frame 2 and two at frame 5 (U = 4): occupancy 1 on its nodes
    path_u = {0: [0], 1: [0], 2: [0, 1, 2], 3: [2], 4: [2], 5: [2, 3, 4], 6: [4], 7: [4]}
    occupancy = torch.zeros(1, 8, 5, dtype=F64)
    for t, us in path_u.items():
        occupancy[0, t, us] = 1.0
    ll, tl = torch.tensor([8]), torch.tensor([4])
    starts = rp.prune_starts(occupancy, ll, tl, width=3)
    check_band_constraints(starts, ll, tl, 3)
    for t, us in path_u.items():
        assert int(starts[0, t]) <= min(us) and max(us) <= int(starts[0, t]) + 2, (t, starts.tolist())
    assert starts[0].tolist() == [0, 0, 0, 0, 0, 2, 2, 2]  # ties (frames 3, 4) go to the lowest start


# ---------------------------------------------------------------------------
# 3. The pruned lattice


def brute_force_band_nll(logits, targets, starts, width, blank=0):
    """-log sum over the alignments whose every node (t, u) has starts[t] <= u < starts[t] + width.

    logits (T, U+1, V) for one sequence (the full joint; only band nodes are read)."""
    log_probs = logits.log_softmax(-1)
    frames, labels = log_probs.shape[0], len(targets)

    def inside(t, u):
        return int(starts[t]) <= u < int(starts[t]) + width

    paths = []
    for label_slots in itertools.combinations(range(frames + labels - 1), labels):
        t = u = 0
        total, ok = log_probs.new_zeros(()), inside(0, 0)
        for step in range(frames + labels - 1):
            if step in label_slots:
                total = total + log_probs[t, u, targets[u]]
                u += 1
            else:
                total = total + log_probs[t, u, blank]
                t += 1
            ok = ok and inside(t, u)
        if ok:
            paths.append(total + log_probs[frames - 1, labels, blank])
    if not paths:
        return log_probs.new_tensor(math.inf)
    return -torch.logsumexp(torch.stack(paths), dim=0)


@pytest.mark.parametrize("width", [2, 3])
def test_pruned_loss_matches_enumeration_of_the_paths_inside_the_bands(width):
    g = torch.Generator().manual_seed(3)
    logit_lengths, target_lengths = [6, 4, 5, 3, 6], [4, 3, 1, 0, 2]
    batch, frames, labels, vocab = 5, 6, 4, 6
    full = torch.randn(batch, frames, labels + 1, vocab, generator=g, dtype=F64)
    targets = random_targets(target_lengths, labels, vocab, g)
    ll, tl = torch.tensor(logit_lengths), torch.tensor(target_lengths)
    starts = rp.prune_starts(torch.rand(batch, frames, labels + 1, generator=g, dtype=F64) ** 4, ll, tl, width)
    band = gather_band(full, starts, width).requires_grad_(True)
    nll = rp.pruned_rnnt(band, targets, starts, ll, tl)
    weights = torch.tensor([1.0, -0.5, 2.0, 0.25, 1.5], dtype=F64)
    (grad,) = torch.autograd.grad((nll * weights).sum(), band)

    full = full.clone().requires_grad_(True)
    reference = torch.stack([
        brute_force_band_nll(full[b, : ll[b]], targets[b, : tl[b]].tolist(), starts[b], width) for b in range(batch)
    ])
    (full_grad,) = torch.autograd.grad((reference * weights).sum(), full)
    torch.testing.assert_close(nll, reference, atol=1e-10, rtol=0)
    torch.testing.assert_close(grad, gather_band(full_grad, starts, width), atol=1e-10, rtol=0)
    # and nothing outside the bands gets any gradient in the enumeration either (no leak through them)
    outside = torch.ones_like(full_grad, dtype=torch.bool)
    outside[torch.arange(batch)[:, None, None], torch.arange(frames)[None, :, None],
            rp.band_positions(starts, width)] = False
    assert float(full_grad[outside].abs().max()) == 0.0
    assert torch.autograd.gradcheck(
        lambda z: rp.pruned_rnnt(z, targets[:2], starts[:2], ll[:2], tl[:2]).sum(), (band[:2].detach().requires_grad_(),)
    )


def make_joiner_inputs(seed, logit_lengths, target_lengths, labels, vocab=9, enc_dim=6, pred_dim=5):
    g = torch.Generator().manual_seed(seed)
    batch, frames = len(logit_lengths), max(logit_lengths)
    torch.manual_seed(seed)
    joiner = Joiner(enc_dim, pred_dim, dim=8, n_classes=vocab).double()
    enc = torch.randn(batch, frames, enc_dim, generator=g, dtype=F64).requires_grad_(True)
    pred = torch.randn(batch, labels + 1, pred_dim, generator=g, dtype=F64).requires_grad_(True)
    targets = random_targets(target_lengths, labels, vocab, g)
    return joiner, enc, pred, targets, torch.tensor(logit_lengths), torch.tensor(target_lengths)


@pytest.mark.parametrize("prune_range", [6, 7, 50])  # U + 1 = 6: a band as wide as the label axis, or wider
def test_wide_band_equals_full_loss_value_and_gradient_wrt_joiner_inputs(prune_range):
    joiner, enc, pred, targets, ll, tl = make_joiner_inputs(4, [8, 5, 7, 2], [5, 2, 0, 5], labels=5)
    width = rp.band_width(prune_range, targets.shape[1])
    assert width == 6
    starts = torch.zeros(4, 8, dtype=torch.long)  # what prune_starts must give here
    occupancy = torch.rand(4, 8, 6, dtype=F64)
    assert torch.equal(rp.prune_starts(occupancy, ll, tl, width), starts)
    weights = torch.tensor([1.0, -0.5, 2.0, 0.25], dtype=F64)
    pruned = rp.pruned_rnnt(joiner.band(enc, pred, starts, width), targets, starts, ll, tl)
    grads = torch.autograd.grad((pruned * weights).sum(), (enc, pred))
    full = rnnt_loss(joiner(enc, pred), targets, ll, tl, reduction="none")
    full_grads = torch.autograd.grad((full * weights).sum(), (enc, pred))
    torch.testing.assert_close(pruned, full, atol=1e-6, rtol=0)
    for ours, ref in zip(grads, full_grads):
        torch.testing.assert_close(ours, ref, atol=1e-6, rtol=0)
    assert float((pruned - full).detach().abs().max()) < 1e-12  # in fact the same sums


def test_band_of_the_joiner_is_the_full_joint_at_those_nodes():
    joiner, enc, pred, targets, ll, tl = make_joiner_inputs(5, [7, 7], [6, 4], labels=6)
    starts = torch.tensor([[0, 0, 1, 2, 2, 3, 4], [0, 1, 1, 1, 2, 2, 2]])
    torch.testing.assert_close(joiner.band(enc, pred, starts, 3), gather_band(joiner(enc, pred), starts, 3),
                               atol=1e-12, rtol=0)


def test_narrow_band_is_an_upper_bound_of_the_full_loss():
    # The pruned lattice keeps a subset of the full lattice's paths with the same transition
    # probabilities on them, so P_pruned <= P_full: -log P_pruned >= -log P_full, whatever the bands.
    torch.manual_seed(6)
    lengths = ([30, 22, 17, 30, 9, 25], [12, 12, 3, 7, 8, 0])
    head = RNNTHead(8, 6, 1, 10, n_classes=9, loss="pruned", prune_range=4).double()
    g = torch.Generator().manual_seed(6)
    enc = torch.randn(6, 30, 8, generator=g, dtype=F64)
    targets = random_targets(lengths[1], 12, 9, g)
    ll, tl = torch.tensor(lengths[0]), torch.tensor(lengths[1])
    with torch.no_grad():
        out = head.pruned_losses(enc, targets, ll)
        full = rnnt_loss(head(enc, targets), targets, ll, tl, reduction="none")
    gap = out["rnnt_pruned_nll"] - full
    assert bool((gap >= -1e-9).all()), gap
    assert bool((gap[tl + 1 > 4] > 1e-3).all())  # the bands do cut paths away ...
    assert bool((gap[tl + 1 <= 4].abs() < 1e-9).all())  # ... except where the band holds the whole label axis
    check_band_constraints(out["rnnt_prune_starts"], ll, tl, 4)


def test_bands_from_a_concentrated_posterior_lose_almost_nothing():
    # A joint that prefers one alignment (at most 2 labels a frame) by a margin: its node occupancy
    # placed in prune_starts gives bands that hold nearly all the probability; bands placed anywhere
    # else (still valid) lose a lot. Bounds from a wrong place would fail the first check.
    g = torch.Generator().manual_seed(7)
    frames, labels, vocab, width = 20, 10, 8, 3
    ll, tl = torch.tensor([frames, frames]), torch.tensor([labels, labels])
    targets = random_targets([labels, labels], labels, vocab, g)
    full = torch.randn(2, frames, labels + 1, vocab, generator=g, dtype=F64)
    pool = [t for t in range(frames) for _ in range(2)]  # at most 2 labels a frame: a width-3 band holds the path
    emit_frames = [sorted(pool[i] for i in torch.randperm(len(pool), generator=g)[:labels].tolist()) for _ in range(2)]
    assert any(e.count(t) == 2 for e in emit_frames for t in range(frames))
    for b in range(2):
        u = 0
        for t in range(frames):
            while u < labels and emit_frames[b][u] == t:
                full[b, t, u, targets[b, u]] += 8.0
                u += 1
            full[b, t, u, 0] += 8.0  # then blank
    full_nll = rnnt_loss(full, targets, ll, tl, reduction="none")
    starts = rp.prune_starts(full_lattice_occupancy(full, targets, ll, tl), ll, tl, width)
    pruned = rp.pruned_rnnt(gather_band(full, starts, width), targets, starts, ll, tl)
    assert bool((pruned >= full_nll - 1e-12).all())
    assert float((pruned - full_nll).max()) < 1e-3, (pruned - full_nll)
    elsewhere = rp.prune_starts(torch.rand(2, frames, labels + 1, generator=g, dtype=F64), ll, tl, width)
    assert not torch.equal(elsewhere, starts)
    other = rp.pruned_rnnt(gather_band(full, elsewhere, width), targets, elsewhere, ll, tl)
    assert float((other - full_nll).min()) > 1.0


def test_training_on_simple_plus_pruned_trains_the_full_model():
    # Only simple + pruned losses are minimised; the full loss (never computed in training) falls with
    # them and ends within a few thousandths of a nat of the pruned one (which bounds it from above).
    torch.manual_seed(8)
    head = RNNTHead(12, 12, 1, 12, n_classes=10, loss="pruned", prune_range=3).double()
    g = torch.Generator().manual_seed(8)
    ll, tl = torch.tensor([20, 16, 12, 8]), torch.tensor([7, 6, 5, 2])
    targets = random_targets(tl.tolist(), 7, 10, g)
    enc = torch.nn.Parameter(torch.randn(4, 20, 12, generator=g, dtype=F64))
    opt = torch.optim.Adam([*head.parameters(), enc], lr=0.03)

    def full_nll():
        with torch.no_grad():
            return rnnt_loss(head(enc, targets), targets, ll, tl, reduction="none")

    before = full_nll()
    for _ in range(100):
        out = head.pruned_losses(enc, targets, ll)
        loss = (0.5 * out["rnnt_simple_nll"] + out["rnnt_pruned_nll"]).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = full_nll()
    with torch.no_grad():
        pruned = head.pruned_losses(enc, targets, ll)["rnnt_pruned_nll"]
    assert float(after.sum()) < 0.05 * float(before.sum())
    assert bool((pruned >= after - 1e-12).all())
    assert float((pruned - after).max()) < 0.02, (pruned, after)


def test_padding_frames_and_labels_do_not_change_a_sequence():
    torch.manual_seed(9)
    head = RNNTHead(6, 5, 1, 8, n_classes=9, loss="pruned", prune_range=3).double()
    g = torch.Generator().manual_seed(9)
    ll, tl = torch.tensor([11, 6, 8]), torch.tensor([6, 2, 4])
    enc = torch.randn(3, 11, 6, generator=g, dtype=F64)
    targets = random_targets(tl.tolist(), 6, 9, g)
    batched = head.pruned_losses(enc, targets, ll)
    garbage = enc.clone()
    for b in range(3):
        garbage[b, ll[b]:] = 100 * torch.randn(11 - int(ll[b]), 6, generator=g, dtype=F64)
    with_garbage = head.pruned_losses(garbage, targets, ll)
    for key in ("rnnt_simple_nll", "rnnt_pruned_nll", "rnnt_prune_starts"):
        torch.testing.assert_close(with_garbage[key], batched[key], atol=1e-12, rtol=0)
    for b in range(3):
        alone = head.pruned_losses(enc[b:b + 1, : ll[b]], targets[b:b + 1, : tl[b]], ll[b:b + 1])
        for key in ("rnnt_simple_nll", "rnnt_pruned_nll"):
            torch.testing.assert_close(alone[key][0], batched[key][b], atol=1e-10, rtol=0)
        if int(tl[b]) + 1 >= 3:  # the same band width alone and in the batch: the same bands
            assert alone["rnnt_prune_starts"][0].tolist() == batched["rnnt_prune_starts"][b, : ll[b]].tolist()
    assert batched["rnnt_target_lengths"].tolist() == tl.tolist()
    # a batch with no labels at all (trim_targets gives (B, 0)): a one-position band, the full loss
    empty = torch.zeros(3, 0, dtype=torch.long)
    out = head.pruned_losses(enc, empty, ll)
    with torch.no_grad():
        reference = rnnt_loss(head(enc, empty), empty, ll, torch.zeros(3, dtype=torch.long), reduction="none")
    torch.testing.assert_close(out["rnnt_pruned_nll"], reference, atol=1e-12, rtol=0)


def test_too_many_labels_for_the_band_is_inf_not_nan_and_bad_inputs_raise():
    g = torch.Generator().manual_seed(10)
    # width 2 allows one label a frame: 3 frames hold 3 labels, not 4
    targets = random_targets([4, 3], 4, 5, g)
    ll, tl = torch.tensor([3, 3]), torch.tensor([4, 3])
    starts = rp.prune_starts(torch.rand(2, 3, 5, generator=g, dtype=F64), ll, tl, 2)
    nll = rp.pruned_rnnt(torch.randn(2, 3, 2, 5, generator=g, dtype=F64), targets, starts, ll, tl)
    assert math.isinf(float(nll[0])) and nll[0] > 0 and math.isfinite(float(nll[1]))
    with pytest.raises(ValueError, match="prune_range must be >= 2"):
        rp.band_width(1, 10)
    with pytest.raises(ValueError, match="blank index"):
        rp.simple_rnnt(torch.randn(1, 4, 5), torch.randn(1, 3, 5), torch.tensor([[2, 0]]), torch.tensor([4]),
                       torch.tensor([2]))
    with pytest.raises(ValueError, match="band starts"):
        rp.pruned_rnnt(torch.randn(1, 3, 2, 5), torch.tensor([[1, 2]]), torch.tensor([[0, 1, 2]]),
                       torch.tensor([3]), torch.tensor([2]))
    with pytest.raises(ValueError, match="rnnt_loss must be one of"):
        RNNTHead(4, loss="pruned_typo")
    with pytest.raises(ValueError, match="prune_range"):
        RNNTHead(4, loss="pruned", prune_range=1)
    assert rp.infer_target_lengths(torch.tensor([[3, 4, 0], [0, 0, 0], [1, 0, 2]])).tolist() == [2, 0, 3]


# ---------------------------------------------------------------------------
# 4. Memory


class LiveTensorBytes(TorchDispatchMode):
    """Bytes of tensor storage created inside the mode and still alive: ``peak`` over the run."""

    def __init__(self):
        super().__init__()
        self.live = self.peak = self.largest = 0
        self._seen: set[int] = set()

    def _free(self, key: int, nbytes: int) -> None:
        self.live -= nbytes
        self._seen.discard(key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                if id(storage) not in self._seen:
                    self._seen.add(id(storage))
                    self.live += storage.nbytes()
                    self.largest = max(self.largest, storage.nbytes())
                    weakref.finalize(storage, self._free, id(storage), storage.nbytes())
        self.peak = max(self.peak, self.live)
        return out


def test_live_tensor_bytes_counts_what_it_should():
    with LiveTensorBytes() as meter:
        a = torch.zeros(1000)
        b = torch.ones(500)
        del a
        c = b.view(5, 100) * 2  # a view is no new storage; the product is
    assert (meter.peak, meter.live, meter.largest) == (6000, 4000, 4000)
    del b, c


def test_pruned_peak_memory_is_far_below_the_full_loss():
    batch, frames, labels, hidden, vocab, width = 8, 200, 60, 128, 41, 5
    torch.manual_seed(11)
    head = RNNTHead(128, 128, 1, hidden, vocab, loss="pruned", prune_range=width)
    g = torch.Generator().manual_seed(11)
    enc = torch.randn(batch, frames, 128, generator=g).requires_grad_(True)
    targets = torch.randint(1, vocab, (batch, labels), generator=g)
    ll, tl = torch.full((batch,), frames), torch.full((batch,), labels)
    peaks = {}
    for name in ("full", "pruned"):
        with LiveTensorBytes() as meter:
            if name == "full":
                loss = rnnt_loss(head(enc, targets), targets, ll, tl, reduction="sum")
            else:
                out = head.pruned_losses(enc, targets, ll)
                loss = 0.5 * out["rnnt_simple_nll"].sum() + out["rnnt_pruned_nll"].sum()
            loss.backward()
            del loss
        peaks[name] = (meter.peak, meter.largest)
        enc.grad = None
    full_hidden = batch * frames * (labels + 1) * hidden * 4  # one float32 joiner hidden layer: 50 MB
    band_hidden = batch * frames * width * hidden * 4  # 4 MB
    assert peaks["full"][0] > 2 * full_hidden  # (155 MB measured: hidden, tanh, logits, gradients)
    assert peaks["pruned"][1] <= band_hidden  # nothing bigger than one band hidden layer
    assert peaks["pruned"][0] < peaks["full"][0] / 5  # (21 MB measured)
    assert peaks["pruned"][0] < full_hidden / 2


# ---------------------------------------------------------------------------
# 5. In the model and compute_losses


def tiny_model(**overrides) -> ModeSSM:
    base = dict(
        n_days=2, n_channels=256, num_channels=256, d_model=32, n_layers=1, d_state=8, head_dim=16,
        chunk_size=16, dropout=0.0, input_dropout=0.0, mode_hidden=16, flow_hidden=32,
        predictor_dim=16, joiner_dim=16, use_cuda_kernel=False,
    )  # fmt: skip
    base.update(overrides)
    return ModeSSM(ModeSSMConfig(**base))


def make_model_batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([80, 64, 48])
    features = torch.randn(3, 80, 256, generator=g)
    for i, n in enumerate(lengths.tolist()):
        features[i, n:] = 0
    phoneme_lengths = torch.tensor([5, 3, 7])
    phoneme_ids = torch.zeros(3, 12, dtype=torch.long)
    for i, n in enumerate(phoneme_lengths.tolist()):
        phoneme_ids[i, :n] = torch.randint(1, 41, (n,), generator=g)
    return dict(features=features, feature_lengths=lengths, phoneme_ids=phoneme_ids,
                phoneme_lengths=phoneme_lengths, day_index=torch.tensor([0, 1, 1]))


def run(model, batch):
    targets = trim_targets(batch["phoneme_ids"], batch["phoneme_lengths"])
    return model(batch["features"], batch["feature_lengths"], batch["day_index"], rnnt_targets=targets)


def test_model_with_pruned_loss_trains_every_rnnt_parameter():
    torch.manual_seed(12)
    model = tiny_model(rnnt_loss="pruned", rnnt_prune_range=3, rnnt_simple_loss_scale=0.25,
                       rnnt_pruned_loss_scale=2.0)
    batch = make_model_batch()
    out = run(model, batch)
    assert "rnnt_joint" not in out and out["rnnt_pruned_nll"].shape == (3,)
    losses = compute_losses(model, batch, out, {"ctc": 1.0, "rnnt": 1.0})
    expected = (0.25 * out["rnnt_simple_nll"].sum() + 2.0 * out["rnnt_pruned_nll"].sum()) / 15
    torch.testing.assert_close(losses["rnnt"], expected)
    assert losses["nonfinite"] == []
    losses["rnnt"].backward()
    names = [n for n, p in model.rnnt.named_parameters() if p.grad is None or not bool(p.grad.abs().sum() > 0)]
    assert names == [] and {"simple_enc.weight", "simple_pred.weight"} <= dict(model.rnnt.named_parameters()).keys()
    assert not hasattr(tiny_model().rnnt, "simple_enc")  # the full loss builds no simple joint


def test_model_pruned_with_a_wide_band_gives_the_full_loss():
    torch.manual_seed(13)
    pruned = tiny_model(rnnt_loss="pruned", rnnt_prune_range=50, rnnt_simple_loss_scale=0.0).eval()
    full = tiny_model().eval()
    missing, unexpected = full.load_state_dict(pruned.state_dict(), strict=False)
    assert missing == [] and sorted(unexpected) == ["rnnt.simple_enc.bias", "rnnt.simple_enc.weight",
                                                    "rnnt.simple_pred.weight"]
    batch = make_model_batch(1)
    ours = compute_losses(pruned, batch, run(pruned, batch), {"rnnt": 1.0})["rnnt"]
    reference = compute_losses(full, batch, run(full, batch), {"rnnt": 1.0})["rnnt"]
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-6)


def test_pruned_losses_under_cpu_autocast_and_length_mismatch():
    torch.manual_seed(14)
    model = tiny_model(rnnt_loss="pruned").eval()
    batch = make_model_batch(2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = run(model, batch)
    assert out["rnnt_pruned_nll"].dtype == torch.float32 and bool(torch.isfinite(out["rnnt_pruned_nll"]).all())
    wrong = {**batch, "phoneme_lengths": batch["phoneme_lengths"] + torch.tensor([0, 1, 0])}
    with pytest.raises(ValueError, match="target lengths"):
        compute_losses(model, wrong, out, {"rnnt": 1.0})
