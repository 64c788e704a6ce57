"""Simulation presets and the configuration object.

The Hydra CLI composes ``configs/simulate.yaml`` with one file of the
``configs/preset/`` group (``preset=mini|bench|full``); the Python API takes a
preset name or a mapping. Names are looked up in the project's
``configs/preset/NAME.yaml`` when the package runs from a checkout, and in the
built-in :data:`PRESETS` (kept equal to those files by a test) otherwise.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from mode_ssm.sim.corpus import CORPORA
from mode_ssm.sim.neural import NEURAL_V1, SIM_VERSIONS, NeuralParams

# The first four sessions of the release (days 25-34 after implant), where T15 began with a 50-word vocabulary.
QUICK_SESSIONS = ("t15.2023.08.11", "t15.2023.08.13", "t15.2023.08.18", "t15.2023.08.20")
MINI_SESSIONS = ("t15.2023.08.13", "t15.2023.10.22", "t15.2024.03.15", "t15.2025.01.12")
# 11 sessions evenly spaced over the 45 (first to last day), so drift is visible.
BENCH_SESSIONS = (
    "t15.2023.08.11", "t15.2023.08.25", "t15.2023.09.29", "t15.2023.10.13", "t15.2023.11.04", "t15.2023.12.03",
    "t15.2023.12.29", "t15.2024.03.17", "t15.2024.06.14", "t15.2025.01.12", "t15.2025.04.13",
)  # fmt: skip

PRESETS: dict[str, dict[str, Any]] = {
    "mini": {
        "name": "mini",
        "version": 2,
        "sessions": list(MINI_SESSIONS),
        "trial_fraction": 0.25,
        "max_words": 6,
        "drop_fraction": 0.0,
        "silent_fraction": 0.4,
        "neural": {},
    },
    "quick": {
        "name": "quick",
        "version": 2,
        "sessions": list(QUICK_SESSIONS),
        "trial_fraction": 2.0,
        "max_words": None,
        "drop_fraction": 0.0,
        "silent_fraction": 0.4,
        "corpus": "50-Word",
        "neural": {"silent_wpm": 60.0},
    },
    "bench": {
        "name": "bench",
        "version": 2,
        "sessions": list(BENCH_SESSIONS),
        "trial_fraction": 0.8,
        "max_words": None,
        "drop_fraction": 0.0,
        "silent_fraction": 0.4,
        "neural": {},
    },
    "full": {
        "name": "full",
        "version": 2,
        "sessions": None,
        "trial_fraction": 1.0,
        "max_words": None,
        # The release holds 10,948 of the table's 11,162 sentences; about 1.9 % were not released.
        "drop_fraction": 0.019,
        "silent_fraction": 0.4,
        "neural": {},
    },
}


@dataclass(frozen=True)
class SimConfig:
    """What to simulate (the seed is separate)."""

    name: str = "custom"
    version: int = 2  # simulator version (SIM_VERSIONS); 1 writes the first version's data bit for bit
    sessions: tuple[str, ...] | None = None  # None: all 45 sessions of the block table
    trial_fraction: float = 1.0  # sentences per block relative to the real table (at least 1 per block)
    max_words: int | None = None  # cap on words per sentence (short sentences for quick demos)
    drop_fraction: float = 0.0  # share of trials left out, as the release left some out
    silent_fraction: float = 0.4  # share of blocks spoken in attempted silent mode
    # Every block's sentences from this corpus (e.g. "50-Word"), whatever the block table names;
    # None: the table's corpus per block. Blocks keep their Train or Val/Test split.
    corpus: str | None = None
    neural: NeuralParams = dataclasses.field(default_factory=NeuralParams)
    write_alignment: bool = False  # add each trial's frame labels (attr frame_phoneme_ids); benchmarks only
    # Val/test word mix: the grammar's chance of a hand-written core word (conversational 0.8) is
    # scaled by this for val/test sentences only, so they lean on rarer words than the train text
    # a language model is built from (version 2: 0.5; version 1: 1.0, the same mix).
    val_test_core_weight: float = 0.5

    @classmethod
    def from_mapping(cls, cfg: Mapping[str, Any]) -> "SimConfig":
        cfg = dict(cfg)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(cfg) - names)
        if unknown:
            raise ValueError(f"unknown simulation setting(s) {unknown}; known: {sorted(names)}")
        version = cfg.get("version", 2)
        if version not in SIM_VERSIONS:
            raise ValueError(f"simulator version must be one of {SIM_VERSIONS}, got {version!r}")
        cfg["version"] = int(version)
        core_weight = cfg.get("val_test_core_weight", 1.0 if version == 1 else 0.5)
        if not 0.0 < float(core_weight) <= 1.25:
            raise ValueError(f"val_test_core_weight must be in (0, 1.25], got {core_weight}")
        if cfg.get("sessions") is not None:
            cfg["sessions"] = tuple(str(s) for s in cfg["sessions"])
        if not 0.0 < float(cfg.get("trial_fraction", 1.0)) <= 10.0:
            raise ValueError(f"trial_fraction must be in (0, 10], got {cfg['trial_fraction']}")
        if not 0.0 <= float(cfg.get("drop_fraction", 0.0)) < 0.5:
            raise ValueError(f"drop_fraction must be in [0, 0.5), got {cfg['drop_fraction']}")
        if not 0.0 <= float(cfg.get("silent_fraction", 0.4)) <= 1.0:
            raise ValueError(f"silent_fraction must be in [0, 1], got {cfg['silent_fraction']}")
        if cfg.get("corpus") is not None and cfg["corpus"] not in CORPORA:
            raise ValueError(f"corpus must be one of {list(CORPORA)} or null, got {cfg['corpus']!r}")
        if cfg.get("max_words") is not None and int(cfg["max_words"]) < 1:
            raise ValueError(f"max_words must be >= 1, got {cfg['max_words']}")
        neural = cfg.get("neural")
        if version == 1:
            # the first version's settings under whatever the caller set explicitly
            cfg.setdefault("val_test_core_weight", 1.0)
            if not isinstance(neural, NeuralParams):
                neural = {**NEURAL_V1, **dict(neural or {})}
        cfg["neural"] = neural if isinstance(neural, NeuralParams) else NeuralParams.from_dict(neural)
        return cls(**cfg)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["sessions"] = list(self.sessions) if self.sessions is not None else None
        return out


def project_root() -> Path | None:
    """The checkout holding pyproject.toml above the installed package (editable installs), else None."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "pyproject.toml").is_file() and (parent / "src" / "mode_ssm").is_dir():
            return parent
    return None


