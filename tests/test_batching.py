"""Collation, length-bucketed sampling (determinism, sharding, resume) and augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import convolve1d

from mode_ssm.data.augment import (
    AugmentConfig,
    Augmenter,
    add_constant_offset,
    add_white_noise,
    gaussian_kernel,
    gaussian_smooth,
    length_mask,
    random_time_cut,
    time_mask,
)
from mode_ssm.data.batching import LengthBucketSampler, collate_trials
from mode_ssm.data.t15 import TrialExample

torch.set_num_threads(1)


def _example(steps: int, labels: list[int] | None, mode: str | None, channels: int = 8, seed: int = 0) -> TrialExample:
    rng = np.random.default_rng(seed)
    return TrialExample(
        features=rng.standard_normal((steps, channels)).astype(np.float32),
        phoneme_ids=None if labels is None else np.array(labels, dtype=np.int64),
        sentence=None if labels is None else "a b",
        session="t15.2023.08.11",
        day_index=seed,
        day_index_exact=seed != 2,
        block_num=3,
        trial_num=seed,
        corpus="Harvard",
        speaking_mode=mode,
        split="train" if labels is not None else "test",
        source=f"x.hdf5:trial_{seed:04d}",
    )


# -- collation -------------------------------------------------------------


def test_collate_pads_with_zeros_and_maps_speaking_mode():
    examples = [_example(5, [1, 2, 40], "vocalized", seed=0), _example(9, [7, 40], "silent", seed=1),
                _example(3, [3, 3, 3, 40], None, seed=2)]  # fmt: skip
    batch = collate_trials(examples)
    assert batch["features"].shape == (3, 9, 8) and batch["features"].dtype == torch.float32
    assert batch["feature_lengths"].tolist() == [5, 9, 3]
    for b, ex in enumerate(examples):
        n = ex.features.shape[0]
        assert torch.equal(batch["features"][b, :n], torch.from_numpy(ex.features))
        assert not batch["features"][b, n:].any()
    assert batch["phoneme_ids"].tolist() == [[1, 2, 40, 0], [7, 40, 0, 0], [3, 3, 3, 40]]
    assert batch["phoneme_lengths"].tolist() == [3, 2, 4]
    assert batch["day_index"].tolist() == [0, 1, 2] and batch["day_index_exact"].tolist() == [True, True, False]
    assert batch["speaking_mode"].tolist() == [0, 1, -1]
    assert batch["trial_nums"] == [0, 1, 2] and batch["corpora"] == ["Harvard"] * 3


def test_collate_test_trials_have_zero_width_labels():
    batch = collate_trials([_example(4, None, None, seed=0), _example(6, None, None, seed=1)])
    assert batch["phoneme_ids"].shape == (2, 0) and batch["phoneme_lengths"].tolist() == [0, 0]
    assert batch["sentences"] == [None, None]


# -- length-bucketed sampling -----------------------------------------------

LENGTHS = np.random.default_rng(0).integers(50, 1500, size=203)


def test_bucket_sampler_is_deterministic_and_covers_every_trial_once():
    a = LengthBucketSampler(LENGTHS, batch_size=8, seed=3, pool_batches=5)
    b = LengthBucketSampler(LENGTHS, batch_size=8, seed=3, pool_batches=5)
    first = list(a)
    assert first == list(b) == list(a)  # same seed and epoch: same batches, however often iterated
    assert len(first) == len(a) == 26  # ceil(203 / 8)
    assert sorted(i for batch in first for i in batch) == list(range(203))
    assert a.epoch_batches() == first  # one replica: the epoch's batches are this rank's
    a.set_epoch(1)
    assert list(a) != first
    assert list(LengthBucketSampler(LENGTHS, batch_size=8, seed=4, pool_batches=5)) != first


def test_bucket_sampler_batches_are_length_homogeneous():
    sampler = LengthBucketSampler(LENGTHS, batch_size=8, seed=0, pool_batches=5)
    padding = sum(int((LENGTHS[batch].max() - LENGTHS[batch]).sum()) for batch in sampler)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(LENGTHS))
    random_padding = sum(int((LENGTHS[c].max() - LENGTHS[c]).sum()) for c in np.array_split(order, 26))
    # pools of 40 sorted trials: 25,829 padded bins against 112,249 for random batches of 8 (numpy 2)
    assert padding < random_padding / 3


def test_bucket_sampler_sharding_gives_equal_disjoint_shares():
    shards = [LengthBucketSampler(LENGTHS, batch_size=8, seed=1, num_replicas=3, rank=r) for r in range(3)]
    batches = [list(s) for s in shards]
    assert [len(b) for b in batches] == [len(s) for s in shards] == [9, 9, 9]  # 26 batches padded to 27
    seen = [i for rank in batches for batch in rank for i in batch]
    assert set(seen) == set(range(203))
    assert len(seen) - 203 == len(list(LengthBucketSampler(LENGTHS, 8, seed=1))[0])  # one batch repeated
    dropped = [list(LengthBucketSampler(LENGTHS, 8, seed=1, num_replicas=3, rank=r, drop_last=True)) for r in range(3)]
    assert [len(b) for b in dropped] == [8, 8, 8]  # 25 full batches -> 24
    flat = [i for rank in dropped for batch in rank for i in batch]
    assert len(flat) == len(set(flat)) == 24 * 8 and all(len(batch) == 8 for rank in dropped for batch in rank)


def test_bucket_sampler_groups_keep_one_steps_micro_batches_of_similar_length():
    lengths = np.random.default_rng(0).integers(100, 1500, 1412)  # 177 batches of 8: one left over
    def step_imbalance(group: int) -> float:
        ranks = [list(LengthBucketSampler(lengths, 8, seed=1, num_replicas=2, rank=r, group_batches=group))
                 for r in range(2)]
        longest = np.array([[lengths[b].max() for b in rank] for rank in ranks], dtype=float)
        return float(longest.max(0).sum() / longest.mean(0).sum())  # the slower rank sets each step's pace
    assert step_imbalance(1) > 1.2  # random pairs: 1.255 here
    assert step_imbalance(2) < 1.04  # neighbours in a sorted pool: 1.027
    grouped = LengthBucketSampler(lengths, 8, seed=1, group_batches=2).epoch_batches()
    assert sorted(i for b in grouped for i in b) == list(range(1412))
    assert len(grouped[-1]) == 1412 - 176 * 8  # the one left over stays last instead of shifting the pairs
    with pytest.raises(ValueError, match="group_batches"):
        LengthBucketSampler(lengths, 8, group_batches=0)


def test_bucket_sampler_resumes_mid_epoch():
    sampler = LengthBucketSampler(LENGTHS, batch_size=8, seed=5, num_replicas=2, rank=1)
    sampler.set_epoch(4)
    full = list(sampler)
    sampler.set_epoch(4, start_batch=5)
    assert list(sampler) == full[5:] and len(sampler) == len(full) - 5
    with pytest.raises(ValueError, match="start_batch"):
        sampler.set_epoch(4, start_batch=len(full) + 1)


def test_bucket_sampler_without_shuffle_is_sorted():
    batches = list(LengthBucketSampler(LENGTHS, batch_size=10, shuffle=False))
    by_length = sorted(range(len(LENGTHS)), key=lambda i: (LENGTHS[i], i))  # ties keep index order
    assert batches == [by_length[i : i + 10] for i in range(0, 203, 10)]  # 20 full batches and one of 3


# -- augmentation -----------------------------------------------------------


def _padded_batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([40, 25, 7, 33])
    features = torch.randn(4, 40, 16, generator=g) * length_mask(lengths, 40)[..., None]
    return features, lengths


def _padding_is_zero(features: torch.Tensor, lengths: torch.Tensor) -> bool:
    return not (features * ~length_mask(lengths, features.shape[1])[..., None]).any()


def test_noise_and_offset_respect_padding_and_are_seeded():
    x, lengths = _padded_batch()
    noisy = add_white_noise(x, lengths, 0.5, torch.Generator().manual_seed(1))
    assert _padding_is_zero(noisy, lengths)
    assert torch.equal(noisy, add_white_noise(x, lengths, 0.5, torch.Generator().manual_seed(1)))
    assert not torch.equal(noisy, add_white_noise(x, lengths, 0.5, torch.Generator().manual_seed(2)))
    inside = length_mask(lengths, 40)
    assert abs(float((noisy - x)[inside].std()) - 0.5) < 0.02  # 1680 values: std error about 0.009

    shifted = add_constant_offset(x, lengths, 0.2, torch.Generator().manual_seed(1))
    assert _padding_is_zero(shifted, lengths)
    delta = shifted - x
    for b, n in enumerate(lengths.tolist()):
        assert torch.allclose(delta[b, :n], delta[b, :1].expand(n, -1))  # one offset per channel, held over time
    assert not torch.allclose(delta[0, 0], delta[1, 0])  # a different offset per trial
    assert abs(float(delta[:, 0].std()) - 0.2) < 0.06  # 64 offsets: std error about 0.018


def test_random_cut_shifts_each_trial_and_respects_min_lengths():
    x, lengths = _padded_batch()
    out, new_lengths = random_time_cut(
        x, lengths, 5, torch.Generator().manual_seed(1), min_lengths=torch.tensor([1, 1, 6, 1])
    )
    cuts = (lengths - new_lengths).tolist()
    assert all(0 <= c <= 5 for c in cuts) and cuts[2] <= 1 and len(set(cuts)) > 1
    assert out.shape[1] == int(new_lengths.max())
    for b, c in enumerate(cuts):
        assert torch.equal(out[b, : new_lengths[b]], x[b, c : lengths[b]])
    assert _padding_is_zero(out, new_lengths)


def test_gaussian_smoothing_matches_baseline_kernel_and_trial_alone():
    kernel = gaussian_kernel(2.0, 100)
    assert len(kernel) == 9 and abs(float(kernel.sum()) - 1) < 1e-6 and int(kernel.argmax()) == 4
    x, lengths = _padded_batch()
    smooth = gaussian_smooth(x, lengths, 2.0)
    assert _padding_is_zero(smooth, lengths)
    for b, n in enumerate(lengths.tolist()):
        alone = convolve1d(x[b, :n].double().numpy(), kernel.double().numpy(), axis=0, mode="constant")
        np.testing.assert_allclose(smooth[b, :n].numpy(), alone, atol=1e-5)


def test_time_masks_zero_spans_inside_trials():
    x = torch.ones(3, 50, 4)
    lengths = torch.tensor([50, 30, 10])
    x = x * length_mask(lengths, 50)[..., None]
    out = time_mask(x, lengths, n_masks=2, max_width=6, generator=torch.Generator().manual_seed(0))
    zeroed = (out[..., 0] == 0) & length_mask(lengths, 50)
    assert _padding_is_zero(out, lengths)
    assert 0 < int(zeroed.sum()) <= 3 * 2 * 6
    assert torch.equal(out[..., 0:1].expand_as(out), out)  # a mask covers all channels of a bin


def test_augmenter_from_mapping_train_and_eval():
    config = {"white_noise_std": 1.0, "constant_offset_std": 0.2, "random_cut": 3, "smooth_std": 2.0,
              "time_masks": 2, "time_mask_max_width": 4}  # fmt: skip
    augment = Augmenter(config)
    assert augment.config == AugmentConfig(**config)
    x, lengths = _padded_batch()
    original = x.clone()
    a, la = augment(x, lengths, torch.Generator().manual_seed(9))
    b, lb = augment(x, lengths, torch.Generator().manual_seed(9))
    assert torch.equal(a, b) and torch.equal(la, lb) and _padding_is_zero(a, la)
    assert torch.equal(x, original)  # the caller's batch is not modified in place
    evaluated, le = augment(x, lengths, train=False)
    assert torch.equal(le, lengths) and torch.allclose(evaluated, gaussian_smooth(x, lengths, 2.0))
    with pytest.raises(ValueError, match="white_noise"):
        Augmenter({"white_nose_std": 1.0})


def test_training_augmentation_keeps_dead_electrodes_dead():
    """A channel stuck at a value reads 0 in training (no noise, no offset) and at evaluation alike."""
    x, lengths = _padded_batch()
    x[0, :, 2] = 0.7  # dead in trial 0 only
    x[:, :, 5] = -0.3  # dead in every trial
    augment = Augmenter({"white_noise_std": 1.0, "constant_offset_std": 0.5, "smooth_std": 2.0})
    a, la = augment(x, lengths, torch.Generator().manual_seed(3))
    inside = length_mask(la, a.shape[1])
    assert torch.count_nonzero(a[:, :, 5]) == 0 and torch.count_nonzero(a[0, :, 2]) == 0
    assert bool((a[1:, :, 2][inside[1:]] != 0).all())  # live elsewhere: augmented as usual
    assert bool((a[:, :, 0][inside] != 0).all())
    # evaluation sees the same: the smoothing's zero padding would otherwise ramp a stuck channel at the edges
    e, _ = augment(x, lengths, train=False)
    assert torch.count_nonzero(e[:, :, 5]) == 0 and torch.count_nonzero(e[0, :, 2]) == 0
    assert bool((e[1:, :, 2][length_mask(lengths, e.shape[1])[1:]] != 0).all())
