"""Block speaking-mode pseudo-labels recover planted modes; the mode head pools without padding effects."""

from __future__ import annotations

import math

import numpy as np
import torch

from mode_ssm.data.mode_labels import (
    SILENT,
    UNKNOWN,
    VOCALIZED,
    fit_block_modes,
    fit_gmm2,
    mode_targets_for_batch,
    pseudo_label_blocks,
    split_modes,
)
from mode_ssm.models.mode import ModeHead, RunningStandardizer, commit_running_statistics, rate_features

torch.set_num_threads(1)


def planted_blocks(
    seed: int, n_blocks: int = 40, zscore_per_block: bool = True, energy_ratio: float = 1.0, block_sd: float = 0.06,
    trial_sd: float = 0.15, silent_fraction: float = 0.5,
):
    """Synthetic trials with a planted mode per block.

    Vocalized ~30 words/min (about 25 bins per phoneme label), silent ~50 (about 15),
    with block-to-block (log-sd ``block_sd``) and trial-to-trial (log-sd ``trial_sd``) spread
    of the rate: at the defaults a threshold at the true midpoint labels ~99.8% of blocks right.
    Silent blocks' features are scaled by ``energy_ratio``; ``zscore_per_block``
    z-scores each block's features as the release does, leaving rate as the only cue.
    """
    rng = np.random.default_rng(seed)
    modes = rng.permutation((np.arange(n_blocks) < round(silent_fraction * n_blocks)).astype(int))
    keys, features, n_labels = [], [], []
    for b, mode in enumerate(modes):
        key = (f"t15.2024.01.{b // 4 + 1:02d}", b)
        block_rate = (15.0 if mode == SILENT else 25.0) * np.exp(rng.normal(0, block_sd))
        block_trials = []
        for _ in range(int(rng.integers(6, 13))):
            n = int(rng.integers(15, 45))
            t = max(20, int(n * block_rate * np.exp(rng.normal(0, trial_sd))))
            scale = energy_ratio if mode == SILENT else 1.0
            block_trials.append(rng.normal(0, scale * np.exp(rng.normal(0, 0.05)), (t, 32)).astype(np.float32))
            n_labels.append(n)
            keys.append(key)
        if zscore_per_block:
            stacked = np.concatenate(block_trials)
            mean, std = stacked.mean(0), stacked.std(0)
            block_trials = [(x - mean) / std for x in block_trials]
        features += block_trials
    truth = {(f"t15.2024.01.{b // 4 + 1:02d}", b): int(m) for b, m in enumerate(modes)}
    return keys, features, n_labels, truth


def accuracy(labels: dict, truth: dict) -> float:
    assert labels.keys() == truth.keys()
    return float(np.mean([labels[k][0] == truth[k] for k in truth]))


def test_recovers_planted_modes_from_speaking_rate():
    keys, features, n_labels, truth = planted_blocks(seed=0)
    labels = pseudo_label_blocks(keys, iter(features), n_labels)  # a generator is enough
    assert accuracy(labels, truth) >= 0.95
    confidences = np.array([c for _, c in labels.values()])
    assert confidences.min() >= 0.5 and np.median(confidences) > 0.9
    # the faster cluster is the silent one, not an arbitrary cluster index
    assert sum(label == SILENT for label, _ in labels.values()) == 20


def test_recovers_planted_modes_without_labels_from_energy():
    keys, features, _, truth = planted_blocks(seed=1, zscore_per_block=False, energy_ratio=0.7)
    labels = pseudo_label_blocks(keys, features, [None] * len(keys))
    assert accuracy(labels, truth) >= 0.95


def test_unlabelled_blocks_get_labels_from_neural_statistics():
    keys, features, n_labels, truth = planted_blocks(seed=2, zscore_per_block=False, energy_ratio=0.7)
    # two blocks of each mode lose their labels: the median rate they get says nothing, energy must decide
    unlabelled = {k for mode in (VOCALIZED, SILENT) for k in [k for k in truth if truth[k] == mode][:2]}
    n_labels = [None if k in unlabelled else n for k, n in zip(keys, n_labels)]
    labels = pseudo_label_blocks(keys, features, n_labels)
    assert accuracy(labels, truth) >= 0.95
    assert {k: labels[k][0] for k in unlabelled} == {k: truth[k] for k in unlabelled}


