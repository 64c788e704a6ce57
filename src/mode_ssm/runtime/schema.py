"""Typed configuration: every option's type, range and allowed values, checked before any data is read.

Each command's config (configs/train.yaml, evaluate.yaml, ...) sits on a
dataclass schema registered in Hydra's ConfigStore (``register``) and named
first in its defaults list, so OmegaConf refuses a value of the wrong type
(``training.batch_size=abc``) or an unknown key while composing, naming the
key. Ranges and choices live in each field's metadata and :func:`check_values`
checks them, one line per mistake: ``training.batch_size=-4: must be >= 1``.

Rules (field metadata): ``choices`` (allowed values; None allowed only if
listed), ``ge`` / ``gt`` / ``le`` / ``lt`` (bounds; None passes when the field
is Optional), ``each`` (a dict of these rules for every element of a list),
``required`` (None is refused).
"""

# no `from __future__ import annotations`: OmegaConf and check_values read the field types as objects
import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any, List, Optional

from omegaconf import MISSING, DictConfig, OmegaConf

DEVICES = ("auto", "cpu", "cuda")
ON_BAD_SESSION = ("error", "skip")
VALIDATE = ("full", "metadata", "none")
DECODERS = ("ctc_lm", "ctc_greedy", "rnnt_greedy", "rnnt_beam")
UNSEEN = ("nearest", "identity")


def option(default: Any = MISSING, **rules: Any) -> Any:
    """A schema field with a default (a list, dict or schema default is copied per instance) and checking rules."""
    if isinstance(default, (list, dict)) or dataclasses.is_dataclass(default):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=rules)
    return field(default=default, metadata=rules)


@dataclass
class WandbSchema:
    enabled: bool = False
    project: str = "mode-ssm"
    entity: Optional[str] = None
    run_name: Optional[str] = None
    tags: List[str] = option([])
    notes: Optional[str] = None
    init_timeout: float = option(90.0, gt=0)  # seconds wandb.init may take before falling back to offline


@dataclass
class DecodingSchema:
    """configs/decoding/: the lexicon + n-gram search. None (decoding/from_checkpoint) = the checkpoint's value."""

    lm_order: Optional[int] = option(3, ge=1, le=6)
    lm_weight: Optional[float] = option(1.0, ge=0)
    word_score: Optional[float] = None
    beam: Optional[int] = option(50, ge=1)
    beam_size_token: Optional[int] = option(20, ge=1)
    beam_threshold: Optional[float] = option(25.0, gt=0)
    extra_vocabulary: Optional[int] = option(5000, ge=0)


@dataclass
class RNNTSchema:
    """configs/rnnt/: the RNN-T searches."""

    beam: int = option(4, ge=1)
    max_symbols_per_frame: int = option(3, ge=1)
    nbest: int = option(4, ge=1)
    mismatch_penalty: float = option(1.0, ge=0)


def check_values(cfg: DictConfig, schema: type, prefix: str = "") -> None:
    """Check every field of ``schema`` in ``cfg`` against its rules; ValueError naming the first bad key.

    A key the schema does not have (added with Hydra's ``+key=value``) is an error too: it would be ignored.
    """
    names = [f.name for f in dataclasses.fields(schema)]
    unknown = [k for k in cfg.keys() if k not in names]
    if unknown:
        raise ValueError(f"{prefix}{unknown[0]} is not an option (it would be ignored); the options of "
                         f"{prefix.rstrip('.') or 'this command'} are {names}")
    for f in dataclasses.fields(schema):
        key = f"{prefix}{f.name}"
        if OmegaConf.is_missing(cfg, f.name):
            raise ValueError(f"{key} is required: give it on the command line, e.g. {key}=...")
        value = cfg[f.name]
        if isinstance(f.type, type) and dataclasses.is_dataclass(f.type):
            check_values(value, f.type, key + ".")
            continue
        rules = dict(f.metadata)
        each = rules.pop("each", None)
        _check(key, value, rules)
        if each and value is not None:
            for i, item in enumerate(value):
                _check(f"{key}[{i}]", item, each)


def _check(key: str, value: Any, rules: dict) -> None:
    if value is None:
        if rules.get("required") or ("choices" in rules and None not in rules["choices"]):
            allowed = f": one of {[c for c in rules['choices'] if c is not None]}" if "choices" in rules else ""
            raise ValueError(f"{key}=null: a value is required{allowed}")
        return
    if "choices" in rules and value not in rules["choices"]:
        raise ValueError(f"{key}={value!r}: must be one of {[c for c in rules['choices'] if c is not None]}"
                         + (" or null" if None in rules["choices"] else ""))
    for rule, ok, words in (("ge", lambda v, b: v >= b, ">="), ("gt", lambda v, b: v > b, ">"),
                            ("le", lambda v, b: v <= b, "<="), ("lt", lambda v, b: v < b, "<")):
        if rule in rules and not ok(value, rules[rule]):
            raise ValueError(f"{key}={value!r}: must be {words} {rules[rule]}")


def register(name: str, schema: type) -> None:
    """Store ``schema`` in Hydra's ConfigStore as ``name`` (the first entry of the config's defaults list)."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name=name, node=schema)
