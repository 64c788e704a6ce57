"""The schemas of configs/evaluate.yaml, make_submission.yaml and tune_decoder.yaml
(see :mod:`mode_ssm.runtime.schema` for how they are checked). The ``tta`` section is
checked by :meth:`mode_ssm.evaluation.tta.TTAConfig.from_mapping`."""

# no `from __future__ import annotations`: OmegaConf and check_values read the field types as objects
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from omegaconf import MISSING

from mode_ssm.runtime.schema import (
    DECODERS, DEVICES, ON_BAD_SESSION, UNSEEN, VALIDATE, DecodingSchema, RNNTSchema, WandbSchema, option, register,
)


@dataclass
class EvalDataSchema:
    data_root: Optional[str] = None
    validate: Optional[str] = option(None, choices=VALIDATE + (None,))
    on_bad_session: str = option("error", choices=ON_BAD_SESSION)


@dataclass
class SubmissionDataSchema:
    data_root: Optional[str] = None
    on_bad_session: str = option("error", choices=ON_BAD_SESSION)


@dataclass
class RescoreSchema:
    """``rescore``: the word decoder's n-best re-ranked by a causal LM folder on disk (null model: no rescoring)."""

    model: Optional[str] = None  # scripts/train_text_lm.py's output, or any Hugging Face causal LM folder
    weight: float = option(0.5, ge=0)  # of ln P_LM(sentence), added to the decoder's score
    length_bonus: float = 0.0  # per word
    nbest: int = option(10, ge=1)  # distinct sentences of the word decoder rescored per trial
    score_eos: bool = True  # score </s> too (the LM's end-of-sentence token)
    batch_size: int = option(32, ge=1)  # sentences per LM forward pass


@dataclass
class _Decoding:
    """What every decoding command shares."""

    decoding: DecodingSchema = option(DecodingSchema())
    tta: Dict[str, Any] = option({})
    unseen_sessions: str = option("nearest", choices=UNSEEN)
    batch_size: int = option(16, ge=1)
    device: str = option("auto", choices=DEVICES)
    torch_threads: int = option(1, ge=1)
    amp: bool = True


@dataclass
class EvaluateSchema(_Decoding):
    checkpoint: Any = MISSING  # a path, or a list of paths: an ensemble (runtime/ensemble.py)
    split: str = option("val", choices=("val", "test"))
    decoder: str = option("ctc_lm", choices=DECODERS)
    output_dir: str = "outputs/evaluate"
    rnnt: RNNTSchema = option(RNNTSchema())
    rescore: RescoreSchema = option(RescoreSchema())
    data: EvalDataSchema = option(EvalDataSchema())
    flow_bridge: Optional[bool] = None
    wandb: WandbSchema = option(WandbSchema())


@dataclass
class SubmissionSchema(_Decoding):
    checkpoint: Any = None  # a path or a list of paths (an ensemble); required unless validate_only
    output: str = "submission.csv"
    validate_only: bool = False
    decoder: str = option("ctc_lm", choices=DECODERS)
    fallback_text: str = "the"
    work_dir: str = "outputs/make_submission"
    rnnt: RNNTSchema = option(RNNTSchema())
    rescore: RescoreSchema = option(RescoreSchema())
    data: SubmissionDataSchema = option(SubmissionDataSchema())


@dataclass
class GridSchema:
    lm_weight: List[float] = option([1.0], each={"ge": 0})
    word_score: List[float] = option([0.0])
    beam: List[int] = option([50], each={"ge": 1})


@dataclass
class TuneSchema(_Decoding):
    checkpoint: str = MISSING
    split: str = option("val", choices=("val",))  # tuning needs labels
    output_dir: str = "outputs/tune_decoder"
    grid: GridSchema = option(GridSchema())
    data: EvalDataSchema = option(EvalDataSchema())


register("evaluate_schema", EvaluateSchema)
register("make_submission_schema", SubmissionSchema)
register("tune_decoder_schema", TuneSchema)