def test_ambiguous_block_gets_lower_confidence():
    """A block whose speaking rate lies halfway between the two clusters' is not labelled with confidence."""
    keys, features, n_labels, truth = planted_blocks(seed=2)
    log_rates = {m: [] for m in (VOCALIZED, SILENT)}
    for block, mode in truth.items():
        trials = [i for i, k in enumerate(keys) if k == block]
        log_rates[mode].append(np.log(sum(len(features[i]) for i in trials) / sum(n_labels[i] for i in trials)))
    midway = np.exp((np.mean(log_rates[VOCALIZED]) + np.mean(log_rates[SILENT])) / 2)  # ~19.4 bins per label
    rng = np.random.default_rng(2)
    frames = np.diff(np.linspace(0, round(8 * 30 * midway), 9).round().astype(int))  # 8 trials of 30 labels
    trials = [rng.normal(0, 1, (t, 32)) for t in frames]
    stacked = np.concatenate(trials)
    ambiguous = ("t15.2024.03.01", 0)
    keys += [ambiguous] * 8
    features += [((x - stacked.mean(0)) / stacked.std(0)).astype(np.float32) for x in trials]
    n_labels += [30] * 8
    labels = pseudo_label_blocks(keys, features, n_labels)
    clear = np.array([labels[k][1] for k in truth])
    assert accuracy({k: labels[k] for k in truth}, truth) >= 0.95
    # about 0.5-0.7 for the midway block (seeds 0-7), ~1.0 for the planted ones
    assert labels[ambiguous][1] < 0.75 and np.median(clear) > 0.99
    assert labels[ambiguous][1] < np.median(clear) - 0.25


def test_fit_gmm2_recovers_two_gaussians():
    rng = np.random.default_rng(3)
    a = rng.normal([0, 0], [1.0, 0.3], (150, 2))
    b = rng.normal([4, 1], [1.0, 0.3], (50, 2))
    weights, means, cov, resp, _ = fit_gmm2(np.concatenate([a, b]), seed=0, trim=0.0)
    big = int(np.argmax(weights))
    assert abs(weights[big] - 0.75) < 0.03
    np.testing.assert_allclose(means[big], [0, 0], atol=0.2)
    np.testing.assert_allclose(means[1 - big], [4, 1], atol=0.2)
    np.testing.assert_allclose(np.sqrt(np.diag(cov[0])), [1.0, 0.3], atol=0.1)
    np.testing.assert_allclose(cov[0], cov[1])  # tied
    assert (resp[:150, big] > 0.5).mean() > 0.95 and (resp[150:, big] < 0.5).mean() > 0.95


def test_a_few_outlying_blocks_do_not_break_the_split():
    keys, features, n_labels, truth = planted_blocks(seed=6)
    rng = np.random.default_rng(6)
    for b in range(2):  # two very slow vocalized blocks (e.g. a participant having a hard day)
        key = ("t15.2024.02.01", b)
        truth[key] = VOCALIZED
        for _ in range(8):
            keys.append(key)
            n_labels.append(20)
            features.append(rng.normal(0, 1, (20 * 90, 32)).astype(np.float32))
    labels = pseudo_label_blocks(keys, features, n_labels)
    assert accuracy(labels, truth) >= 0.95


def test_mode_targets_for_batch():
    pseudo = {("t15.2024.01.01", 3): (SILENT, 0.97), ("t15.2024.01.01", 4): (VOCALIZED, 0.6)}
    sessions = ["t15.2024.01.01", "t15.2024.01.01", "t15.2024.01.02"]
    targets = mode_targets_for_batch(pseudo, sessions, [3, 4, 3])
    assert targets.tolist() == [1, 0, -1] and targets.dtype == torch.long
    assert mode_targets_for_batch(pseudo, sessions, [3, 4, 3], min_confidence=0.9).tolist() == [1, -1, -1]


