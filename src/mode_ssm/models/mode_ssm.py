"""MODE-SSM: the whole decoder in one file, top to bottom in the order data flows.

    features (B, T, C), feature_lengths (B,), day_index (B,)
      -> select_channels (frontend.py), zero_constant_channels (data/augment.py)
         (causal=true: the causal forms of these steps, models/causal.py)
      -> day_layers: DayInputLayers                        "which day is this"
      -> preprocessor: normalise, gate, conv stem           time / downsample
      -> encoder: BiMambaEncoder                            ssm.py
      -> mode_head: p(z | X) and FiLM on its posterior      mode.py
         (reads the speaking rate from the CTC head's blank probability)
      -> flow_bridge: optional few-step denoiser            flow_bridge.py
      -> ctc_head (B, T', 41); rnnt: predictor + joiner     heads.py

The RNN-T joint is (B, T', U + 1, 41) and only the loss needs it in full, so
``forward`` builds it only when given ``rnnt_targets`` (training), and the flow
bridge's denoising loss only with ``denoise=True``: computed inside forward,
their parameters are seen by DistributedDataParallel.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from mode_ssm.models.causal import causal_live_channels
from mode_ssm.models.flow_bridge import FlowBridge
from mode_ssm.data.augment import zero_constant_channels
from mode_ssm.models.frontend import DayInputLayers, Preprocessor, select_channels
from mode_ssm.models.heads import CTCHead, RNNTHead
from mode_ssm.models.mode import ModeHead
from mode_ssm.models.ssm import BiMambaEncoder
from mode_ssm.phonemes import BLANK, NUM_CLASSES


@dataclass
class ModeSSMConfig:
    n_days: int = 1  # from the data: number of training sessions
    n_channels: int = 512  # from the data: features per bin delivered
    num_channels: int = 512  # features the model uses: 256 = threshold crossings only
    # causal: no output reads a future bin (models/causal.py; requires norm running|layer|none,
    # bidirectional false, flow_bridge false); the streaming decoder needs it
    causal: bool = False
    # front end
    day_softsign: bool = True
    input_dropout: float = 0.1
    norm: str = "trial"  # "trial" | "layer" | "none"
    channel_gates: bool = True
    downsample: int = 4
    stem_kernel: int = 8
    # encoder
    d_model: int = 128
    n_layers: int = 2
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    head_dim: int = 32
    chunk_size: int = 64
    bidirectional: bool = True
    dropout: float = 0.1
    use_cuda_kernel: str | bool = "auto"
    # speaking mode
    mode_conditioning: str = "film"  # "film" | "none"
    mode_hidden: int = 64
    # flow bridge
    flow_bridge: bool = True  # build it (its parameters exist either way it is switched)
    flow_bridge_enabled: bool = False  # apply it in forward; an untrained bridge is an identity anyway
    flow_steps: int = 4
    flow_hidden: int = 256
    flow_noise: float = 0.5
    # heads
    n_classes: int = NUM_CLASSES
    predictor_dim: int = 128
    predictor_layers: int = 1
    joiner_dim: int = 128
    # RNN-T loss: "full" builds the (B, T', U + 1, 41) joint; "pruned" (models/rnnt_pruned.py) a linear
    # "simple" joint for band bounds and the joiner on rnnt_prune_range label positions per frame only
    rnnt_loss: str = "full"  # "full" | "pruned"
    rnnt_prune_range: int = 5  # band width S (>= 2); a frame can emit at most S - 1 labels
    rnnt_simple_loss_scale: float = 0.5  # pruned only: rnnt = simple_scale * simple + pruned_scale * pruned
    rnnt_pruned_loss_scale: float = 1.0


class ModeSSM(nn.Module):
    COMPONENTS = ("day_layers", "preprocessor", "encoder", "mode_head", "flow_bridge", "ctc_head", "rnnt")

    def __init__(self, config: ModeSSMConfig):
        super().__init__()
        c = self.config = config
        if c.num_channels > c.n_channels:
            raise ValueError(f"num_channels={c.num_channels} but the data delivers only {c.n_channels}")
        if not (c.use_cuda_kernel == "auto" or isinstance(c.use_cuda_kernel, bool)):
            raise ValueError(f"use_cuda_kernel must be 'auto', true or false, got {c.use_cuda_kernel!r}")
        if c.causal:
            reads_future = {"bidirectional": c.bidirectional, "norm": c.norm == "trial", "flow_bridge": c.flow_bridge}
            bad = [name for name, yes in reads_future.items() if yes]
            if bad:
                raise ValueError(f"causal=true but {', '.join(f'{n}={getattr(c, n)}' for n in bad)} reads future bins: "
                                 "a causal model needs bidirectional=false, norm=running (or layer/none) and "
                                 "flow_bridge=false (see configs/model/mode_ssm_causal_small.yaml)")
        self.day_layers = DayInputLayers(c.n_days, c.num_channels, softsign=c.day_softsign, dropout=c.input_dropout)
        self.preprocessor = Preprocessor(
            c.num_channels,
            c.d_model,
            downsample=c.downsample,
            stem_kernel=c.stem_kernel,
            norm=c.norm,
            gates=c.channel_gates,
            dropout=c.dropout,
        )
        self.encoder = BiMambaEncoder(
            c.d_model,
            c.n_layers,
            d_state=c.d_state,
            d_conv=c.d_conv,
            expand=c.expand,
            head_dim=c.head_dim,
            chunk_size=c.chunk_size,
            dropout=c.dropout,
            bidirectional=c.bidirectional,
            use_cuda_kernel=c.use_cuda_kernel,
        )
        self.mode_head = ModeHead(c.d_model, c.mode_hidden, conditioning=c.mode_conditioning, dropout=c.dropout,
                                  causal=c.causal)
        self.flow_bridge = (
            FlowBridge(c.d_model, c.flow_steps, c.flow_hidden, c.flow_noise, enabled=c.flow_bridge_enabled)
            if c.flow_bridge
            else None
        )
        self.ctc_head = CTCHead(c.d_model, c.n_classes, dropout=c.dropout)
        self.rnnt = RNNTHead(
            c.d_model, c.predictor_dim, c.predictor_layers, c.joiner_dim, c.n_classes, dropout=c.dropout,
            loss=c.rnnt_loss, prune_range=c.rnnt_prune_range,
            simple_loss_scale=c.rnnt_simple_loss_scale, pruned_loss_scale=c.rnnt_pruned_loss_scale,
        )

    @classmethod
    def components_of(cls, config: ModeSSMConfig) -> tuple[str, ...]:
        """The components a model with ``config`` has (the flow bridge is optional)."""
        return tuple(c for c in cls.COMPONENTS if c != "flow_bridge" or config.flow_bridge)

    @classmethod
    def loss_reach(cls, config: ModeSSMConfig) -> dict[str, tuple[str, ...]]:
        """The components each training loss sends gradient to (what a curriculum stage may train with it)."""
        trunk = ("day_layers", "preprocessor", "encoder")
        shared = trunk + (("mode_head",) if config.mode_conditioning == "film" else ()) \
            + (("flow_bridge",) if config.flow_bridge and config.flow_bridge_enabled else ())
        return {"ctc": shared + ("ctc_head",), "rnnt": shared + ("rnnt",), "mode": trunk + ("mode_head",),
                "denoise": ("flow_bridge",) if config.flow_bridge else ()}

    def output_lengths(self, feature_lengths: torch.Tensor) -> torch.Tensor:
        """(B,) input bins -> (B,) output frames."""
        return self.preprocessor.output_lengths(feature_lengths)

    def forward(
        self,
        features: torch.Tensor,
        feature_lengths: torch.Tensor,
        day_index: torch.Tensor,
        mode_probs: torch.Tensor | None = None,
        *,
        rnnt_targets: torch.Tensor | None = None,
        denoise: bool = False,
        noise_generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        """features (B, T, C) zero-padded, feature_lengths (B,), day_index (B,) ->

        - ``phoneme_logits`` (B, T', n_classes): CTC logits
        - ``out_lengths`` (B,): valid frames, (T - stem_kernel) // downsample + 1
        - ``mode_logits`` (B, 2), ``mode_probs`` (B, 2): vocalized / silent
        - ``encoder_features`` (B, T', D): encoder output
        - ``conditioned_features`` (B, T', D): after FiLM (what the flow bridge denoises)
        - ``head_features`` (B, T', D): after the flow bridge (what CTC and RNN-T read)
        - ``rnnt_joint`` (B, T', U + 1, n_classes), only when ``rnnt_targets`` (B, U) are given
          and ``rnnt_loss`` is "full"; with "pruned" instead ``rnnt_simple_nll``, ``rnnt_pruned_nll``
          (B,), ``rnnt_target_lengths`` (B,) and ``rnnt_prune_starts`` (B, T') (``RNNTHead.pruned_losses``)
        - ``denoise_loss`` (scalar), the flow bridge's training loss, only when ``denoise``
          (its noise drawn from ``noise_generator`` if given)
        ``mode_probs`` given as input overrides the head's posterior in FiLM.
        Frames at or past ``out_lengths`` are zero in every feature tensor.
        The RNN-T joint and the denoising loss are computed here, inside forward,
        so that DistributedDataParallel sees every parameter a loss uses.
        """
        x = select_channels(features, self.config.num_channels)
        if self.config.causal:
            x, _ = causal_live_channels(x, feature_lengths)
        else:
            x = zero_constant_channels(x, feature_lengths)
        x = self.day_layers(x, day_index)
        x, out_lengths = self.preprocessor(x, feature_lengths)
        encoder_features = self.encoder(x, out_lengths)
        with torch.no_grad():  # speaking rate for the mode head: a read-out, not a path for the mode loss
            emission = 1.0 - self.ctc_head.proj(encoder_features).float().softmax(-1)[..., BLANK]
        conditioned, mode_logits, probs = self.mode_head(encoder_features, out_lengths, mode_probs, emission)
        head_features = conditioned if self.flow_bridge is None else self.flow_bridge(conditioned, out_lengths)
        out = {
            "phoneme_logits": self.ctc_head(head_features),
            "out_lengths": out_lengths,
            "mode_logits": mode_logits,
            "mode_probs": probs,
            "encoder_features": encoder_features,
            "conditioned_features": conditioned,
            "head_features": head_features,
        }
        if rnnt_targets is not None:
            if self.rnnt.loss == "pruned":  # the per-sequence losses; no full joint is built
                out.update(self.rnnt.pruned_losses(head_features, rnnt_targets, out_lengths))
            else:
                out["rnnt_joint"] = self.rnnt(head_features, rnnt_targets)
        if denoise:
            if self.flow_bridge is None:
                raise ValueError("denoise=True but this ModeSSM was built without a flow bridge (model.flow_bridge=false)")
            out["denoise_loss"] = self.flow_bridge.loss(conditioned, out_lengths, noise_generator)
        return out


# ---------------------------------------------------------------------------
# Which parts train (curriculum stages); works for any model with ``COMPONENTS``


def component_parameters(model: nn.Module, names: Sequence[str]) -> list[nn.Parameter]:
    """Exactly the parameters of the named components (``model.COMPONENTS``), each once.

    A component that is None (e.g. no flow bridge built) contributes nothing;
    a name the model does not have raises, so a typo in a stage cannot
    silently train nothing.
    """
    unknown = [n for n in names if n not in model.COMPONENTS]
    if unknown:
        raise ValueError(f"unknown component(s) {unknown}; {type(model).__name__} has {list(model.COMPONENTS)}")
    params: dict[int, nn.Parameter] = {}
    for name in names:
        module = getattr(model, name)
        if module is not None:
            params.update((id(p), p) for p in module.parameters())
    return list(params.values())


def set_trainable(model: nn.Module, names: Sequence[str]) -> list[nn.Parameter]:
    """Make the named components trainable and freeze every other parameter.

    Returns the trainable parameters: build the optimizer from these only, so
    weight decay and momentum cannot move frozen ones either.
    """
    trainable = component_parameters(model, names)
    keep = {id(p) for p in trainable}
    for p in model.parameters():
        p.requires_grad_(id(p) in keep)
    return trainable
