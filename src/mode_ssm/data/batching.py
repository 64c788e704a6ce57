"""Batches of T15 trials: zero-padded collation and length-bucketed, shardable, resumable sampling."""

from __future__ import annotations

import math
from typing import Iterator, Sequence

import numpy as np
import torch

from mode_ssm.data.t15 import TrialExample, speaking_mode_id


def collate_trials(examples: Sequence[TrialExample]) -> dict[str, object]:
    """Stack trials into one zero-padded batch.

    Returns:
        features: (B, T_max, C) float32, zero after each trial's length
        feature_lengths: (B,) int64
        phoneme_ids: (B, U_max) int64, zero-padded; (B, 0) when no trial has labels (test)
        phoneme_lengths: (B,) int64, 0 for unlabelled trials
        day_index: (B,) int64
        day_index_exact: (B,) bool, False where the session was unseen and mapped to an earlier day
        speaking_mode: (B,) int64, 0 vocalized, 1 silent, -1 unknown
        sessions, block_nums, trial_nums, sentences, corpora, sources, flags: lists of length B
        (``flags``: the training rules each trial breaks, kept under the reader's ``rules="eval"``)
    """
    if not examples:
        raise ValueError("collate_trials got an empty list of trials")
    widths = {ex.features.shape[1] for ex in examples}
    if len(widths) != 1:
        raise ValueError(f"trials in one batch have different feature widths {sorted(widths)}: "
                         + ", ".join(ex.source for ex in examples[:4]))
    batch_size = len(examples)
    feature_lengths = torch.tensor([ex.features.shape[0] for ex in examples], dtype=torch.int64)
    features = torch.zeros(batch_size, int(feature_lengths.max()), widths.pop(), dtype=torch.float32)
    for b, ex in enumerate(examples):
        features[b, : ex.features.shape[0]] = torch.from_numpy(np.asarray(ex.features, dtype=np.float32))

    phoneme_lengths = torch.tensor(
        [0 if ex.phoneme_ids is None else len(ex.phoneme_ids) for ex in examples], dtype=torch.int64
    )
    phoneme_ids = torch.zeros(batch_size, int(phoneme_lengths.max()), dtype=torch.int64)
    for b, ex in enumerate(examples):
        if ex.phoneme_ids is not None:
            phoneme_ids[b, : len(ex.phoneme_ids)] = torch.from_numpy(np.asarray(ex.phoneme_ids, dtype=np.int64))

    return {
        "features": features,
        "feature_lengths": feature_lengths,
        "phoneme_ids": phoneme_ids,
        "phoneme_lengths": phoneme_lengths,
        "day_index": torch.tensor([ex.day_index for ex in examples], dtype=torch.int64),
        "day_index_exact": torch.tensor([ex.day_index_exact for ex in examples], dtype=torch.bool),
        "speaking_mode": torch.tensor([speaking_mode_id(ex.speaking_mode) for ex in examples], dtype=torch.int64),
        "sessions": [ex.session for ex in examples],
        "block_nums": [ex.block_num for ex in examples],
        "trial_nums": [ex.trial_num for ex in examples],
        "sentences": [ex.sentence for ex in examples],
        "corpora": [ex.corpus for ex in examples],
        "sources": [ex.source for ex in examples],
        "flags": [tuple(ex.flags) for ex in examples],
    }