def preset_mapping(name: str) -> dict[str, Any]:
    """The preset's settings: from ``configs/preset/NAME.yaml`` in a checkout, else the built-in copy."""
    root = project_root()
    path = root / "configs" / "preset" / f"{name}.yaml" if root else None
    if path is not None and path.is_file():
        from omegaconf import OmegaConf

        return OmegaConf.to_container(OmegaConf.load(path), resolve=True)  # type: ignore[return-value]
    if name not in PRESETS:
        raise ValueError(f"unknown simulation preset {name!r}; known: {sorted(PRESETS)}")
    return dict(PRESETS[name])


def load_config(cfg_or_preset_name: str | Mapping[str, Any] | SimConfig, **overrides: Any) -> SimConfig:
    """A preset name ("mini", "bench", "full"), a mapping (e.g. Hydra's ``cfg.preset``) or a SimConfig."""
    if isinstance(cfg_or_preset_name, SimConfig):
        base = cfg_or_preset_name.to_dict()
        base["neural"] = cfg_or_preset_name.neural
    elif isinstance(cfg_or_preset_name, str):
        base = preset_mapping(cfg_or_preset_name)
    else:
        try:
            from omegaconf import DictConfig, OmegaConf

            if isinstance(cfg_or_preset_name, DictConfig):
                cfg_or_preset_name = OmegaConf.to_container(cfg_or_preset_name, resolve=True)  # type: ignore[assignment]
        except ImportError:  # pragma: no cover - omegaconf is a dependency
            pass
        base = dict(cfg_or_preset_name)  # type: ignore[arg-type]
    base.update(overrides)
    return SimConfig.from_mapping(base)
