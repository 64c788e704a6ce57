"""Write a simulated T15 data root: session folders, the block table CSV and simulation.json.

A data root written here reads like the real ``hdf5_data_final/`` folder:
``t15.YYYY.MM.DD/data_train.hdf5`` (and ``data_val.hdf5``/``data_test.hdf5``
where the session has Val/Test blocks), plus ``t15_copyTaskData_description.csv``
describing what was simulated, ``simulation.json`` (preset, seed, versions,
per-block speaking modes, normalisation, every generation parameter) and
``test_truth.csv``, the test labels (:mod:`mode_ssm.data.truth`), which only
scoring reads.

Trials carry the release's datasets and attributes; train and val trials also
carry ``speaking_mode`` ("vocalized" or "silent"), the only place the mode is
recorded in the HDF5 files. Test files carry no labels (and so no mode).
Features are normalised as the release's are, per session over the preceding
20 trials (:func:`mode_ssm.sim.neural.normalize_session`).

A root is written into a hidden sibling folder and renamed into place when
complete, so an interrupted run never leaves something that looks like data.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

import mode_ssm
from mode_ssm.data.blocks import TABLE_FILENAME, write_block_table
from mode_ssm.data.truth import TEST_TRUTH, TruthRow, write_test_truth
from mode_ssm.data.writer import TrialRecord, write_trials
from mode_ssm.sim.config import SimConfig, load_config, project_root
from mode_ssm.sim.neural import (
    ARRAYS,
    BIN_SECONDS,
    Participant,
    make_participant,
    block_features,
    normalize_session,
    session_state,
    trial_drive,
)
from mode_ssm.sim.plan import FILE_SPLITS, PlannedTrial, SimulationPlan, make_plan, speaking_mode_table

log = logging.getLogger(__name__)

# The code that wrote a root (simulation.json); a default root written by older code is re-simulated.
# The data model is the config's ``version`` (2, or 1 for the first version's data bit for bit).
SIMULATOR_VERSION = "2.0"
SIMULATION_JSON = "simulation.json"
DATA_ENV_VAR = "MODE_SSM_DATA_DIR"
NORMALIZATION_NOTE = (
    "As in the release ('normalized (z-scored) based on the preceding 20 trials'): within each session, in "
    "recording order across all blocks and splits, every feature of trial k is z-scored with the mean and "
    "standard deviation over all time bins of trials k-20..k-1; the first trial of a session uses its own "
    "statistics. A feature constant over that window (a dead electrode) is set to exactly 0."
)
_STREAM_TRIAL = 13


@dataclass(frozen=True)
class SimulatedTrial:
    trial: PlannedTrial
    features: np.ndarray  # (T, 512) float32, normalised
    frame_labels: np.ndarray  # (T,) int8: phoneme attempted per bin, 40 for silence and pauses


def simulate_session(plan: SimulationPlan, session: str, participant: Participant | None = None) -> list[SimulatedTrial]:
    """All trials of one session of ``plan`` in recording order, normalised (deterministic)."""
    participant = participant or make_participant(plan.seed, plan.config.neural)
    planned = plan.session_trials(session)
    if not planned:
        raise ValueError(f"session {session!r} is not part of this simulation ({plan.sessions})")
    state = session_state(participant, planned[0].day)
    raw, labels = [], []
    for (_, mode, position), group in itertools.groupby(planned, key=lambda t: (t.block_num, t.speaking_mode, t.block_position)):
        block = list(group)
        rngs = [np.random.default_rng([plan.seed, _STREAM_TRIAL, t.day, t.block_num, t.trial_num]) for t in block]
        drives = [trial_drive(participant, t.phoneme_ids, mode, t.words_per_minute, rng) for t, rng in zip(block, rngs)]
        raw += block_features(participant, state, mode, position, drives, rngs)
        labels += [d.labels for d in drives]
    normalised = normalize_session(raw, plan.config.neural.normalization_window)
    return [SimulatedTrial(t, x, y) for t, x, y in zip(planned, normalised, labels)]


def iter_simulated_sessions(plan: SimulationPlan, sessions: list[str] | None = None) -> Iterator[tuple[str, list[SimulatedTrial]]]:
    """(session, trials) for each session of the plan (or the given ones), in order."""
    participant = make_participant(plan.seed, plan.config.neural)
    for session in sessions or plan.sessions:
        yield session, simulate_session(plan, session, participant)


def _records(trials: list[SimulatedTrial], split: str, write_alignment: bool) -> list[TrialRecord]:
    out = []
    for s in trials:
        t = s.trial
        extra: dict[str, Any] = {}
        if split != "test":
            extra["speaking_mode"] = t.speaking_mode
        if write_alignment:
            extra["frame_phoneme_ids"] = s.frame_labels
        out.append(
            TrialRecord(
                features=s.features,
                session=t.session,
                block_num=t.block_num,
                trial_num=t.trial_num,
                sentence=t.sentence if split != "test" else None,
                phoneme_ids=list(t.phoneme_ids) if split != "test" else None,
                extra_attrs=extra,
            )
        )
    return out


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _write_root(plan: SimulationPlan, root: Path, progress: bool) -> dict[str, Any]:
    participant = make_participant(plan.seed, plan.config.neural)
    dead: dict[str, int] = {}
    truth: list[TruthRow] = []  # the test labels, kept out of the session folders
    sessions = plan.sessions
    bar = None
    if progress:
        from rich.progress import Progress

        bar = Progress()
        bar.start()
        task = bar.add_task(f"simulating {plan.config.name}", total=len(sessions))
    try:
        for session in sessions:
            trials = simulate_session(plan, session, participant)
            dead[session] = int(session_state(participant, trials[0].trial.day).dead.sum())
            for split in FILE_SPLITS:
                chosen = [s for s in trials if s.trial.split == split]
                if chosen:
                    write_trials(
                        root / session / f"data_{split}.hdf5",
                        _records(chosen, split, plan.config.write_alignment),
                        with_labels=split != "test",
                    )
                if split == "test":
                    truth += [TruthRow(-1, session, s.trial.block_num, s.trial.trial_num, f"trial_{i:04d}",
                                       s.trial.sentence, tuple(int(p) for p in s.trial.phoneme_ids),
                                       s.trial.speaking_mode) for i, s in enumerate(chosen)]
            if bar is not None:
                bar.advance(task)
    finally:
        if bar is not None:
            bar.stop()
    write_block_table(root / TABLE_FILENAME, plan.block_table())
    if truth:  # ids in submission order: sessions chronologically (their names sort so), then file order
        truth.sort(key=lambda r: r.session)  # stable: file order within a session
        write_test_truth(root / TEST_TRUTH, [replace(r, id=i) for i, r in enumerate(truth)])
    return dead



def simulation_record(plan: SimulationPlan, dead_electrodes: Mapping[str, int] | None = None) -> dict[str, Any]:
    """What simulation.json holds (deterministic for the plan)."""
    return {
        "simulator_version": SIMULATOR_VERSION,
        "mode_ssm_version": mode_ssm.__version__,
        "preset": plan.config.name,
        "seed": plan.seed,
        "config": plan.config.to_dict(),
        "counts": plan.counts(),
        "sessions": plan.sessions,
        "bin_seconds": BIN_SECONDS,
        "feature_order": "0-255 threshold crossings, 256-511 spike band power; electrodes in 64s: " + ", ".join(ARRAYS),
        "normalization": NORMALIZATION_NOTE,
        "speaking_mode_note": "trial attribute 'speaking_mode' in train and val files only; not derivable from any other field",
        "dead_electrodes": dict(dead_electrodes or {}),
        "blocks": speaking_mode_table(plan),
    }


def simulate(
    cfg_or_preset_name: str | Mapping[str, Any] | SimConfig = "mini",
    output_dir: str | os.PathLike | None = None,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = False,
    **overrides: Any,
) -> dict[str, Any]:
    """Simulate a data root and return a summary (root, counts, seconds, bytes).

    ``cfg_or_preset_name``: "mini", "bench", "full", a mapping of SimConfig
    fields or a SimConfig; ``overrides`` update it (e.g. ``write_alignment=True``).
    ``output_dir`` None means the default root (see :func:`default_data_root`).
    An existing non-empty ``output_dir`` is replaced only with ``overwrite`` and
    only if this simulator wrote it (it holds simulation.json).
    """
    start = time.perf_counter()
    config = load_config(cfg_or_preset_name, **overrides)
    final = Path(output_dir).expanduser() if output_dir is not None else default_data_root(config.name, seed)
    final = final.resolve()
    _check_replaceable(final, overwrite)
    plan = make_plan(config, seed)

    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.partial-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        dead = _write_root(plan, tmp, progress)
        record = simulation_record(plan, dead)
        record["seconds_to_write"] = round(time.perf_counter() - start, 2)
        # Written last: a root with simulation.json is complete.
        (tmp / SIMULATION_JSON).write_text(json.dumps(record, indent=1) + "\n")
        _move_into_place(tmp, final, overwrite)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    summary = {
        "root": str(final),
        "preset": config.name,
        "seed": int(seed),
        "counts": plan.counts(),
        "n_sessions": len(plan.sessions),
        "seconds": round(time.perf_counter() - start, 2),
        "bytes": _dir_bytes(final),
    }
    log.debug("simulated %s", summary)
    return summary


def _check_replaceable(final: Path, overwrite: bool) -> None:
    if final.exists() and not final.is_dir():
        raise FileExistsError(f"{final} exists and is not a folder")
    if final.is_dir() and any(final.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{final} is not empty; pass overwrite=true to replace a simulated data root")
        if not (final / SIMULATION_JSON).is_file():
            raise FileExistsError(f"{final} holds files this simulator did not write (no {SIMULATION_JSON}); refusing to replace it")


def _move_into_place(tmp: Path, final: Path, overwrite: bool) -> None:
    if final.is_dir() and not any(final.iterdir()):
        final.rmdir()
    if not final.exists():
        try:
            tmp.rename(final)
            return
        except OSError:
            if not final.exists():
                raise
    # Someone (another process, or the old root) is there now.
    _check_replaceable(final, overwrite)
    old = final.parent / f".{final.name}.old-{os.getpid()}"
    final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old)


def default_data_root(preset: str = "mini", seed: int = 0) -> Path:
    """$MODE_SSM_DATA_DIR if set; else <project>/data/simulated/<preset>_seed<seed>; else ~/.cache/mode-ssm/simulated/..."""
    env = os.environ.get(DATA_ENV_VAR)
    if env:
        return Path(env).expanduser().resolve()
    root = project_root()
    base = root / "data" / "simulated" if root is not None else Path.home() / ".cache" / "mode-ssm" / "simulated"
    return base / f"{preset}_seed{int(seed)}"


def is_complete_root(root: str | os.PathLike) -> bool:
    """A simulated root with its simulation.json, or a real-data root (session folders, no simulation.json)."""
    root = Path(root)
    if (root / SIMULATION_JSON).is_file():
        return True
    return root.is_dir() and any(p.is_dir() and p.name.startswith("t15.") for p in root.iterdir())


def ensure_default_data(preset: str = "mini", seed: int = 0) -> Path:
    """The default data root, simulated first if it is missing (or was written by an older simulator)."""
    root = default_data_root(preset, seed)
    if is_complete_root(root):
        meta_path = root / SIMULATION_JSON
        if not meta_path.is_file():
            return root  # real data (or a root someone else made): use as is
        meta = json.loads(meta_path.read_text())
        if meta.get("simulator_version") == SIMULATOR_VERSION:
            return root
        if (meta.get("preset"), meta.get("seed")) != (preset, int(seed)):
            # Someone else's simulation (e.g. $MODE_SSM_DATA_DIR pointing at a bench root): never replace it.
            log.warning("%s was written by simulator %s (preset %s, seed %s); using it as is",
                        root, meta.get("simulator_version"), meta.get("preset"), meta.get("seed"))
            return root
        log.warning("%s was written by simulator %s; re-simulating with %s", root, meta.get("simulator_version"), SIMULATOR_VERSION)
        simulate(preset, root, seed, overwrite=True)
        return root
    log.warning("no data at %s; simulating preset %r (seed %d) there", root, preset, seed)
    try:
        simulate(preset, root, seed)
    except FileExistsError:
        if not is_complete_root(root):  # another process finished first is fine; anything else is not
            raise
    return root