class LengthBucketSampler:
    """Batch sampler: batches of trials of similar length, so little of each batch is padding.

    With ``shuffle=True`` each epoch draws a permutation from ``(seed, epoch)``,
    cuts it into pools of ``batch_size * pool_batches`` trials, sorts each pool
    by length and cuts it into batches, then shuffles the batch order. The same
    seed and epoch give the same batches on every machine.

    ``group_batches`` consecutive batches of a pool (neighbours in length) stay together
    through the shuffle: the trainer passes ranks x accumulation steps, so the micro-batches
    of one optimizer step have similar lengths and no rank waits long for another at the
    gradient all-reduce (with random pairs the longer batch of each step sets its pace).
    With 1 (one process, no accumulation) the batches are shuffled one by one.

    Sharding works like ``DistributedSampler``: rank ``r`` of ``num_replicas``
    takes every ``num_replicas``-th batch; every rank gets the same number of
    batches (with ``drop_last=False`` a few batches are repeated to even them
    out), since a rank that runs out early would hang the others.

    Resume mid-epoch with ``set_epoch(epoch, start_batch=k)``: this rank's
    first ``k`` batches of that epoch are skipped.

    Use as ``DataLoader(ds, batch_sampler=sampler, collate_fn=collate_trials)``.
    """

    def __init__(
        self,
        lengths: Sequence[int] | np.ndarray,
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        drop_last: bool = False,
        pool_batches: int = 50,
        group_batches: int = 1,
    ):
        self.lengths = np.asarray(lengths, dtype=np.int64)
        if self.lengths.ndim != 1 or len(self.lengths) == 0:
            raise ValueError(f"lengths must be a non-empty 1-D sequence, got shape {self.lengths.shape}")
        if batch_size < 1 or pool_batches < 1 or group_batches < 1:
            raise ValueError(f"batch_size, pool_batches and group_batches must be >= 1, got {batch_size}, "
                             f"{pool_batches}, {group_batches}")
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is not in 0..{num_replicas - 1}")
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.drop_last = drop_last
        self.pool_batches = pool_batches
        self.group_batches = group_batches
        self.epoch = 0
        self.start_batch = 0
        n_batches = len(self.lengths) // batch_size if drop_last else math.ceil(len(self.lengths) / batch_size)
        self.batches_per_rank = n_batches // num_replicas if drop_last else math.ceil(n_batches / num_replicas)
        if self.batches_per_rank == 0:
            raise ValueError(
                f"{len(self.lengths)} trials make fewer than one batch of {batch_size} "
                f"per rank for {num_replicas} rank(s)"
            )

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Choose the epoch's shuffle; ``start_batch`` skips this rank's first batches (resume)."""
        if not 0 <= start_batch <= self.batches_per_rank:
            raise ValueError(f"start_batch {start_batch} is not in 0..{self.batches_per_rank}")
        self.epoch = epoch
        self.start_batch = start_batch

    def epoch_batches(self) -> list[list[int]]:
        """Every batch of the current epoch before sharding: each trial exactly once (drop_last aside).

        Evaluation can shard these itself to avoid the few repeated batches that even out ranks.
        """
        n = len(self.lengths)
        if self.shuffle:
            rng = np.random.default_rng([self.seed, self.epoch])
            order = rng.permutation(n)
            pool = self.batch_size * self.pool_batches
            # stable sort keeps the random order among equal lengths
            pools = np.split(order, range(pool, n, pool))
            order = np.concatenate([p[np.argsort(self.lengths[p], kind="stable")] for p in pools])
        else:
            order = np.argsort(self.lengths, kind="stable")
        batches = [order[i : i + self.batch_size].tolist() for i in range(0, n, self.batch_size)]
        if self.drop_last and len(batches[-1]) < self.batch_size:
            batches.pop()
        if self.shuffle:
            g = self.group_batches
            whole = len(batches) // g * g  # a last group shorter than g stays last, or it would shift the rest
            groups = [batches[i : i + g] for i in range(0, whole, g)]
            batches = [b for i in rng.permutation(len(groups)) for b in groups[i]] + batches[whole:]
        return batches

    def rank_batches(self) -> list[list[int]]:
        """All of this rank's batches for the current epoch, before ``start_batch`` is applied."""
        batches = self.epoch_batches()
        total = self.batches_per_rank * self.num_replicas
        batches = [batches[i % len(batches)] for i in range(total)]  # repeat a few to even out the ranks
        return batches[self.rank :: self.num_replicas]


    def __iter__(self) -> Iterator[list[int]]:
        yield from self.rank_batches()[self.start_batch :]

    def __len__(self) -> int:
        return self.batches_per_rank - self.start_batch
