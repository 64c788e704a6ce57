"""What a simulation contains, before any neural data: sessions, blocks, trials, sentences, modes.

The structure follows the real block table (45 sessions on their real dates,
blocks with their corpus and Train or Val/Test split). A preset picks sessions
and scales the sentences per block. Val/Test blocks' trials are split about
half and half between ``data_val.hdf5`` and ``data_test.hdf5``. Val/test
sentences never occur in train blocks (compared after normalisation), so a
language model can be built from :func:`corpus_text`.

Each block's draws use their own random stream keyed by (seed, day, block), so
the same block gets the same speaking mode and rate in every preset.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from mode_ssm.data.blocks import Block, read_block_table
from mode_ssm.lexicon import Lexicon
from mode_ssm.sim.config import SimConfig, load_config
from mode_ssm.sim.corpus import CORPORA, SentenceGenerator, draw_sentences, sentence_key
from mode_ssm.sim.neural import NeuralParams

_STREAM_MODE, _STREAM_SENTENCES, _STREAM_SPLIT, _STREAM_RATE, _STREAM_DROP, _STREAM_EXTRA = 21, 22, 23, 24, 25, 26
FILE_SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class PlannedTrial:
    session: str
    day: int  # post-implant day
    block_num: int
    trial_num: int  # within the block, counting all cued sentences (left-out trials leave gaps)
    corpus: str
    split: str  # which file: "train", "val" or "test"
    sentence: str
    phoneme_ids: tuple[int, ...]  # seq_class_ids without padding
    speaking_mode: str
    words_per_minute: float
    block_position: float  # -0.5 (first block of the session) .. 0.5 (last)


@dataclass(frozen=True)
class PlannedBlock:
    block: Block  # as in the block table, n_sentences = trials simulated
    speaking_mode: str
    words_per_minute: float  # the block's mean speaking rate
    trials: tuple[PlannedTrial, ...]


@dataclass(frozen=True)
class SimulationPlan:
    config: SimConfig
    seed: int
    blocks: tuple[PlannedBlock, ...]  # chronological: by date, then block number

    @property
    def sessions(self) -> list[str]:
        return list(dict.fromkeys(b.block.session for b in self.blocks))

    def session_trials(self, session: str) -> list[PlannedTrial]:
        """A session's trials in recording order."""
        return [t for b in self.blocks if b.block.session == session for t in b.trials]

    def trials(self) -> list[PlannedTrial]:
        return [t for b in self.blocks for t in b.trials]

    def block_table(self) -> list[Block]:
        return [b.block for b in self.blocks]

    def train_sentences(self) -> list[str]:
        return [t.sentence for t in self.trials() if t.split == "train"]

    def val_test_sentences(self) -> list[str]:
        return [t.sentence for t in self.trials() if t.split != "train"]

    def counts(self) -> dict[str, int]:
        out = {s: 0 for s in FILE_SPLITS}
        for t in self.trials():
            out[t.split] += 1
        return out


def _rng(seed: int, stream: int, block: Block) -> np.random.Generator:
    return np.random.default_rng([int(seed), stream, block.post_implant_day, block.block_num])


def _select_blocks(config: SimConfig, table: list[Block]) -> list[Block]:
    known = list(dict.fromkeys(b.session for b in table))
    if config.sessions is None:
        wanted = known
    else:
        unknown = [s for s in config.sessions if s not in known]
        if unknown:
            raise ValueError(f"preset {config.name!r}: session(s) {unknown} are not in the block table ({known[0]} .. {known[-1]})")
        wanted = list(config.sessions)
    chosen = [b for b in table if b.session in set(wanted)]
    return sorted(chosen, key=lambda b: (b.date, b.block_num))


def _speaking_modes(blocks: list[Block], seed: int, silent_fraction: float) -> list[str]:
    draws = np.array([_rng(seed, _STREAM_MODE, b).random() for b in blocks])
    modes = ["silent" if d < silent_fraction else "vocalized" for d in draws]
    # A simulation with several blocks always has both modes, so a mode classifier has something to learn.
    if len(blocks) >= 2 and 0.0 < silent_fraction < 1.0:
        if "silent" not in modes:
            modes[int(np.argmin(draws))] = "silent"
        if "vocalized" not in modes:
            modes[int(np.argmax(draws))] = "vocalized"
    return modes


