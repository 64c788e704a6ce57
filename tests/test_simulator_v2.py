"""Simulator version 2: overlapping mode rates, bad electrodes of several kinds, artefacts,
neural lead, a held-out word mix; version 1 stays selectable and bit-identical."""

from __future__ import annotations

import collections
import dataclasses
import hashlib

import numpy as np
import pytest

from mode_ssm.lexicon import Lexicon
from mode_ssm.sim import PRESETS
from mode_ssm.sim.config import SimConfig
from mode_ssm.sim.corpus import SentenceGenerator
from mode_ssm.sim.neural import (
    BAD_CHANNEL_KINDS,
    DRIFTING,
    FLAT,
    INTERMITTENT,
    NOISY,
    NeuralParams,
    _artefact_mask,
    _lead,
    make_participant,
    session_state,
    trial_features,
)
from mode_ssm.sim.plan import make_plan
from mode_ssm.sim.simulate import simulate_session

SMALL = {"name": "tiny", "sessions": ["t15.2023.08.13", "t15.2025.01.12"], "trial_fraction": 0.1, "max_words": 5}
# sha256 of the features, sentences and rates of SMALL (seed 3) written by the code before version 2 existed
V1_DIGEST = "2f37e2a898f920b3a84472e8b7322e7835fcfc85156a2b56ec9318c0abdcad35"


def digest(cfg: dict, seed: int) -> str:
    plan = make_plan(cfg, seed=seed)
    h = hashlib.sha256()
    for session in plan.sessions:
        for t in simulate_session(plan, session):
            h.update(t.features.tobytes())
            h.update(t.trial.sentence.encode())
            h.update(repr(t.trial.words_per_minute).encode())
    return h.hexdigest()


def test_version_1_is_bit_identical_to_the_first_simulator_and_version_2_differs():
    assert digest({**SMALL, "version": 1}, seed=3) == V1_DIGEST
    assert digest(SMALL, seed=3) != V1_DIGEST  # version 2 is the default


def test_version_is_validated_and_version_1_keeps_explicit_overrides():
    with pytest.raises(ValueError, match="version must be one of"):
        SimConfig.from_mapping({"version": 3})
    with pytest.raises(ValueError, match="val_test_core_weight"):
        SimConfig.from_mapping({"val_test_core_weight": 0.0})
    with pytest.raises(ValueError, match="bad_channel_kinds"):
        SimConfig.from_mapping({"neural": {"bad_channel_kinds": {"sparkly": 1.0}}})
    v1 = SimConfig.from_mapping({"version": 1, "neural": {"silent_wpm": 45.0}})
    assert v1.neural.silent_wpm == 45.0 and v1.neural.vocalized_wpm == 30.0 and v1.neural.bad_channel_kinds == {"flat": 1.0}
    assert v1.val_test_core_weight == 1.0 and SimConfig.from_mapping({}).val_test_core_weight == 0.5
    assert all(p["version"] == 2 for p in PRESETS.values())


def block_rates(version: int) -> dict[str, list[float]]:
    cfg = {**{k: v for k, v in PRESETS["bench"].items()}, "version": version}
    blocks = collections.defaultdict(list)
    for t in make_plan(cfg, seed=0).trials():
        blocks[(t.session, t.block_num, t.speaking_mode)].append(t.words_per_minute)
    out: dict[str, list[float]] = {"vocalized": [], "silent": []}
    for (_, _, mode), rates in blocks.items():
        out[mode].append(float(np.mean(rates)))
    return out


def test_block_speaking_rates_of_the_modes_overlap_in_version_2_only():
    v1, v2 = block_rates(1), block_rates(2)
    assert max(v1["vocalized"]) < min(v1["silent"])  # version 1: the rate alone separates the modes
    assert max(v2["vocalized"]) > min(v2["silent"])
    # a rate threshold at the geometric mean of the modal rates misclassifies a real share of blocks
    threshold = np.sqrt(32.0 * 42.0)
    wrong = np.mean([r > threshold for r in v2["vocalized"]] + [r < threshold for r in v2["silent"]])
    assert 0.1 < wrong < 0.4, wrong
    assert 30 < np.mean(v2["vocalized"]) < 36 and 39 < np.mean(v2["silent"]) < 47


def test_val_test_sentences_lean_on_words_rarer_in_the_train_text():
    unseen = {}
    for version in (1, 2):
        plan = make_plan({**PRESETS["bench"], "version": version}, seed=0)
        train = collections.Counter(w for t in plan.trials() if t.split == "train" for w in t.sentence.lower().split())
        held = [w for t in plan.trials() if t.split != "train" for w in t.sentence.lower().split()]
        unseen[version] = float(np.mean([train[w] == 0 for w in held]))
    assert unseen[2] > unseen[1] + 0.015, unseen


