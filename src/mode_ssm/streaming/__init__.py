"""Streaming decoding: a causal MODE-SSM fed 20 ms bins in chunks of any size, text after every chunk.

    stream = StreamingDecoder(model, word_decoder, day_index=0)
    for chunk in chunks:                      # (n, 512) bins, n >= 1
        partial = stream.push(chunk)          # partial.words, partial.phonemes
    final = stream.finish()                   # final.words, final.hypotheses
    stream.start(day_index)                   # next trial

:class:`CausalStream` carries every state of the causal model between chunks
(dead-channel tracking, running normalisation, the conv stem's unread bins,
each SSM layer's convolution and scan state, the mode head's running means)
and returns the CTC log-probabilities of the frames each chunk completes; they
equal those of one offline forward of the whole trial
(``ModeSSM(causal=True)``, see :mod:`mode_ssm.models.causal`).
:class:`IncrementalWordSearch` feeds them to the same flashlight
``LexiconDecoder`` the offline path uses, frame by frame
(``decode_begin`` / ``decode_step`` / ``get_best_hypothesis`` / ``decode_end``),
so the final words equal the offline search's on the same log-probabilities.
"""

from mode_ssm.streaming.stream import CausalStream, Final, IncrementalWordSearch, Partial, StreamingDecoder

__all__ = ["CausalStream", "Final", "IncrementalWordSearch", "Partial", "StreamingDecoder"]
