"""The schema of configs/stream.yaml (see :mod:`mode_ssm.runtime.schema` for how it is checked)."""

# no `from __future__ import annotations`: OmegaConf and check_values read the field types as objects
from dataclasses import dataclass
from typing import Optional

from omegaconf import MISSING

from mode_ssm.evaluation.schema import EvalDataSchema, RescoreSchema, _Decoding
from mode_ssm.runtime.schema import RNNTSchema, option, register

SOURCES = ("replay", "redis")


@dataclass
class RedisSchema:
    url: str = "redis://127.0.0.1:6379/0"
    input_stream: str = "neural_features"
    output_stream: str = "decoded_text"
    start_id: str = "$"  # "$": only entries added after the decoder starts (live); "0": the stream from its start
    block_ms: int = option(100, ge=1)  # longest wait per read (also how quickly SIGINT/SIGTERM is noticed)
    idle_timeout_s: Optional[float] = option(None, ge=0)  # stop after this long without an entry; null: never
    session: Optional[str] = None  # whose day layer decodes; null: the model's last training session
    output_maxlen: int = option(10000, ge=1)  # the output stream is trimmed to about this many entries


@dataclass
class StreamSchema(_Decoding):
    checkpoint: str = MISSING
    split: str = option("val", choices=("val", "test"))
    source: str = option("replay", choices=SOURCES)
    speed: float = option(1.0, ge=0)  # replay: 1 real time, 2 twice as fast, 0 as fast as possible
    chunk_bins: int = option(4, ge=1)  # bins per push (4 = 80 ms)
    output: str = "stream.csv"
    max_trials: Optional[int] = option(None, ge=1)
    live: str = option("auto", choices=("auto", "on", "off"))  # the rich terminal view
    end_silence_ms: Optional[float] = option(None, gt=0)  # end a trial after this much trailing blank
    blank_threshold: float = option(0.9, gt=0, le=1)
    decoder: str = option("ctc_lm", choices=("ctc_lm",))
    rnnt: RNNTSchema = option(RNNTSchema())
    rescore: RescoreSchema = option(RescoreSchema())
    data: EvalDataSchema = option(EvalDataSchema())
    redis: RedisSchema = option(RedisSchema())


register("stream_schema", StreamSchema)