def one_kind_participant(kind: str):
    params = dataclasses.replace(NeuralParams(), bad_channel_kinds={kind: 1.0}, artefact_trial_fraction=0.0)
    participant = make_participant(0, params)
    state = session_state(participant, 100)
    dead = np.zeros(256, dtype=bool)
    dead[[3, 70, 130, 200]] = True  # one per array
    return participant, dataclasses.replace(state, dead=dead)


@pytest.fixture(scope="module")
def ids():
    gen, lexicon = SentenceGenerator(), Lexicon.from_cmudict()
    return [lexicon.sentence_to_ids(gen.sentence("Switchboard", np.random.default_rng(i), max_words=6)) for i in range(12)]


def bad_electrode_counts(kind: str, ids) -> list[np.ndarray]:
    participant, state = one_kind_participant(kind)
    return [
        trial_features(participant, state, s, "vocalized", 32.0, 0.0, np.random.default_rng(k))[0][:, [3, 70, 130, 200]]
        for k, s in enumerate(ids)
    ]


def test_bad_electrodes_flat_noisy_drifting_and_intermittent(ids):
    flat = bad_electrode_counts("flat", ids)
    assert all(np.all(x == 0) for x in flat)
    noisy = np.concatenate(bad_electrode_counts("noisy", ids))
    assert noisy.std(0).min() > 0.5  # broadband noise, far from constant
    # drifting: no within-bin noise burst, but the level wanders between trials more than Poisson noise explains
    drifting = bad_electrode_counts("drifting", ids)
    trial_means = np.stack([x.mean(0) for x in drifting])
    poisson_sd = np.sqrt(trial_means.mean(0) / np.mean([len(x) for x in drifting]))
    assert np.all(trial_means.std(0) > 4 * poisson_sd), (trial_means.std(0), poisson_sd)
    intermittent = bad_electrode_counts("intermittent", ids)
    # some trials lose an electrode for a span (>= 20 % of the trial), others record through
    dropped = [[bool(np.any(np.convolve(x[:, e] == 0, np.ones(max(1, int(0.2 * len(x)))), "valid") == max(1, int(0.2 * len(x))))) for e in range(4)] for x in intermittent]
    share = np.mean(dropped)
    assert 0.15 < share < 0.75, share
    assert np.concatenate(intermittent).mean() > 0.2


def test_bad_kinds_follow_their_shares():
    participant = make_participant(0)
    counts = np.bincount(participant.bad_kind, minlength=len(BAD_CHANNEL_KINDS)) / 256
    shares = NeuralParams().bad_channel_kinds
    for kind, index in zip(BAD_CHANNEL_KINDS, (FLAT, NOISY, DRIFTING, INTERMITTENT)):
        assert abs(counts[index] - shares[kind]) < 0.08, (kind, counts)


def test_artefacts_hit_the_configured_share_of_trials_on_many_channels():
    p = NeuralParams()
    masks = [_artefact_mask((200, 256), np.random.default_rng(i), p) for i in range(3000)]
    hit = [m for m in masks if m is not None]
    assert abs(len(hit) / 3000 - p.artefact_trial_fraction) < 0.012
    for m in hit[:50]:
        active_bins = np.flatnonzero(m.any(1))
        assert 2 <= active_bins.size <= 15
        assert (m[active_bins] > 0).mean() > 0.3  # broadband: many channels at once
    assert _artefact_mask((200, 256), np.random.default_rng(0), dataclasses.replace(p, artefact_trial_fraction=0.0)) is None


def test_neural_activity_leads_the_labels_by_60_to_120_ms():
    lead = make_participant(0).lead_bins
    assert lead.min() >= 3 and lead.max() <= 6 and len(set(lead.tolist())) == 4
    assert not make_participant(0, NeuralParams.from_dict({"neural_lead_ms": [0, 0]})).lead_bins.any()
    x = np.arange(40, dtype=np.float32).reshape(10, 4)
    shifted = _lead(x, np.array([0, 1, 3, 20]))
    assert np.array_equal(shifted[:, 0], x[:, 0])
    assert np.array_equal(shifted[:7, 2], x[3:, 2]) and np.all(shifted[7:, 2] == x[9, 2])
    assert np.all(shifted[:, 3] == x[9, 3])