def test_mode_head_pools_valid_frames_only():
    torch.manual_seed(4)
    head = ModeHead(8, hidden=16).eval()
    x = torch.randn(2, 10, 8)
    lengths = torch.tensor([10, 6])
    _, logits, probs = head(x, lengths)
    _, alone, _ = head(x[1:, :6], lengths[1:])
    torch.testing.assert_close(logits[1], alone[0])
    torch.testing.assert_close(probs.sum(-1), torch.ones(2))
    x[1, 6:] = 100.0  # garbage in padding
    torch.testing.assert_close(head(x, lengths)[1][1], alone[0])


def test_rate_features_count_valid_frames_only():
    emission = torch.tensor([[0.5, 0.5, 0.0, 1.0], [0.25, 0.75, 9.0, 9.0]])
    lengths = torch.tensor([4, 2])
    rate = rate_features(emission, lengths)
    expected = torch.tensor([[math.log(2.0 / 4 + 1e-3), math.log(3.0)], [math.log(1.0 / 2 + 1e-3), math.log(2.0)]])
    torch.testing.assert_close(rate, expected)


def test_rate_normalisation_is_learnt_once_per_step_and_a_corrupt_trial_is_left_out():
    norm = RunningStandardizer(2, momentum=0.5)
    x = torch.tensor([[1.0, 10.0], [3.0, 14.0]])
    torch.testing.assert_close(norm(x), x / (1 + 1e-5) ** 0.5)  # nothing committed yet: mean 0, variance 1
    norm(torch.tensor([[float("nan"), 1.0], [2.0, 12.0]]))  # a second micro-batch; its NaN trial is left out
    norm.commit()  # the first commit sets the statistics of the step's three finite rows
    torch.testing.assert_close(norm.running_mean, torch.tensor([2.0, 12.0]))
    torch.testing.assert_close(norm.running_var, torch.tensor([1.0, 4.0]))  # unbiased
    norm(torch.tensor([[4.0, 12.0], [4.0, 16.0]]))
    norm.commit()  # later ones move halfway (momentum 0.5) to the step's mean (4, 14) and variance (0, 8)
    torch.testing.assert_close(norm.running_mean, torch.tensor([3.0, 13.0]))
    torch.testing.assert_close(norm.running_var, torch.tensor([0.5, 6.0]))
    norm(torch.tensor([[9.0, 9.0], [7.0, 1.0]]))
    norm.commit(apply=False)  # a skipped step: its rows are dropped
    torch.testing.assert_close(norm.running_mean, torch.tensor([3.0, 13.0]))
    norm.eval()
    torch.testing.assert_close(norm(torch.tensor([[3.0, 13.0]])), torch.tensor([[0.0, 0.0]]))
    norm.commit()  # nothing set aside in eval
    assert int(norm.commits) == 2


def test_a_head_saved_before_learnt_rate_normalisation_loads_with_its_old_constants():
    head = ModeHead(8, hidden=16)
    old = {k: v for k, v in head.state_dict().items() if not k.startswith("rate_norm") and k != "mode_signal"}
    again = ModeHead(8, hidden=16)
    again.load_state_dict(old)  # strict: the missing buffers are filled in
    emission, lengths = torch.full((1, 10), 0.4), torch.tensor([10])
    normalised = again.eval().rate_norm(rate_features(emission, lengths))
    # the old fixed centring: 4 * log(rate / 0.25) and log(count + 1) - 3
    expected = torch.tensor([[4 * math.log((0.4 + 1e-3) / 0.25), math.log(5.0) - 3]])
    torch.testing.assert_close(normalised, expected, atol=1e-4, rtol=0)
    assert bool(again.mode_signal)


def test_without_a_supported_split_film_gets_no_mode_signal():
    torch.manual_seed(5)
    head = ModeHead(8, hidden=16).eval()
    torch.nn.init.normal_(head.film.weight)
    x, lengths = torch.randn(3, 6, 8), torch.tensor([6, 6, 4])
    conditioned, logits, probs = head(x, lengths)
    assert probs[:, 0].std() > 0.01  # with the signal on, each trial gets its own posterior
    head.mode_signal.fill_(False)
    conditioned_off, logits_off, probs_off = head(x, lengths)
    torch.testing.assert_close(probs_off, torch.full((3, 2), 0.5))
    torch.testing.assert_close(logits_off, logits)  # the head's own logits are still there
    expected, _, _ = head(x, lengths, mode_probs=torch.full((3, 2), 0.5))
    torch.testing.assert_close(conditioned_off, expected)
    assert not torch.allclose(conditioned_off, conditioned)
    state = head.state_dict()
    assert not bool(state["mode_signal"])  # saved with the checkpoint, so evaluation honours it
    fresh = ModeHead(8, hidden=16)
    fresh.load_state_dict(state)
    assert not bool(fresh.mode_signal)


