"""The curriculum, checked before any data is read: every stage names parts the model has.

``training.stages`` (configs/curriculum/) is a list of stages, each with
``name``, ``epochs``, ``components`` (what trains; everything else is frozen)
and ``loss_weights`` (``ctc``, ``rnnt``, ``mode``, ``denoise``; missing = 0).
Nothing is filtered: an unknown key, component or loss, a component the model
lacks, or a loss whose part the model lacks is an error that lists the valid
names, so a typo can never turn a stage into a silent no-op.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from mode_ssm.models.losses import LOSS_NAMES

# the part of the model each loss needs
LOSS_COMPONENT = {"ctc": "ctc_head", "rnnt": "rnnt", "mode": "mode_head", "denoise": "flow_bridge"}
STAGE_KEYS = ("name", "epochs", "components", "loss_weights")


class CurriculumError(ValueError):
    pass


@dataclass(frozen=True)
class Stage:
    name: str
    epochs: int
    components: tuple[str, ...]
    loss_weights: Mapping[str, float]  # every name in LOSS_NAMES

    @property
    def active_losses(self) -> list[str]:
        return [k for k in LOSS_NAMES if self.loss_weights[k]]


def plan_curriculum(stages: Any, components: Sequence[str], model_name: str,
                    reach: Mapping[str, Sequence[str]] | None = None) -> list[Stage]:
    """Check ``stages`` against the ``components`` a model has and return them as :class:`Stage` s.

    ``reach`` (loss -> components its gradient reaches, e.g. from
    :func:`mode_ssm.models.build.model_loss_reach`): if given, every component a
    stage trains must be reached by one of the stage's losses, else it would
    "train" without ever changing.
    """
    if not isinstance(stages, Sequence) or isinstance(stages, (str, bytes)) or not stages:
        raise CurriculumError(f"training.stages must be a non-empty list of stages, got {stages!r}")
    plan = []
    for i, stage in enumerate(stages):
        where = f"training.stages.{i}"
        if not isinstance(stage, Mapping):
            raise CurriculumError(f"{where}: a stage is a mapping with keys {list(STAGE_KEYS)}, got {stage!r}")
        unknown = sorted(set(stage) - set(STAGE_KEYS))
        if unknown:
            raise CurriculumError(f"{where}: unknown key(s) {unknown}; a stage has {list(STAGE_KEYS)}")
        missing = [k for k in ("name", "epochs", "components") if stage.get(k) is None]
        if missing:
            raise CurriculumError(f"{where}: missing {missing}")
        name = str(stage["name"])
        where = f"{where} ({name})"
        epochs = stage["epochs"]
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
            raise CurriculumError(f"{where}: epochs must be an integer >= 0, got {epochs!r}")
        names = stage["components"]
        if isinstance(names, str) or not isinstance(names, Sequence) or not names:
            raise CurriculumError(f"{where}: components must be a non-empty list, got {names!r}; "
                                  f"{model_name} has {list(components)}")
        bad = [c for c in names if c not in components]
        if bad:
            raise CurriculumError(f"{where}: unknown component(s) {bad} for {model_name}; valid: {list(components)}")
        weights_in = stage.get("loss_weights") or {}
        if not isinstance(weights_in, Mapping):
            raise CurriculumError(f"{where}: loss_weights must be a mapping of {list(LOSS_NAMES)} to weights")
        bad = sorted(set(weights_in) - set(LOSS_NAMES))
        if bad:
            raise CurriculumError(f"{where}: unknown loss(es) {bad}; valid: {list(LOSS_NAMES)}")
        weights = {}
        for k in LOSS_NAMES:
            w = weights_in.get(k, 0.0)
            if isinstance(w, bool) or not isinstance(w, (int, float)) or not w >= 0:
                raise CurriculumError(f"{where}: loss_weights.{k} must be a number >= 0, got {w!r}")
            weights[k] = float(w)
            if w and LOSS_COMPONENT[k] not in components:
                raise CurriculumError(f"{where}: loss {k} needs the {LOSS_COMPONENT[k]}, which {model_name} lacks "
                                      f"(it has {list(components)}); pick a curriculum for this model, "
                                      "e.g. curriculum=baseline_ctc for the GRU")
        if not any(weights.values()):
            raise CurriculumError(f"{where}: every loss weight is 0, so the stage would train nothing")
        if reach is not None:
            active = [k for k in LOSS_NAMES if weights[k]]
            unreached = [c for c in names if not any(c in reach.get(k, ()) for k in active)]
            if unreached:
                raise CurriculumError(f"{where}: trains {unreached}, which none of its losses {active} reaches "
                                      f"in {model_name} (loss -> components: {dict(reach)})")
        plan.append(Stage(name, int(epochs), tuple(dict.fromkeys(names)), weights))
    return plan