def make_plan(cfg_or_preset_name: str | Mapping[str, Any] | SimConfig, seed: int, table: list[Block] | None = None) -> SimulationPlan:
    """Plan a simulation: which trials exist, their sentences, labels, files, modes and rates."""
    config = load_config(cfg_or_preset_name)
    params: NeuralParams = config.neural
    blocks = _select_blocks(config, table if table is not None else read_block_table())
    if config.corpus is not None:
        blocks = [dataclasses.replace(b, corpus=config.corpus) for b in blocks]
    modes = _speaking_modes(blocks, seed, config.silent_fraction)

    kept_trial_nums: list[np.ndarray] = []
    for b in blocks:
        n = max(1, int(round(b.n_sentences * config.trial_fraction)))
        rng = _rng(seed, _STREAM_DROP, b)
        keep = rng.random(n) >= config.drop_fraction
        if not keep.any():  # every block keeps a trial, so every training session has training data
            keep[int(rng.integers(n))] = True
        kept_trial_nums.append(np.flatnonzero(keep))

    # Val/test sentences first, then train sentences drawn outside them.
    generator = SentenceGenerator()
    # Version 2: val/test sentences lean on rarer words than the train text (val_test_core_weight).
    held_out_generator = (
        generator
        if config.val_test_core_weight == 1.0
        else SentenceGenerator(generator.vocabulary, core_weight=config.val_test_core_weight)
    )
    sentences: list[list[str]] = [[] for _ in blocks]
    exclude: set[str] = set()
    for split in ("Val/Test", "Train"):
        idx = [i for i, b in enumerate(blocks) if b.split == split]
        requests = [(blocks[i].corpus, len(kept_trial_nums[i]), _rng(seed, _STREAM_SENTENCES, blocks[i])) for i in idx]
        drawn = draw_sentences(
            requests,
            exclude=exclude if split == "Train" else None,
            max_words=config.max_words,
            generator=generator if split == "Train" else held_out_generator,
        )
        for i, block_sentences in zip(idx, drawn):
            sentences[i] = block_sentences
        if split == "Val/Test":
            exclude = {sentence_key(s) for block_sentences in drawn for s in block_sentences}

    lexicon = Lexicon.from_cmudict()
    session_blocks: dict[str, list[int]] = {}
    for i, b in enumerate(blocks):
        session_blocks.setdefault(b.session, []).append(i)

    planned = []
    for i, b in enumerate(blocks):
        siblings = session_blocks[b.session]
        position = siblings.index(i) / (len(siblings) - 1) - 0.5 if len(siblings) > 1 else 0.0
        mode = modes[i]
        mode_wpm = params.vocalized_wpm if mode == "vocalized" else params.silent_wpm
        rate_rng = _rng(seed, _STREAM_RATE, b)
        block_wpm = float(mode_wpm * np.exp(params.block_rate_jitter * rate_rng.standard_normal()))
        trial_wpm = block_wpm * np.exp(params.trial_rate_jitter * rate_rng.standard_normal(len(kept_trial_nums[i])))
        n = len(kept_trial_nums[i])
        if b.split == "Train":
            splits = ["train"] * n
        else:
            split_rng = _rng(seed, _STREAM_SPLIT, b)
            n_val = n // 2 + (int(split_rng.random() < 0.5) if n % 2 else 0)
            is_val = np.zeros(n, dtype=bool)
            is_val[split_rng.permutation(n)[:n_val]] = True
            splits = ["val" if v else "test" for v in is_val]
        trials = tuple(
            PlannedTrial(
                session=b.session,
                day=b.post_implant_day,
                block_num=b.block_num,
                trial_num=int(tn),
                corpus=b.corpus,
                split=splits[k],
                sentence=sentences[i][k],
                phoneme_ids=tuple(lexicon.sentence_to_ids(sentences[i][k])),
                speaking_mode=mode,
                words_per_minute=float(trial_wpm[k]),
                block_position=position,
            )
            for k, tn in enumerate(kept_trial_nums[i])
        )
        planned.append(PlannedBlock(dataclasses.replace(b, n_sentences=n), mode, block_wpm, trials))
    return SimulationPlan(config=config, seed=int(seed), blocks=tuple(planned))


def corpus_text(
    cfg_or_preset_name: str | Mapping[str, Any] | SimConfig = "mini",
    seed: int = 0,
    n_extra: int = 0,
    plan: SimulationPlan | None = None,
) -> list[str]:
    """Text a language model may be built from: the simulation's train sentences plus ``n_extra`` more.

    The extra sentences come from the same corpora (in the block table's
    proportions, Random left out as it has no structure to learn) and none of
    them equals a val/test sentence of that simulation. Deterministic for the seed.
    """
    plan = plan or make_plan(cfg_or_preset_name, seed)
    text = plan.train_sentences()
    if n_extra <= 0:
        return text
    table = read_block_table()
    weights = {c: 0.0 for c in CORPORA if c != "Random"}
    for b in table:
        if b.corpus in weights:
            weights[b.corpus] += b.n_sentences
    names = list(weights)
    p = np.array([weights[c] for c in names])
    rng = np.random.default_rng([int(seed), _STREAM_EXTRA])
    counts = rng.multinomial(n_extra, p / p.sum())
    requests = [(c, int(k), np.random.default_rng([int(seed), _STREAM_EXTRA, j])) for j, (c, k) in enumerate(zip(names, counts)) if k]
    exclude = {sentence_key(s) for s in plan.val_test_sentences()}
    extra = draw_sentences(requests, exclude=exclude, max_words=plan.config.max_words)
    order = rng.permutation(n_extra)
    flat = [s for block in extra for s in block]
    return text + [flat[i] for i in order]


def speaking_mode_table(plan: SimulationPlan) -> list[dict[str, Any]]:
    """Per-block record for simulation.json (the only place besides the trial attribute that holds modes)."""
    return [
        {
            "session": b.block.session,
            "block_num": b.block.block_num,
            "corpus": b.block.corpus,
            "split": b.block.split,
            "n_trials": b.block.n_sentences,
            "speaking_mode": b.speaking_mode,
            "words_per_minute": round(b.words_per_minute, 2),
        }
        for b in plan.blocks
    ]

