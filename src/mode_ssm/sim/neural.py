"""Generative model of T15 neural features during attempted speech.

One participant (fixed by the seed) is simulated on any post-implant day:

1. Articulation. Each phoneme is a target point in a 12-dimensional
   articulatory latent space (lip closure and rounding, tongue tip, blade,
   body height and frontness, velum, voicing, jaw, frication, rhotic,
   lateral) plus one "speaking" dimension, so similar phonemes lie close
   (P/B differ only in voicing). Diphthongs move from a start to an end
   target. Silence is the origin; pauses between words keep "speaking" up.
   The trajectory is piecewise constant per phoneme with durations drawn from
   the speaking rate, jittered per instance and smoothed in time
   (coarticulation), plus slow latent noise.
2. Encoding. 256 electrodes in four 64-electrode arrays (ventral 6v, area 4,
   area 55b, dorsal 6v) have log-linear tuning to the latent and a baseline
   rate; tuning is strongest on ventral 6v and area 4. Shared low-rank noise
   (a few smooth factors loaded on all channels) is added in log-rate.
   Threshold crossings are Poisson counts per 20 ms bin; spike band power is a
   log-normal function of the same rate and counts.
3. Speaking modes. Attempted silent speech is faster (~42 words/min against
   ~32 vocalized, version 2), has weak voicing and frication, a smaller jaw
   excursion, more coarticulation (a wider smoothing of its targets), its own
   electrode gains and a small mode-specific baseline shift. Block and trial
   rates spread widely (log-sd 0.15 and 0.18) so the modes' block rates
   overlap: rate alone does not tell them apart.
4. Drift. Tuning, gains and baselines follow smooth random functions of the
   post-implant day (random-feature Gaussian processes) plus day-to-day
   jitter; electrodes go bad one by one (staying well under 10 %); within a
   session baselines and tuning drift slowly from block to block. A bad
   electrode is flat (records nothing), noisy (broadband noise), drifting (no
   tuning, a wandering baseline) or intermittent (drops out for a span in
   some trials).
5. Artefacts and timing. A few percent of trials carry 1-3 broadband bursts
   (2-5 bins, most channels). Each electrode's activity leads the
   articulation, and so the labels' timing, by 60-120 ms.
6. Normalisation, as in the release: each session's features are z-scored
   per feature with the mean and standard deviation of the preceding 20
   trials (see :func:`normalize_session`).

Versions (``SimConfig.version``): 2 is the default and everything above. 1 is
the first simulator, kept bit for bit so figures can be compared: modes at
30 and 50 words/min with block log-sd 0.08 (blocks ~6 SD apart), the same
coarticulation in both modes, bad electrodes all flat, no artefacts, no
neural lead, and val/test sentences from the same word mix as train.

Everything is deterministic for (seed, day, block, trial).

Calibration of version 1 (``benchmarks/linear_probe.py``, bench preset, seed 0): a linear
per-frame classifier on 5 stacked bins reaches about 61 % frame accuracy on
val (50 % on phoneme frames; chance 25 % / 10 % by majority class), 63 %
vocalized vs 57 % silent; trained on the three earliest sessions it falls
from 61 % on their val to 45 % on the three latest. The same classifier on
whole phoneme segments with oracle boundaries reaches about 73 %. The
version 1 defaults were chosen for those figures; trained decoders' figures on
both versions are in the README.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
from scipy.ndimage import gaussian_filter1d

from mode_ssm.data.t15 import ctc_min_time_steps
from mode_ssm.phonemes import BOUNDARY, NUM_CLASSES, PHONEME_TO_ID

BIN_SECONDS = 0.02
N_ELECTRODES = 256
N_FEATURES = 2 * N_ELECTRODES
ARRAYS = ("ventral 6v", "area 4", "area 55b", "dorsal 6v")  # electrode order 0-63, 64-127, 128-191, 192-255
ELECTRODES_PER_ARRAY = 64
SPEAKING_MODES = ("vocalized", "silent")
MAX_TRIAL_BINS = 1500  # 30 s

LATENT_DIMS = (
    "lip closure", "lip rounding", "tongue tip", "tongue blade", "tongue body height", "tongue body front",
    "velum", "voicing", "jaw opening", "frication", "rhotic", "lateral", "speaking",
)  # fmt: skip
N_LATENT = len(LATENT_DIMS)
_D = {name: i for i, name in enumerate(LATENT_DIMS)}

# Articulatory targets: phoneme -> {dimension: value} at the start (and end, for diphthongs).
_VOWEL = {"voicing": 1.0}
_ARTICULATION: dict[str, tuple[dict[str, float], dict[str, float] | None]] = {
    "IY": ({"tongue body height": 1.0, "tongue body front": 1.0, "jaw opening": 0.15}, None),
    "IH": ({"tongue body height": 0.75, "tongue body front": 0.8, "jaw opening": 0.3}, None),
    "EY": ({"tongue body height": 0.5, "tongue body front": 0.9, "jaw opening": 0.45},
           {"tongue body height": 0.9, "tongue body front": 1.0, "jaw opening": 0.2}),
    "EH": ({"tongue body height": 0.45, "tongue body front": 0.8, "jaw opening": 0.5}, None),
    "AE": ({"tongue body height": 0.15, "tongue body front": 0.7, "jaw opening": 0.85}, None),
    "AA": ({"tongue body height": 0.0, "tongue body front": -0.6, "jaw opening": 1.0}, None),
    "AO": ({"tongue body height": 0.3, "tongue body front": -0.9, "jaw opening": 0.7, "lip rounding": 0.6}, None),
    "AH": ({"tongue body height": 0.35, "tongue body front": 0.0, "jaw opening": 0.55}, None),
    "UH": ({"tongue body height": 0.7, "tongue body front": -0.6, "jaw opening": 0.3, "lip rounding": 0.5}, None),
    "UW": ({"tongue body height": 1.0, "tongue body front": -1.0, "jaw opening": 0.15, "lip rounding": 1.0}, None),
    "OW": ({"tongue body height": 0.45, "tongue body front": -0.8, "jaw opening": 0.5, "lip rounding": 0.6},
           {"tongue body height": 0.8, "tongue body front": -1.0, "jaw opening": 0.25, "lip rounding": 1.0}),
    "ER": ({"tongue body height": 0.5, "tongue body front": 0.0, "jaw opening": 0.35, "rhotic": 1.0, "lip rounding": 0.3}, None),
    "AY": ({"tongue body height": 0.0, "tongue body front": -0.3, "jaw opening": 0.95},
           {"tongue body height": 0.75, "tongue body front": 0.9, "jaw opening": 0.3}),
    "AW": ({"tongue body height": 0.0, "tongue body front": -0.2, "jaw opening": 0.95},
           {"tongue body height": 0.8, "tongue body front": -1.0, "jaw opening": 0.3, "lip rounding": 0.9}),
    "OY": ({"tongue body height": 0.3, "tongue body front": -0.9, "jaw opening": 0.65, "lip rounding": 0.7},
           {"tongue body height": 0.75, "tongue body front": 0.9, "jaw opening": 0.3}),
    "P": ({"lip closure": 1.0}, None),
    "B": ({"lip closure": 1.0, "voicing": 1.0}, None),
    "M": ({"lip closure": 1.0, "velum": 1.0, "voicing": 1.0}, None),
    "F": ({"lip closure": 0.5, "frication": 1.0}, None),
    "V": ({"lip closure": 0.5, "frication": 1.0, "voicing": 1.0}, None),
    "TH": ({"tongue tip": 0.7, "frication": 0.7, "tongue body front": 0.3}, None),
    "DH": ({"tongue tip": 0.7, "frication": 0.7, "tongue body front": 0.3, "voicing": 1.0}, None),
    "T": ({"tongue tip": 1.0}, None),
    "D": ({"tongue tip": 1.0, "voicing": 1.0}, None),
    "N": ({"tongue tip": 1.0, "velum": 1.0, "voicing": 1.0}, None),
    "S": ({"tongue tip": 0.8, "frication": 1.0}, None),
    "Z": ({"tongue tip": 0.8, "frication": 1.0, "voicing": 1.0}, None),
    "SH": ({"tongue blade": 1.0, "frication": 1.0, "lip rounding": 0.4}, None),
    "ZH": ({"tongue blade": 1.0, "frication": 1.0, "lip rounding": 0.4, "voicing": 1.0}, None),
    "CH": ({"tongue blade": 1.0, "tongue tip": 0.5, "frication": 0.5}, None),
    "JH": ({"tongue blade": 1.0, "tongue tip": 0.5, "frication": 0.5, "voicing": 1.0}, None),
    "L": ({"tongue tip": 0.8, "lateral": 1.0, "voicing": 1.0}, None),
    "R": ({"rhotic": 1.0, "lip rounding": 0.4, "tongue blade": 0.3, "voicing": 1.0}, None),
    "W": ({"lip rounding": 1.0, "lip closure": 0.4, "tongue body height": 0.9, "tongue body front": -1.0, "voicing": 1.0}, None),
    "Y": ({"tongue body height": 1.0, "tongue body front": 1.0, "tongue blade": 0.4, "voicing": 1.0}, None),
    "K": ({"tongue body height": 1.0, "tongue body front": -0.5}, None),
    "G": ({"tongue body height": 1.0, "tongue body front": -0.5, "voicing": 1.0}, None),
    "NG": ({"tongue body height": 1.0, "tongue body front": -0.5, "velum": 1.0, "voicing": 1.0}, None),
    "HH": ({"frication": 0.4, "jaw opening": 0.4}, None),
}  # fmt: skip
assert set(_ARTICULATION) == set(PHONEME_TO_ID), "every phoneme needs an articulatory target"
_VOWELS = {"IY", "IH", "EY", "EH", "AE", "AA", "AO", "AH", "UH", "UW", "OW", "ER", "AY", "AW", "OY"}
_DIPHTHONGS = {"EY", "OW", "AY", "AW", "OY"}
_STOPS = {"P", "B", "T", "D", "K", "G"}

# Relative duration of a phoneme class (vowels long, stops short), before per-instance jitter.
_DURATION_WEIGHT = np.ones(NUM_CLASSES)
for _p, _i in PHONEME_TO_ID.items():
    _DURATION_WEIGHT[_i] = 1.6 if _p in _DIPHTHONGS else 1.35 if _p in _VOWELS else 0.75 if _p in _STOPS else 0.95

# Segment kinds of a trial's timeline.
SILENCE, PHONEME, PAUSE = 0, 1, 2

# What a bad electrode records. flat: nothing (0 crossings, a floor of spike band power);
# noisy: broadband noise unrelated to speech; drifting: no tuning, a baseline wandering within
# and across trials; intermittent: its normal signal, lost for a span in some trials.
BAD_CHANNEL_KINDS = ("flat", "noisy", "drifting", "intermittent")
FLAT, NOISY, DRIFTING, INTERMITTENT = range(4)

# Simulator versions. 2 (default) is the more realistic one; 1 reproduces the data of the
# first version bit for bit: these neural settings plus the same word mix in val/test as in train.
SIM_VERSIONS = (1, 2)
NEURAL_V1: dict = {
    "vocalized_wpm": 30.0,
    "silent_wpm": 50.0,
    "block_rate_jitter": 0.08,
    "trial_rate_jitter": 0.12,
    "silent_coarticulation_gain": 1.0,
    "bad_channel_kinds": {"flat": 1.0},
    "artefact_trial_fraction": 0.0,
    "neural_lead_ms": (0.0, 0.0),
}


@dataclass(frozen=True)
class NeuralParams:
    """Generation parameters (every number that shapes the data, recorded in simulation.json)."""

    # speaking rate (words per minute of the speech span) and timing. Version 2: the modes'
    # block rates overlap (log ratio 0.27 against a block log-sd of 0.15, ~1.8 SD apart).
    vocalized_wpm: float = 32.0
    silent_wpm: float = 42.0
    block_rate_jitter: float = 0.15  # log-sd of a block's rate around its mode's
    trial_rate_jitter: float = 0.18  # log-sd of a trial's rate around its block's
    duration_shape: float = 8.0  # gamma shape of per-phoneme duration jitter
    pause_weight_vocalized: float = 0.9  # mean inter-word pause, in units of a consonant's duration
    pause_weight_silent: float = 0.5
    lead_silence_s: float = 0.9  # mean silence before speech (reaction time)
    tail_silence_s: float = 0.7
    # latent trajectory
    coarticulation_ms: float = 60.0  # Gaussian smoothing sigma of the target trajectory
    silent_coarticulation_gain: float = 1.3  # silent attempts blur their targets more (sigma x this)
    phoneme_target_jitter: float = 0.22  # participant-specific offset per phoneme (fixed for the seed)
    instance_jitter: float = 0.25  # per-occurrence target offset
    latent_noise: float = 0.15  # slow noise on the latent trajectory
    latent_noise_ms: float = 80.0
    pause_speaking_level: float = 0.6
    # encoding
    tuning_scale: float = 0.22  # sd of log-rate tuning weights on the strongest array
    speaking_tuning_mean: float = 0.5  # condition-invariant speech-onset response (log-rate)
    array_gain: tuple[float, float, float, float] = (1.0, 0.85, 0.35, 0.25)
    untuned_fraction: tuple[float, float, float, float] = (0.15, 0.2, 0.5, 0.6)
    baseline_counts_per_bin: float = 0.3  # median threshold crossings per 20 ms bin (15 Hz)
    baseline_log_sd: float = 0.6
    min_baseline_counts_per_bin: float = 0.12
    max_counts_per_bin: float = 8.0
    n_noise_factors: int = 6
    noise_factor_scale: float = 0.3
    noise_factor_ms: float = 100.0
    trial_offset_sd: float = 0.08  # whole-trial shift of all log-rates (arousal, attention)
    sbp_noise: float = 0.6  # log-sd of spike band power around its rate
    # silent speech: latent gains per dimension (others 1), extra electrode gains, baseline shift
    silent_latent_gain: dict[str, float] = field(
        default_factory=lambda: {"voicing": 0.5, "frication": 0.6, "jaw opening": 0.6, "lip closure": 0.8, "speaking": 0.8}
    )
    silent_gain_log_sd: float = 0.2
    silent_baseline_shift_sd: float = 0.15
    # drift across days
    drift_length_days: float = 150.0  # length scale of the smooth drift (Gaussian process)
    tuning_drift_share: float = 0.35  # share of tuning variance that drifts
    baseline_drift_sd: float = 0.3  # log-rate
    gain_drift_sd: float = 0.25  # log-gain
    day_jitter: float = 0.1  # independent per-session change (fraction of tuning sd; log-rate for baselines)
    dead_at_implant: int = 2  # electrodes dead from the start
    dead_by_last_day: int = 14  # further electrodes that die, uniformly over [0, last_day]
    last_day: int = 620
    # what a bad electrode records: shares of the kinds in BAD_CHANNEL_KINDS (version 1: all flat)
    bad_channel_kinds: dict[str, float] = field(
        default_factory=lambda: {"flat": 0.2, "noisy": 0.45, "drifting": 0.2, "intermittent": 0.15}
    )
    intermittent_trial_fraction: float = 0.4  # trials in which an intermittent electrode drops out for a span
    # transient artefacts: broadband bursts on many channels for a few bins
    artefact_trial_fraction: float = 0.04  # share of trials with 1-3 bursts
    artefact_log_rate: float = 2.0  # mean log-rate jump during a burst
    # motor cortex leads the articulation: each electrode's activity precedes the labels' timing
    # by a fixed lead drawn uniformly from this range (version 1: none, activity centred on the phoneme)
    neural_lead_ms: tuple[float, float] = (60.0, 120.0)
    # drift within a session (from the first to the last block)
    within_session_baseline_sd: float = 0.15
    within_session_tuning_sd: float = 0.08
    # normalisation
    normalization_window: int = 20

    @classmethod
    def from_dict(cls, overrides: dict | None) -> "NeuralParams":
        """Defaults updated by ``overrides`` (unknown keys raise, naming them)."""
        overrides = dict(overrides or {})
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise ValueError(f"unknown neural parameter(s) {unknown}; known: {sorted(names)}")
        for key in ("array_gain", "untuned_fraction", "neural_lead_ms"):
            if key in overrides:
                overrides[key] = tuple(float(x) for x in overrides[key])
        if "silent_latent_gain" in overrides:
            overrides["silent_latent_gain"] = dict(overrides["silent_latent_gain"])
        if "bad_channel_kinds" in overrides:
            kinds = {str(k): float(v) for k, v in dict(overrides["bad_channel_kinds"]).items()}
            unknown_kinds = sorted(set(kinds) - set(BAD_CHANNEL_KINDS))
            if unknown_kinds or not kinds or min(kinds.values()) < 0 or sum(kinds.values()) <= 0:
                raise ValueError(f"bad_channel_kinds must give non-negative shares of {BAD_CHANNEL_KINDS}, got {kinds}")
            overrides["bad_channel_kinds"] = kinds
        return cls(**overrides)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def max_dead_electrodes(self) -> int:
        return self.dead_at_implant + self.dead_by_last_day


def electrode_array(electrode: np.ndarray | int) -> np.ndarray:
    """Array index (0 ventral 6v, 1 area 4, 2 area 55b, 3 dorsal 6v) of electrode(s) 0..255."""
    return np.asarray(electrode) // ELECTRODES_PER_ARRAY


def articulatory_targets() -> tuple[np.ndarray, np.ndarray]:
    """Canonical latent targets per class.

    Returns (start, end), each (41, N_LATENT) float64; row 0 (blank) and row 40
    (boundary) are silence; monophthongs have start == end.
    """
    start = np.zeros((NUM_CLASSES, N_LATENT))
    end = np.zeros((NUM_CLASSES, N_LATENT))
    for phone, (a, b) in _ARTICULATION.items():
        i = PHONEME_TO_ID[phone]
        for row, spec in ((start, a), (end, b if b is not None else a)):
            values = {**(_VOWEL if phone in _VOWELS else {}), **spec, "speaking": 1.0}
            for dim, val in values.items():
                row[i, _D[dim]] = val
    return start, end


# --------------------------------------------------------------------------------------
# Smooth random functions of the post-implant day (random Fourier features of a Gaussian-kernel GP).


@dataclass(frozen=True)
class _SmoothDrift:
    """Independent smooth Gaussian processes over days, unit variance, one per entry of ``shape``."""

    weights: np.ndarray  # (n_features, *shape)
    freqs: np.ndarray  # (n_features, *shape), radians per day
    phases: np.ndarray  # (n_features, *shape)

    @classmethod
    def sample(cls, rng: np.random.Generator, shape: tuple[int, ...], length_days: float, n_features: int = 24) -> "_SmoothDrift":
        full = (n_features, *shape)
        return cls(
            weights=rng.standard_normal(full),
            freqs=rng.standard_normal(full) / length_days,
            phases=rng.uniform(0, 2 * np.pi, full),
        )

    def at(self, day: float) -> np.ndarray:
        """Values at ``day``: array of ``shape``; entries are N(0, 1) marginally, correlation exp(-gap^2 / 2 L^2)."""
        n = self.weights.shape[0]
        return np.sqrt(2.0 / n) * np.sum(self.weights * np.cos(self.freqs * day + self.phases), axis=0)


@dataclass(frozen=True)
class Participant:
    """Everything about the simulated participant that is fixed for a seed."""

    params: NeuralParams
    seed: int
    target_start: np.ndarray  # (41, N_LATENT)
    target_end: np.ndarray  # (41, N_LATENT)
    tuning_fixed: np.ndarray  # (256, N_LATENT), log-rate per unit latent, before gains
    tuning_drift: _SmoothDrift  # shape (256, N_LATENT)
    electrode_gain: np.ndarray  # (256,), array gain x electrode gain (0 for untuned electrodes' articulation)
    log_baseline: np.ndarray  # (256,), log counts per bin
    baseline_drift: _SmoothDrift  # (256,)
    gain_drift: _SmoothDrift  # (256,)
    death_day: np.ndarray  # (256,), day from which an electrode is dead (inf: never)
    noise_loadings: np.ndarray  # (256, n_noise_factors)
    sbp_scale: np.ndarray  # (256,)
    silent_gain: np.ndarray  # (256,), extra log-gain in silent speech
    silent_shift: np.ndarray  # (256,), log-rate shift in silent speech
    bad_kind: np.ndarray  # (256,) int, index into BAD_CHANNEL_KINDS: what the electrode records once dead
    lead_bins: np.ndarray  # (256,) int, bins by which the electrode's activity leads the articulation


# Independent random streams, so adding one kind of draw never shifts another.
_STREAM_PARTICIPANT, _STREAM_SESSION, _STREAM_TRIAL, _STREAM_BAD_KIND, _STREAM_LEAD = 11, 12, 13, 14, 15


def _bad_kinds(seed: int, params: NeuralParams) -> np.ndarray:
    """(256,) kind of each electrode once it is bad, from its own stream (version 1 draws nothing)."""
    shares = np.array([params.bad_channel_kinds.get(k, 0.0) for k in BAD_CHANNEL_KINDS])
    if shares[FLAT] == shares.sum():
        return np.full(N_ELECTRODES, FLAT)
    rng = np.random.default_rng([int(seed), _STREAM_BAD_KIND])
    return rng.choice(len(BAD_CHANNEL_KINDS), N_ELECTRODES, p=shares / shares.sum())


def _lead_bins(seed: int, params: NeuralParams) -> np.ndarray:
    """(256,) neural lead of each electrode in bins, uniform over ``neural_lead_ms`` (its own stream)."""
    low, high = (ms / 1000 / BIN_SECONDS for ms in params.neural_lead_ms)
    if not 0 <= low <= high:
        raise ValueError(f"neural_lead_ms must be a range (low, high) with 0 <= low <= high, got {params.neural_lead_ms}")
    if high == 0:
        return np.zeros(N_ELECTRODES, dtype=np.int64)
    rng = np.random.default_rng([int(seed), _STREAM_LEAD])
    return np.rint(rng.uniform(low, high, N_ELECTRODES)).astype(np.int64)


def make_participant(seed: int, params: NeuralParams | None = None) -> Participant:
    """The participant for ``seed`` (same for every preset, so bench and full share one brain)."""
    p = params or NeuralParams()
    rng = np.random.default_rng([int(seed), _STREAM_PARTICIPANT])
    start, end = articulatory_targets()
    offset = np.zeros_like(start)
    offset[:, : _D["speaking"]] = rng.normal(0.0, p.phoneme_target_jitter, (NUM_CLASSES, _D["speaking"]))
    offset[[0, BOUNDARY]] = 0.0  # silence stays at the origin
    start, end = start + offset, end + offset

    array = electrode_array(np.arange(N_ELECTRODES))
    tuned = rng.random(N_ELECTRODES) >= np.asarray(p.untuned_fraction)[array]
    gain = np.asarray(p.array_gain)[array] * rng.lognormal(0.0, 0.4, N_ELECTRODES) * tuned
    tuning = rng.normal(0.0, p.tuning_scale, (N_ELECTRODES, N_LATENT))
    # Most electrodes rise at speech onset, the condition-invariant signal seen in motor cortex.
    tuning[:, _D["speaking"]] = rng.normal(p.speaking_tuning_mean, 0.6 * p.tuning_scale, N_ELECTRODES)

    log_base = np.log(
        np.maximum(p.min_baseline_counts_per_bin, p.baseline_counts_per_bin * rng.lognormal(0.0, p.baseline_log_sd, N_ELECTRODES))
    )
    death = np.full(N_ELECTRODES, np.inf)
    order = rng.permutation(N_ELECTRODES)
    death[order[: p.dead_at_implant]] = 0.0
    death[order[p.dead_at_implant : p.max_dead_electrodes()]] = rng.uniform(0.0, p.last_day, p.dead_by_last_day)
    return Participant(
        params=p,
        seed=int(seed),
        target_start=start,
        target_end=end,
        tuning_fixed=tuning,
        tuning_drift=_SmoothDrift.sample(rng, (N_ELECTRODES, N_LATENT), p.drift_length_days),
        electrode_gain=gain,
        log_baseline=log_base,
        baseline_drift=_SmoothDrift.sample(rng, (N_ELECTRODES,), p.drift_length_days),
        gain_drift=_SmoothDrift.sample(rng, (N_ELECTRODES,), p.drift_length_days),
        death_day=death,
        noise_loadings=rng.normal(0.0, p.noise_factor_scale, (N_ELECTRODES, p.n_noise_factors)),
        sbp_scale=rng.lognormal(np.log(30.0), 0.4, N_ELECTRODES),
        silent_gain=rng.normal(0.0, p.silent_gain_log_sd, N_ELECTRODES),
        silent_shift=rng.normal(0.0, p.silent_baseline_shift_sd, N_ELECTRODES),
        bad_kind=_bad_kinds(seed, p),
        lead_bins=_lead_bins(seed, p),
    )


@dataclass(frozen=True)
class SessionState:
    """The participant on one post-implant day."""

    day: int
    tuning: np.ndarray  # (256, N_LATENT) log-rate per latent unit, gains included
    log_baseline: np.ndarray  # (256,)
    dead: np.ndarray  # (256,) bool
    tuning_trend: np.ndarray  # (256, N_LATENT) change from the first to the last block
    baseline_trend: np.ndarray  # (256,)


def session_state(participant: Participant, day: int) -> SessionState:
    """Tuning, baselines and dead electrodes on post-implant ``day`` (deterministic per seed and day)."""
    p = participant.params
    rng = np.random.default_rng([participant.seed, _STREAM_SESSION, int(day)])
    share = p.tuning_drift_share
    tuning = np.sqrt(1.0 - share) * participant.tuning_fixed + np.sqrt(share) * p.tuning_scale * participant.tuning_drift.at(day)
    tuning = tuning + rng.normal(0.0, p.day_jitter * p.tuning_scale, tuning.shape)
    gain = participant.electrode_gain * np.exp(p.gain_drift_sd * participant.gain_drift.at(day))
    tuning[:, : _D["speaking"]] *= gain[:, None]
    # The speech-onset response is also weaker on weakly tuned arrays, but present on most electrodes.
    tuning[:, _D["speaking"]] *= np.sqrt(np.maximum(gain, 0.05))
    log_base = (
        participant.log_baseline
        + p.baseline_drift_sd * participant.baseline_drift.at(day)
        + rng.normal(0.0, p.day_jitter, N_ELECTRODES)
    )
    log_base = np.maximum(log_base, np.log(p.min_baseline_counts_per_bin))
    return SessionState(
        day=int(day),
        tuning=tuning,
        log_baseline=log_base,
        dead=participant.death_day <= day,
        tuning_trend=rng.normal(0.0, p.within_session_tuning_sd, tuning.shape) * np.maximum(gain, 0.05)[:, None],
        baseline_trend=rng.normal(0.0, p.within_session_baseline_sd, N_ELECTRODES),
    )


# --------------------------------------------------------------------------------------
# One trial.


def ctc_feasible(n_time_steps: int, phoneme_ids: np.ndarray | list[int], patch: int = 14, stride: int = 4) -> bool:
    """Whether the official model's (n_time_steps - 14) // 4 + 1 outputs can carry the labels."""
    return n_time_steps >= ctc_min_time_steps(phoneme_ids, patch, stride)


