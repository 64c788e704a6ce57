"""AdamW parameter groups: which parameters weight decay applies to.

As in the Mamba reference implementation and most transformer recipes, decay
applies only to weight matrices and convolution kernels (tensors of two or
more dimensions). Exempt:

- the SSM's ``A_log``, ``D`` and ``dt_bias`` (its dynamics: decaying ``A_log``
  towards 0 pulls every state towards a decay rate of 1/e per step, ``dt_bias``
  sets the time scale);
- every bias, norm scale and the channel gates (vectors);
- the day input layers: they start as the identity and should stay near it
  unless a day's data says otherwise. Decay pulls towards zero, i.e. towards
  erasing the input, not towards the identity; a smoothness or identity prior
  would be a separate, named penalty, so they are not decayed at all.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

NO_DECAY_LEAVES = ("A_log", "D", "dt_bias")
NO_DECAY_PREFIXES = ("day_layers.",)


def decays(name: str, param: torch.Tensor) -> bool:
    """Whether weight decay applies to the parameter ``name`` (its name in ``model.named_parameters()``)."""
    leaf = name.rsplit(".", 1)[-1]
    if leaf in NO_DECAY_LEAVES or name.startswith(NO_DECAY_PREFIXES):
        return False
    return param.ndim >= 2


def parameter_groups(model: nn.Module, params: Iterable[torch.Tensor], weight_decay: float) -> list[dict]:
    """Two AdamW groups over ``params`` (a subset of ``model``'s): decayed and not decayed.

    Every parameter lands in exactly one group; a parameter not in ``model`` is an error.
    """
    names = {id(p): n for n, p in model.named_parameters()}
    decay, no_decay = [], []
    for p in params:
        if id(p) not in names:
            raise ValueError("parameter_groups: a parameter does not belong to the model")
        (decay if decays(names[id(p)], p) else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": float(weight_decay)}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]
