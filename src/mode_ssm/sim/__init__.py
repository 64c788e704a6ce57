"""Realistic T15 simulator: sentences (corpus), neural features (neural), layout on disk (simulate).

Quick use::

    from mode_ssm.sim import ensure_default_data, simulate
    root = ensure_default_data()              # data/simulated/mini_seed0, simulated if missing
    simulate("bench", "/tmp/bench", seed=0)   # or: python scripts/simulate.py preset=bench output_dir=/tmp/bench
"""

from __future__ import annotations

from mode_ssm.sim.config import PRESETS, SimConfig, load_config
from mode_ssm.sim.corpus import CORPORA, FIFTY_WORDS, SentenceGenerator
from mode_ssm.sim.neural import NeuralParams, make_participant, normalize_session, session_state
from mode_ssm.sim.plan import SimulationPlan, corpus_text, make_plan
from mode_ssm.sim.simulate import (
    SIMULATION_JSON,
    SimulatedTrial,
    default_data_root,
    ensure_default_data,
    is_complete_root,
    iter_simulated_sessions,
    simulate,
    simulate_session,
)

__all__ = [
    "CORPORA",
    "FIFTY_WORDS",
    "NeuralParams",
    "PRESETS",
    "SIMULATION_JSON",
    "SentenceGenerator",
    "SimConfig",
    "SimulatedTrial",
    "SimulationPlan",
    "corpus_text",
    "default_data_root",
    "ensure_default_data",
    "is_complete_root",
    "iter_simulated_sessions",
    "load_config",
    "make_participant",
    "make_plan",
    "normalize_session",
    "session_state",
    "simulate",
    "simulate_session",
]