def trial_timeline(
    phoneme_ids: np.ndarray | list[int], words_per_minute: float, mode: str, rng: np.random.Generator, params: NeuralParams
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Segments of a trial: silence, phonemes with pauses between words, silence.

    ``phoneme_ids``: (seq_len,) labels as in seq_class_ids (boundary 40 after every word).
    The speech span (first phoneme onset to last phoneme offset) lasts
    n_words * 60 / words_per_minute seconds, shortened if the trial would pass 30 s.
    Returns (classes (S,), kinds (S,) in {SILENCE, PHONEME, PAUSE}, durations (S,) in bins).
    """
    ids = np.asarray(phoneme_ids, dtype=np.int64)
    if ids.size == 0 or ids[-1] != BOUNDARY:
        raise ValueError("phoneme_ids must be non-empty and end with the word boundary (40)")
    n_words = int(np.count_nonzero(ids == BOUNDARY))
    body = ids[:-1]  # the last boundary merges with the closing silence
    is_pause = body == BOUNDARY
    pause_mean = params.pause_weight_vocalized if mode == "vocalized" else params.pause_weight_silent
    weights = np.where(
        is_pause,
        pause_mean * rng.gamma(1.5, 1 / 1.5, body.size),
        _DURATION_WEIGHT[body] * rng.gamma(params.duration_shape, 1 / params.duration_shape, body.size),
    )
    lead = int(round(np.clip(rng.gamma(6.0, params.lead_silence_s / 6.0), 0.4, 2.0) / BIN_SECONDS))
    tail = int(round(np.clip(rng.gamma(6.0, params.tail_silence_s / 6.0), 0.3, 1.6) / BIN_SECONDS))
    speech_bins = n_words * 60.0 / words_per_minute / BIN_SECONDS
    # A long sentence is spoken faster rather than cut: keep the whole trial under 30 s.
    speech_bins = min(speech_bins, MAX_TRIAL_BINS - 10 - lead - tail)
    edges = np.round(np.cumsum(weights) * (speech_bins / weights.sum())).astype(np.int64)
    durations = np.diff(edges, prepend=0)
    durations = np.where(is_pause, durations, np.maximum(durations, 2))  # a phoneme lasts at least 40 ms
    classes = np.concatenate([[BOUNDARY], body, [BOUNDARY]])
    kinds = np.concatenate([[SILENCE], np.where(is_pause, PAUSE, PHONEME), [SILENCE]])
    durations = np.concatenate([[lead], durations, [tail]])
    total = int(durations.sum())
    if total > MAX_TRIAL_BINS:  # only when the 2-bin floor pushed a huge sentence over
        durations[-1] = max(1, durations[-1] - (total - MAX_TRIAL_BINS))
    while not ctc_feasible(int(durations.sum()), ids):
        durations[-1] += 4
    return classes, kinds, durations


def frame_labels(classes: np.ndarray, kinds: np.ndarray, durations: np.ndarray) -> np.ndarray:
    """Per-bin class: the phoneme being attempted, 40 for silence and pauses. (S,) x3 -> (T,) int8."""
    labels = np.where(kinds == PHONEME, classes, BOUNDARY)
    return np.repeat(labels, durations).astype(np.int8)


def _smooth_noise(rng: np.random.Generator, n_bins: int, n_dims: int, sigma_bins: float) -> np.ndarray:
    """Gaussian-smoothed white noise, unit variance per dimension: (n_bins, n_dims)."""
    x = rng.standard_normal((n_bins, n_dims))
    if sigma_bins <= 0:
        return x
    x = gaussian_filter1d(x, sigma_bins, axis=0, mode="reflect")
    return x * np.sqrt(2.0 * np.sqrt(np.pi) * sigma_bins)  # undo the variance shrinkage of the kernel


def latent_trajectory(
    participant: Participant,
    classes: np.ndarray,
    kinds: np.ndarray,
    durations: np.ndarray,
    rng: np.random.Generator,
    smoothing_gain: float = 1.0,
) -> np.ndarray:
    """Articulatory latent over time. Segments (S,) x3 -> (T, N_LATENT) float64.

    ``smoothing_gain`` scales the coarticulation sigma (silent attempts: ``silent_coarticulation_gain``).
    """
    p = participant.params
    n_bins = int(durations.sum())
    seg = np.repeat(np.arange(classes.size), durations)
    seg_start = np.cumsum(durations) - durations
    frac = (np.arange(n_bins) - seg_start[seg] + 0.5) / np.maximum(durations[seg], 1)
    start = participant.target_start[classes].copy()
    end = participant.target_end[classes].copy()
    is_phoneme = kinds == PHONEME
    jitter = np.where(is_phoneme[:, None], rng.normal(0.0, p.instance_jitter, start.shape), 0.0)
    jitter[:, _D["speaking"]] = 0.0
    start += jitter
    end += jitter
    speaking = _D["speaking"]
    start[kinds == PAUSE, speaking] = end[kinds == PAUSE, speaking] = p.pause_speaking_level
    z = start[seg] + frac[:, None] * (end - start)[seg]
    z = gaussian_filter1d(z, smoothing_gain * p.coarticulation_ms / 1000 / BIN_SECONDS, axis=0, mode="nearest")
    z += p.latent_noise * _smooth_noise(rng, n_bins, N_LATENT, p.latent_noise_ms / 1000 / BIN_SECONDS)
    return z


def silent_latent_gain(params: NeuralParams) -> np.ndarray:
    """Per-latent-dimension gain in attempted silent speech: (N_LATENT,)."""
    g = np.ones(N_LATENT)
    for dim, value in params.silent_latent_gain.items():
        if dim not in _D:
            raise ValueError(f"silent_latent_gain names unknown latent dimension {dim!r}; known: {LATENT_DIMS}")
        g[_D[dim]] = value
    return g


@dataclass(frozen=True)
class TrialDrive:
    """What drives one trial's electrodes, before the session's encoding is applied."""

    latent: np.ndarray  # (T, N_LATENT) articulatory latent
    shared_noise: np.ndarray  # (T, n_noise_factors) smooth shared noise factors
    offset: float  # whole-trial log-rate shift
    labels: np.ndarray  # (T,) int8 frame labels


def trial_drive(
    participant: Participant, phoneme_ids: np.ndarray | list[int], mode: str, words_per_minute: float, rng: np.random.Generator
) -> TrialDrive:
    """Timeline, latent trajectory and shared noise of one trial (``phoneme_ids``: (seq_len,), ending with 40)."""
    if mode not in SPEAKING_MODES:
        raise ValueError(f"speaking mode {mode!r} is not one of {SPEAKING_MODES}")
    p = participant.params
    classes, kinds, durations = trial_timeline(phoneme_ids, words_per_minute, mode, rng, p)
    smoothing = p.silent_coarticulation_gain if mode == "silent" else 1.0
    z = latent_trajectory(participant, classes, kinds, durations, rng, smoothing)
    shared = _smooth_noise(rng, z.shape[0], p.n_noise_factors, p.noise_factor_ms / 1000 / BIN_SECONDS)
    return TrialDrive(z, shared, float(rng.normal(0.0, p.trial_offset_sd)), frame_labels(classes, kinds, durations))


def block_encoding(participant: Participant, state: SessionState, mode: str, block_position: float) -> tuple[np.ndarray, np.ndarray]:
    """Log-rate encoding for one block: (weights (N_LATENT + n_noise_factors, 256), log baseline (256,)).

    ``block_position``: where the block falls in the session, -0.5 (first) .. 0.5 (last).
    """
    if mode not in SPEAKING_MODES:
        raise ValueError(f"speaking mode {mode!r} is not one of {SPEAKING_MODES}")
    tuning = state.tuning + block_position * state.tuning_trend
    log_base = state.log_baseline + block_position * state.baseline_trend
    if mode == "silent":
        tuning = tuning * silent_latent_gain(participant.params)[None, :] * np.exp(participant.silent_gain)[:, None]
        log_base = log_base + participant.silent_shift
    weights = np.concatenate([tuning, participant.noise_loadings], axis=1).T
    return np.ascontiguousarray(weights), log_base


def block_features(
    participant: Participant,
    state: SessionState,
    mode: str,
    block_position: float,
    drives: list[TrialDrive],
    rngs: list[np.random.Generator],
) -> list[np.ndarray]:
    """Raw (un-normalised) features of a block's trials: each (T_i, 512) float32.

    Columns: threshold crossings then spike band power, electrodes in the order
    ventral 6v, area 4, area 55b, dorsal 6v. One matrix product per block (not
    per trial) keeps BLAS efficient; each trial's noise comes from its own ``rngs[i]``.
    """
    p = participant.params
    weights, log_base = block_encoding(participant, state, mode, block_position)
    lengths = [d.latent.shape[0] for d in drives]
    drive = np.concatenate([np.concatenate([d.latent, d.shared_noise], axis=1) for d in drives], axis=0)
    # float32 from here: half the memory traffic, and ample precision for Poisson rates.
    log_rate = drive.astype(np.float32) @ weights.astype(np.float32) + log_base.astype(np.float32)[None, :]
    sbp_scale = participant.sbp_scale.astype(np.float32)
    kind = np.where(state.dead, participant.bad_kind, -1)
    out = []
    for d, rng, chunk in zip(drives, rngs, np.split(log_rate, np.cumsum(lengths)[:-1])):
        # Draws that version 1 did not make come from a child stream, so its data stay bit-identical.
        extra = rng.spawn(1)[0]
        chunk = _lead(chunk, participant.lead_bins) + np.float32(d.offset)
        chunk = _bad_channel_log_rate(chunk, kind, log_base, extra, p)
        bursts = _artefact_mask(chunk.shape, extra, p)
        if bursts is not None:
            chunk = chunk + np.float32(p.artefact_log_rate) * bursts
        rate = np.minimum(np.exp(chunk), np.float32(p.max_counts_per_bin))
        counts = rng.poisson(rate).astype(np.float32)
        # Spike band power follows the multi-unit rate, partly the very spikes counted, with log-normal noise.
        noise = np.exp(np.float32(p.sbp_noise) * rng.standard_normal(rate.shape, dtype=np.float32))
        sbp = sbp_scale * np.sqrt(0.5 * rate + 0.5 * counts + np.float32(0.2)) * noise
        off = _disconnected(chunk.shape, kind, extra, p)
        counts[off] = 0.0
        sbp[off] = (0.1 * np.broadcast_to(sbp_scale, sbp.shape))[off]
        out.append(np.concatenate([counts, sbp], axis=1))
    return out


def _lead(log_rate: np.ndarray, lead_bins: np.ndarray) -> np.ndarray:
    """Shift each electrode's log-rate (T, 256) earlier by its lead: bin t shows the drive of t + lead."""
    if not lead_bins.any():
        return log_rate
    n_bins = log_rate.shape[0]
    source = np.minimum(np.arange(n_bins)[:, None] + lead_bins[None, :], n_bins - 1)
    return np.take_along_axis(log_rate, source, axis=0)


def _bad_channel_log_rate(
    log_rate: np.ndarray, kind: np.ndarray, log_base: np.ndarray, rng: np.random.Generator, p: NeuralParams
) -> np.ndarray:
    """Replace the log-rate (T, 256) of noisy and drifting bad electrodes (``kind`` (256,), -1 = good)."""
    n_bins = log_rate.shape[0]
    noisy, drifting = np.flatnonzero(kind == NOISY), np.flatnonzero(kind == DRIFTING)
    if noisy.size == 0 and drifting.size == 0:
        return log_rate
    log_rate = log_rate.copy()
    if noisy.size:
        # broadband: white in time, high variance, nothing to do with speech
        level = log_base[noisy] + 0.5
        log_rate[:, noisy] = (level + 1.0 * rng.standard_normal((n_bins, noisy.size))).astype(np.float32)
    if drifting.size:
        # a trial-level offset plus a slow wander (sigma 1 s) within the trial
        offset = rng.normal(0.0, 0.7, drifting.size)
        wander = 0.6 * _smooth_noise(rng, n_bins, drifting.size, 1.0 / BIN_SECONDS)
        log_rate[:, drifting] = (log_base[drifting] + offset + wander).astype(np.float32)
    return log_rate


def _artefact_mask(shape: tuple[int, int], rng: np.random.Generator, p: NeuralParams) -> np.ndarray | None:
    """(T, 256) float32 burst strength (0 outside bursts) in an artefact trial, else None.

    With probability ``artefact_trial_fraction`` a trial gets 1-3 bursts of 2-5 bins
    each, on a random 40-100 % of the electrodes, with strength 0.5-1.5 (times
    ``artefact_log_rate``), as movement or electrical transients look in the release.
    """
    if p.artefact_trial_fraction <= 0 or rng.random() >= p.artefact_trial_fraction:
        return None
    n_bins, n_channels = shape
    mask = np.zeros(shape, dtype=np.float32)
    for _ in range(int(rng.integers(1, 4))):
        width = int(rng.integers(2, 6))
        start = int(rng.integers(0, max(1, n_bins - width)))
        hit = rng.random(n_channels) < rng.uniform(0.4, 1.0)
        mask[start : start + width, hit] = rng.uniform(0.5, 1.5)
    return mask


def _disconnected(shape: tuple[int, int], kind: np.ndarray, rng: np.random.Generator, p: NeuralParams) -> np.ndarray:
    """(T, 256) bool: where an electrode records nothing (flat ones always, intermittent ones for a span)."""
    off = np.zeros(shape, dtype=bool)
    off[:, kind == FLAT] = True
    n_bins = shape[0]
    for e in np.flatnonzero(kind == INTERMITTENT):
        if rng.random() < p.intermittent_trial_fraction:
            span = int(round(rng.uniform(0.2, 0.6) * n_bins))
            start = int(rng.integers(0, max(1, n_bins - span)))
            off[start : start + span, e] = True
    return off


def trial_features(
    participant: Participant,
    state: SessionState,
    phoneme_ids: np.ndarray | list[int],
    mode: str,
    words_per_minute: float,
    block_position: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """One trial: (raw features (T, 512) float32, frame labels (T,) int8: class per bin, 40 = silence/pause)."""
    drive = trial_drive(participant, phoneme_ids, mode, words_per_minute, rng)
    (features,) = block_features(participant, state, mode, block_position, [drive], [rng])
    return features, drive.labels


# --------------------------------------------------------------------------------------
# Normalisation as in the release.


def normalize_session(trials: list[np.ndarray], window: int = 20) -> list[np.ndarray]:
    """Z-score each trial with the per-feature mean and sd of the preceding ``window`` trials.

    ``trials``: a session's raw features in recording order, each (T_i, F).
    The first trial has no predecessors and is normalised with its own
    statistics; trial k uses trials max(0, k - window) .. k - 1. A feature
    that is constant over the window (a dead electrode) becomes exactly 0
    instead of dividing by zero. Returns float32 arrays of the same shapes.
    """
    if not trials:
        return []
    n_features = trials[0].shape[1]
    sums = np.zeros((len(trials) + 1, n_features))
    sumsq = np.zeros((len(trials) + 1, n_features))
    counts = np.zeros(len(trials) + 1)
    for k, x in enumerate(trials):
        x64 = x.astype(np.float64)
        sums[k + 1] = sums[k] + x64.sum(axis=0)
        sumsq[k + 1] = sumsq[k] + np.square(x64).sum(axis=0)
        counts[k + 1] = counts[k] + x.shape[0]
    out = []
    for k, x in enumerate(trials):
        lo, hi = (max(0, k - window), k) if k > 0 else (0, 1)
        n = counts[hi] - counts[lo]
        mean = (sums[hi] - sums[lo]) / n
        var = np.maximum((sumsq[hi] - sumsq[lo]) / n - mean**2, 0.0)
        std = np.sqrt(var)
        constant = std <= 1e-6 * np.maximum(np.abs(mean), 1.0)
        scale = np.where(constant, 0.0, 1.0 / np.where(constant, 1.0, std))
        out.append(((x - mean) * scale).astype(np.float32))
    return out
