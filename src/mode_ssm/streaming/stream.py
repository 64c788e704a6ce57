"""A causal MODE-SSM run chunk by chunk (see the package docstring)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mode_ssm.decoding.lexicon_decoder import WordDecoder, WordHypothesis
from mode_ssm.decoding.rnnt_search import GreedyTransducer
from mode_ssm.data.augment import Augmenter, causal_live_mask, causal_smooth
from mode_ssm.models.causal import causal_live_channels
from mode_ssm.models.frontend import select_channels
from mode_ssm.phonemes import BLANK


def require_causal(model: torch.nn.Module, where: Any) -> None:
    """A ValueError naming ``where`` unless ``model`` is causal (what streaming needs)."""
    if not getattr(getattr(model, "config", None), "causal", False):
        raise ValueError(f"{where} holds a model that reads future bins (causal=false); streaming needs one "
                         "trained with model=mode_ssm_causal_small or model=mode_ssm_causal")


class CausalStream:
    """One trial at a time through a causal ``ModeSSM``: bins in, CTC log-probabilities of completed frames out.

    ``push(bins)`` takes (n, C) bins, n >= 0, C the features the model was trained on, and returns
    the (m, 41) log-probabilities of the m frames those bins complete (a frame needs ``stem_kernel``
    bins and starts every ``downsample`` bins). ``reset(day_index)`` starts the next trial. The model
    is put in eval mode and never changed. ``augmenter``: the input pipeline the model was
    trained with (``LoadedModel.eval_augmenter()``: dead-channel zeroing and smoothing over
    past bins), applied with its own carried state; None applies none.
    """

    def __init__(self, model: torch.nn.Module, day_index: int = 0, augmenter: Augmenter | None = None):
        config = getattr(model, "config", None)
        if not getattr(config, "causal", False):
            raise ValueError(f"streaming needs a causal model (model=mode_ssm_causal or mode_ssm_causal_small); "
                             f"this is {type(model).__name__} with causal="
                             f"{getattr(config, 'causal', 'n/a')}: its output at a bin depends on later bins")
        if augmenter is not None and not augmenter.config.causal:
            raise ValueError("the input pipeline of a causal model must be causal (AugmentConfig.causal=true)")
        self.model = model.eval()
        self.input = augmenter.config if augmenter is not None else None
        self.device = next(model.parameters()).device
        self.reset(day_index)

    def reset(self, day_index: int | None = None) -> None:
        if day_index is not None:
            if not 0 <= int(day_index) < self.model.day_layers.n_days:
                raise IndexError(f"day_index {day_index} out of range: the model has "
                                 f"{self.model.day_layers.n_days} day layers")
            self.day_index = int(day_index)
        self._input_live = self._smooth = self._live = self._norm = self._encoder = self._mode = None
        self._pending = torch.zeros(1, 0, self.model.config.num_channels, device=self.device)
        self.bins = self.frames = 0
        self.head_features = torch.zeros(1, 0, self.model.config.d_model, device=self.device)
        self.mode_probs: torch.Tensor | None = None  # (2,) the running posterior after the last frame

    @torch.no_grad()
    def push(self, bins: Any) -> torch.Tensor:
        m = self.model
        x = torch.as_tensor(np.asarray(bins, dtype=np.float32), device=self.device)
        if x.ndim != 2 or x.shape[1] != m.config.n_channels:
            raise ValueError(f"a chunk must be (n_bins, {m.config.n_channels}) features, got shape {tuple(x.shape)}")
        if not bool(torch.isfinite(x).all()):
            raise ValueError("the chunk holds NaN or infinite features")
        self.bins += x.shape[0]
        x, length = x[None], torch.tensor([x.shape[0]], device=self.device)
        if self.input is not None:  # what Augmenter(causal=True) does at evaluation, a chunk at a time
            live, self._input_live = causal_live_mask(x, length, self._input_live)
            x = x * live.to(x.dtype)
            if self.input.smooth_std > 0:
                x, self._smooth = causal_smooth(x, length, self.input.smooth_std, self.input.smooth_kernel_size,
                                                self._smooth)
        x = select_channels(x, m.config.num_channels)
        x, self._live = causal_live_channels(x, length, self._live)
        x = m.day_layers(x, torch.tensor([self.day_index], device=self.device))
        x, self._norm = m.preprocessor.normalise(x, length, self._norm)
        buffer = torch.cat([self._pending, x], dim=1)
        kernel, stride = m.preprocessor.stem_kernel, m.preprocessor.downsample
        n_frames = 0 if buffer.shape[1] < kernel else (buffer.shape[1] - kernel) // stride + 1
        if n_frames == 0:
            self._pending = buffer
            self.head_features = buffer.new_zeros(1, 0, m.config.d_model)
            return torch.zeros(0, m.config.n_classes)
        frames = m.preprocessor.stem_frames(buffer[:, : (n_frames - 1) * stride + kernel])
        self._pending = buffer[:, n_frames * stride:]
        encoded, self._encoder = m.encoder(frames, None, states=self._encoder, return_states=True)
        emission = 1.0 - m.ctc_head.proj(encoded).float().softmax(-1)[..., BLANK]
        lengths = torch.tensor([n_frames], device=self.device)
        conditioned, _, frame_probs, self._mode = m.mode_head.causal_forward(encoded, lengths, None, emission,
                                                                              self._mode)
        self.mode_probs = frame_probs[0, -1]
        self.head_features = conditioned  # (1, m, D): what the CTC head and the RNN-T joiner read
        self.frames += n_frames
        return F.log_softmax(m.ctc_head(conditioned).float(), dim=-1)[0].cpu()


@dataclass
class Partial:
    words: tuple[str, ...]  # the best hypothesis's completed words so far (empty without a word decoder)
    phonemes: list[int]  # greedy CTC phoneme ids so far
    frames: int  # output frames so far
    silent_ms: float  # how long the blank has dominated at the end (for an end-of-sentence detector)
    rnnt_phonemes: list[int] | None = None  # the RNN-T greedy search's labels so far (``transducer=True``)

    @property
    def text(self) -> str:
        return " ".join(self.words)


@dataclass
class Final(Partial):
    hypotheses: list[WordHypothesis] = field(default_factory=list)  # the n-best, best first
    log_probs: torch.Tensor | None = None  # (T', 41), the whole trial's


class IncrementalWordSearch:
    """The lexicon + n-gram beam search of a ``WordDecoder``, fed frame by frame."""

    def __init__(self, word_decoder: WordDecoder):
        self.decoder = word_decoder
        self.decoder.begin()

    def begin(self) -> None:
        self.decoder.begin()

    def step(self, log_probs: torch.Tensor) -> tuple[str, ...]:
        self.decoder.step(log_probs)
        return self.decoder.best_words()

    def end(self) -> list[WordHypothesis]:
        return self.decoder.end()


class StreamingDecoder:
    """Bins in, partial words and phonemes out after every chunk; ``finish()`` gives the final words.

    ``word_decoder`` None gives phonemes only. ``blank_threshold``: a frame counts as silent
    when its blank probability is at least this (``Partial.silent_ms`` is how long the run of
    such frames at the end lasts), for a trailing-silence end-of-sentence detector.
    ``transducer=True`` also runs the RNN-T head's greedy search, its predictor state carried
    from chunk to chunk (``Partial.rnnt_phonemes``).
    """

    def __init__(self, model: torch.nn.Module, word_decoder: WordDecoder | None = None, day_index: int = 0,
                 augmenter: Augmenter | None = None, blank_threshold: float = 0.9, transducer: bool = False,
                 max_symbols_per_frame: int = 3):
        self.stream = CausalStream(model, day_index, augmenter)
        self.transducer = transducer
        self.max_symbols_per_frame = max_symbols_per_frame
        self.frame_ms = 20.0 * model.preprocessor.downsample
        self.search = IncrementalWordSearch(word_decoder) if word_decoder is not None else None
        self.blank_threshold = blank_threshold
        self.start(day_index)

    def start(self, day_index: int | None = None) -> None:
        """Begin a new trial (``day_index``: its session's day layer; None keeps the last)."""
        self.stream.reset(day_index)
        if self.search is not None:
            self.search.begin()
        self._log_probs: list[torch.Tensor] = []
        self._phonemes: list[int] = []
        self._last_label: int | None = None
        self._silent_frames = 0
        self._words: tuple[str, ...] = ()
        rnnt = self.stream.model.rnnt
        self._transducer = GreedyTransducer(rnnt.predictor, rnnt.joiner, 1, self.stream.device,
                                            self.max_symbols_per_frame) if self.transducer else None

    @property
    def current_words(self) -> tuple[str, ...]:
        """The partial words after the last push."""
        return self._words

    def push(self, bins: Any) -> Partial:
        log_probs = self.stream.push(bins)
        if log_probs.shape[0]:
            self._log_probs.append(log_probs)
            for label in log_probs.argmax(-1).tolist():
                if label != self._last_label and label != BLANK:
                    self._phonemes.append(label)
                self._last_label = label
            silent = (log_probs[:, BLANK].exp() >= self.blank_threshold).tolist()
            for s in silent:
                self._silent_frames = self._silent_frames + 1 if s else 0
            if self.search is not None:
                self._words = self.search.step(log_probs)
            if self._transducer is not None:
                self._transducer.advance(self.stream.head_features.float())
        return Partial(self._words, list(self._phonemes), self.stream.frames, self._silent_frames * self.frame_ms,
                       self._rnnt_phonemes())

    def _rnnt_phonemes(self) -> list[int] | None:
        return None if self._transducer is None else list(self._transducer.emitted[0])

    def finish(self) -> Final:
        """End the trial: the final n-best (words), phonemes and the trial's log-probabilities."""
        hypotheses = self.search.end() if self.search is not None else []
        words = hypotheses[0].words if hypotheses else ()
        log_probs = torch.cat(self._log_probs) if self._log_probs else torch.zeros(0, self.stream.model.config.n_classes)
        return Final(words, list(self._phonemes), self.stream.frames, self._silent_frames * self.frame_ms,
                     self._rnnt_phonemes(), hypotheses, log_probs)