def test_unsupported_split_gives_no_labels_and_says_so():
    # the same rate in every block: nothing to split
    keys, features, n_labels, truth = planted_blocks(seed=7, silent_fraction=0.0)
    fit = fit_block_modes(keys, features, n_labels)
    assert not fit.supported and fit.bic_gain < 0
    assert set(fit.labels.values()) == {(UNKNOWN, 0.0)} and fit.labels.keys() == truth.keys()
    assert "NO supported two-mode split" in fit.describe() and "FiLM" in fit.describe()
    assert mode_targets_for_batch(fit.labels, [k[0] for k in truth], [k[1] for k in truth]).eq(-1).all()
    # the planted, well-separated modes are supported
    keys, features, n_labels, _ = planted_blocks(seed=0)
    fit = fit_block_modes(keys, features, n_labels)
    assert fit.supported and fit.bic_gain > 10 and fit.separation > 4
    assert not fit_block_modes(keys[:20], features[:20], n_labels[:20]).supported  # fewer than 4 blocks


def test_support_of_a_split_grows_with_the_modes_separation():
    """44 blocks of one statistic, 40 % shifted by delta SD: the figures quoted at MIN_BIC_GAIN."""
    supported, agreement = {}, {}
    for delta in (0.0, 2.0, 4.0):
        ok, right = 0, []
        for seed in range(30):
            rng = np.random.default_rng(seed)
            silent = rng.random(44) < 0.4
            stats = np.stack([rng.standard_normal(44) - delta * silent, np.zeros(44), np.zeros(44)], 1)
            ok += split_modes(range(44), stats).supported
            forced = split_modes(range(44), stats, min_bic_gain=-np.inf)
            right.append(np.mean([forced.labels[i][0] == int(silent[i]) for i in range(44)]))
        supported[delta], agreement[delta] = ok, float(np.mean(right))
    assert supported == {0.0: 2, 2.0: 5, 4.0: 30}, supported
    assert abs(agreement[2.0] - 0.77) < 0.01 and agreement[4.0] > 0.97, agreement


def test_mode_head_learns_speaking_rate_from_emissions():
    """Trials whose only difference is how often phonemes are emitted: the head must learn the mode from that."""
    gen = torch.Generator().manual_seed(0)

    def trials(n: int):
        modes = torch.randint(0, 2, (n,), generator=gen)
        lengths = torch.randint(20, 60, (n,), generator=gen)
        rate = torch.where(modes == SILENT, 0.33, 0.2) * torch.exp(0.1 * torch.randn(n, generator=gen))
        emission = (rate[:, None] + 0.1 * torch.randn(n, 60, generator=gen)).clamp(0, 1)  # soft, as from CTC
        return torch.randn(n, 60, 8, generator=gen), lengths, emission, modes

    torch.manual_seed(0)
    head = ModeHead(8, hidden=16)
    opt = torch.optim.Adam(head.parameters(), lr=0.03)
    for _ in range(300):
        x, lengths, emission, modes = trials(64)
        loss = torch.nn.functional.cross_entropy(head(x, lengths, emission_probs=emission)[1], modes)
        opt.zero_grad()
        loss.backward()
        opt.step()
        commit_running_statistics(head)  # as the trainer does at each optimizer step
    x, lengths, emission, modes = trials(500)
    with torch.no_grad():
        accuracy = (head.eval()(x, lengths, emission_probs=emission)[1].argmax(-1) == modes).float().mean()
        blind = (head(x, lengths)[1].argmax(-1) == modes).float().mean()  # no rate given: features are noise
    assert accuracy > 0.95, accuracy
    assert blind < 0.65, blind
