"""A small causal text LM (GPT-2 architecture) and its tokenizer, trained from scratch on the train sentences.

``scripts/train_text_lm.py`` trains one on the text the n-gram LM is built from
(:func:`mode_ssm.data.sentences.train_sentences`, normalised as the official
scoring and the n-gram LM normalise it) and writes an ordinary Hugging Face
folder (``config.json``, weights, ``tokenizer.json``) that
``AutoModelForCausalLM`` / ``AutoTokenizer.from_pretrained(..., local_files_only=True)``
load, and that :class:`mode_ssm.decoding.rescoring.CausalLMScorer` rescores
the word decoder's n-best with (``rescore.model=DIR`` in evaluate / make_submission).
Nothing is downloaded: the tokenizer is trained with the ``tokenizers`` library
and the model starts from random weights.

- Tokenizer: byte-level BPE (GPT-2 style: any string encodes, no ``<unk>``, so
  the decoder's extra vocabulary words are scored by their spelling) or
  word-level (a word outside the train text is ``<unk>``, as in the n-gram LM).
- Each training sequence is one sentence: ``<s> tokens </s>``; the loss covers
  every token after ``<s>``, ``</s>`` included, which is what rescoring scores
  (``score_eos``).
- Held-out perplexity is measured on a slice of the *train* text kept out of
  training (whole distinct sentences, so a repeated prompt is never on both
  sides); val and test text is never read.

Perplexities are reported per token (tokenizer-dependent) and per word
(``exp(-ln P / (words + sentences))``, counting ``</s>`` as n-gram tools do),
which is comparable across tokenizers and with an n-gram LM's perplexity.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from mode_ssm.atomic import WriteError
from mode_ssm.decoding.rescoring import CausalLMScorer
from mode_ssm.text import normalize_sentence

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<s>", "</s>"
SPECIAL_TOKENS = (PAD, UNK, BOS, EOS)
TOKENIZERS = ("bpe", "word")
RECORD = "text_lm.json"  # training record written beside the model; marks a folder this module may replace
BYTE_ALPHABET = 256


@dataclass(frozen=True)
class TextLMSettings:
    """What :func:`train_text_lm` builds and how it trains (configs/train_text_lm.yaml)."""

    tokenizer: str = "bpe"  # bpe | word
    vocab_size: int = 1000  # bpe: tokens in all (>= 256 bytes + specials); word: most frequent words kept, 0 = all
    min_frequency: int = 1  # word: words seen fewer times are <unk>; bpe: merges seen fewer times are not made
    n_layer: int = 2
    n_head: int = 4
    n_embd: int = 128
    context: int = 64  # tokens per sequence (<s> and </s> included); longer sentences are cut in training
    dropout: float = 0.1
    steps: int = 1000
    batch_size: int = 32
    lr: float = 3e-3
    warmup_steps: int = 50
    weight_decay: float = 0.01
    heldout_fraction: float = 0.05  # of the distinct train sentences, kept aside for held-out perplexity
    seed: int = 0

    def __post_init__(self) -> None:
        problems = []
        if self.tokenizer not in TOKENIZERS:
            problems.append(f"tokenizer={self.tokenizer!r}: must be one of {list(TOKENIZERS)}")
        if self.tokenizer == "bpe" and self.vocab_size < BYTE_ALPHABET + len(SPECIAL_TOKENS):
            problems.append(f"vocab_size={self.vocab_size}: a byte-level BPE needs at least "
                            f"{BYTE_ALPHABET + len(SPECIAL_TOKENS)} (256 bytes + {len(SPECIAL_TOKENS)} special tokens)")
        if self.tokenizer == "word" and self.vocab_size < 0:
            problems.append(f"vocab_size={self.vocab_size}: must be >= 0 (0 keeps every word)")
        for name in ("min_frequency", "n_layer", "n_head", "n_embd", "batch_size"):
            if getattr(self, name) < 1:
                problems.append(f"{name}={getattr(self, name)}: must be >= 1")
        if self.context < 3:
            problems.append(f"context={self.context}: must be >= 3 (<s>, a token, </s>)")
        if self.n_head >= 1 and self.n_embd % self.n_head:
            problems.append(f"n_embd={self.n_embd} is not a multiple of n_head={self.n_head}")
        if not 0.0 <= self.dropout < 1.0:
            problems.append(f"dropout={self.dropout}: must be in [0, 1)")
        if self.steps < 0 or self.warmup_steps < 0:
            problems.append(f"steps={self.steps}, warmup_steps={self.warmup_steps}: must be >= 0")
        if self.lr <= 0 or self.weight_decay < 0:
            problems.append(f"lr={self.lr} must be > 0 and weight_decay={self.weight_decay} >= 0")
        if not 0.0 <= self.heldout_fraction < 1.0:
            problems.append(f"heldout_fraction={self.heldout_fraction}: must be in [0, 1)")
        if problems:
            raise ValueError("; ".join(problems))

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> "TextLMSettings":
        """The settings named in ``values`` (other keys are ignored); the rest keep their defaults."""
        out: dict[str, Any] = {}
        for f in fields(cls):
            if values.get(f.name) is None:
                continue
            value, kind = values[f.name], type(f.default)
            try:
                if kind is int and (isinstance(value, bool) or float(value) != int(float(value))):
                    raise ValueError
                out[f.name] = int(float(value)) if kind is int else kind(value)
            except (TypeError, ValueError):
                raise ValueError(f"{f.name}={value!r}: must be {'an integer' if kind is int else 'a ' + kind.__name__}") \
                    from None
        return cls(**out)


@dataclass
class Perplexity:
    nll: float  # -ln P summed over the scored tokens
    tokens: int  # scored tokens (every token after <s>, </s> included)
    words: int  # words + sentences (</s>), the n-gram convention

    @property
    def per_token(self) -> float:
        return math.exp(self.nll / self.tokens) if self.tokens else float("nan")

    @property
    def per_word(self) -> float:
        return math.exp(self.nll / self.words) if self.words else float("nan")


@dataclass
class TextLMReport:
    """What :func:`train_text_lm` wrote and measured."""

    path: Path
    settings: TextLMSettings
    n_sentences: int  # non-empty normalised sentences given
    n_train: int  # sentences trained on
    n_heldout: int  # sentences kept aside
    truncated: int  # train sentences longer than the context, cut
    vocab_size: int
    n_parameters: int
    seconds: float  # training only
    final_loss: float  # mean training loss over the last steps
    init_train: Perplexity  # the untrained (random) model on the train sentences
    train: Perplexity
    heldout: Perplexity | None

    def to_dict(self) -> dict[str, Any]:
        def ppl(p: Perplexity | None):
            return None if p is None else {"per_token": p.per_token, "per_word": p.per_word, **asdict(p)}

        return {"settings": asdict(self.settings), "n_sentences": self.n_sentences, "n_train": self.n_train,
                "n_heldout": self.n_heldout, "truncated": self.truncated, "vocab_size": self.vocab_size,
                "n_parameters": self.n_parameters, "seconds": self.seconds, "final_loss": self.final_loss,
                "perplexity": {"init_train": ppl(self.init_train), "train": ppl(self.train),
                               "heldout": ppl(self.heldout)}}


# --------------------------------------------------------------------------- text


def lm_text(sentences: Sequence[str]) -> list[str]:
    """The sentences as the LMs see them: normalised like the official scoring (the decoder's words), empty ones dropped."""
    return [t for t in (normalize_sentence(s) for s in sentences) if t]


def split_heldout(sentences: Sequence[str], fraction: float, seed: int = 0) -> tuple[list[str], list[str]]:
    """(train, held-out): a seeded ``fraction`` of the *distinct* sentences, every copy of each, held out.

    Nothing is held out when ``fraction`` is 0 or there are fewer than two distinct sentences.
    """
    distinct = sorted(set(sentences))
    n_out = round(fraction * len(distinct)) if fraction > 0 else 0
    if fraction > 0 and len(distinct) >= 2:
        n_out = min(max(n_out, 1), len(distinct) - 1)
    else:
        n_out = 0
    held = set(random.Random(seed).sample(distinct, n_out))
    return [s for s in sentences if s not in held], [s for s in sentences if s in held]


def train_tokenizer(sentences: Sequence[str], settings: TextLMSettings):
    """A ``PreTrainedTokenizerFast`` trained on ``sentences`` (byte-level BPE or word-level; see the module docstring)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if settings.tokenizer == "bpe":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=settings.vocab_size, min_frequency=settings.min_frequency,
                                      special_tokens=list(SPECIAL_TOKENS), show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    else:
        tok = Tokenizer(models.WordLevel(unk_token=UNK))
        tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()  # normalised words keep ' and -
        tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
        trainer = trainers.WordLevelTrainer(vocab_size=settings.vocab_size + len(SPECIAL_TOKENS)
                                            if settings.vocab_size else 10**9,
                                            min_frequency=settings.min_frequency,
                                            special_tokens=list(SPECIAL_TOKENS), show_progress=False)
    tok.train_from_iterator(list(sentences), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, unk_token=UNK,
                                   pad_token=PAD, model_max_length=settings.context)


def encode(tokenizer: Any, sentences: Sequence[str], context: int) -> tuple[list[list[int]], int]:
    """``<s> tokens </s>`` per sentence, cut to ``context`` tokens; and how many were cut."""
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    out, cut = [], 0
    for ids in tokenizer(list(sentences), add_special_tokens=False)["input_ids"]:
        seq = [bos, *ids, eos]
        if len(seq) > context:
            seq, cut = seq[:context], cut + 1
        out.append(seq)
    return out, cut


# --------------------------------------------------------------------------- model


def make_model(settings: TextLMSettings, tokenizer: Any):
    """A randomly initialised ``GPT2LMHeadModel`` sized by ``settings`` for ``tokenizer``'s vocabulary."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=settings.context, n_embd=settings.n_embd, n_layer=settings.n_layer,
        n_head=settings.n_head, resid_pdrop=settings.dropout, embd_pdrop=settings.dropout,
        attn_pdrop=settings.dropout, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = GPT2LMHeadModel(config)
    model.loss_type = "ForCausalLM"  # what it uses anyway; named, so transformers does not warn it guessed
    return model


def perplexity(model: Any, tokenizer: Any, sentences: Sequence[str], batch_size: int = 64) -> Perplexity:
    """Perplexity of ``sentences`` scored exactly as rescoring scores them (``<s>`` context, ``</s>`` scored)."""
    was_training = model.training
    model.eval()
    try:
        scorer = CausalLMScorer(model, lambda s: tokenizer(s, add_special_tokens=False)["input_ids"],
                                bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                score_eos=True, batch_size=batch_size, device=str(next(model.parameters()).device))
        log_probs = scorer(list(sentences))
    finally:
        model.train(was_training)
    tokens = sum(len(ids) + 1 for ids in tokenizer(list(sentences), add_special_tokens=False)["input_ids"]) \
        if sentences else 0
    words = sum(len(s.split()) + 1 for s in sentences)
    return Perplexity(-float(sum(log_probs)), tokens, words)


def _batch(seqs: Sequence[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    length = max(len(s) for s in seqs)
    input_ids = torch.full((len(seqs), length), pad_id, dtype=torch.long)
    mask = torch.zeros_like(input_ids)
    for i, s in enumerate(seqs):
        input_ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
    labels = input_ids.masked_fill(mask == 0, -100)  # padding is never a target
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


def _lr_factor(step: int, settings: TextLMSettings) -> float:
    """Linear warm-up, then cosine decay to a tenth of the peak."""
    if step < settings.warmup_steps:
        return (step + 1) / settings.warmup_steps
    span = max(1, settings.steps - settings.warmup_steps)
    progress = min(1.0, (step - settings.warmup_steps) / span)
    return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress))


def train_text_lm(
    sentences: Sequence[str],
    output: str | Path,
    settings: TextLMSettings | None = None,
    log: Callable[[str], None] | None = None,
    log_every: int = 100,
) -> TextLMReport:
    """Train a tokenizer and a small GPT-2 on ``sentences`` (train text only) and save both to ``output``.

    ``output`` is written whole or not at all (built in a temporary folder beside it); an existing
    ``output`` is replaced only if it is empty or a folder this function wrote (it holds ``text_lm.json``).
    """
    settings = settings or TextLMSettings()
    output = Path(output)
    _check_output(output)
    text = lm_text(sentences)
    if not text:
        raise ValueError("no words to train the text LM on: every sentence is empty after normalisation")
    train, heldout = split_heldout(text, settings.heldout_fraction, settings.seed)

    torch.manual_seed(settings.seed)
    tokenizer = train_tokenizer(train, settings)
    model = make_model(settings, tokenizer)
    seqs, truncated = encode(tokenizer, train, settings.context)
    init_train = perplexity(model, tokenizer, train)

    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": settings.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=settings.lr, betas=(0.9, 0.98))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _lr_factor(s, settings))
    generator = torch.Generator().manual_seed(settings.seed)
    order: list[int] = []
    recent: list[float] = []
    model.train()
    started = time.perf_counter()
    for step in range(settings.steps):
        if len(order) < settings.batch_size:  # reshuffle per epoch; a batch never holds a sentence twice unless tiny
            order += torch.randperm(len(seqs), generator=generator).tolist()
        picked, order = order[: settings.batch_size], order[settings.batch_size :]
        loss = model(**_batch([seqs[i] for i in picked], tokenizer.pad_token_id)).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        recent = (recent + [loss.item()])[-50:]
        if log is not None and log_every and ((step + 1) % log_every == 0 or step + 1 == settings.steps):
            log(f"step {step + 1}/{settings.steps}: loss {sum(recent) / len(recent):.3f} "
                f"(lr {scheduler.get_last_lr()[0]:.2e}, {time.perf_counter() - started:.0f} s)")
    seconds = time.perf_counter() - started
    model.eval()

    report = TextLMReport(
        path=output, settings=settings, n_sentences=len(text), n_train=len(train), n_heldout=len(heldout),
        truncated=truncated, vocab_size=len(tokenizer), n_parameters=sum(p.numel() for p in model.parameters()),
        seconds=seconds, final_loss=sum(recent) / len(recent) if recent else float("nan"), init_train=init_train,
        train=perplexity(model, tokenizer, train), heldout=perplexity(model, tokenizer, heldout) if heldout else None,
    )
    _save(model, tokenizer, report, output)
    return report


def _check_output(output: Path) -> None:
    if output.exists() and not output.is_dir():
        raise ValueError(f"output {output} is a file; the text LM is written as a folder")
    if output.is_dir() and any(output.iterdir()) and not (output / RECORD).is_file():
        raise ValueError(f"output {output} is a folder holding files that scripts/train_text_lm.py did not write "
                         f"(no {RECORD}); choose another output or empty it")


def _save(model: Any, tokenizer: Any, report: TextLMReport, output: Path) -> None:
    """Write the folder beside ``output`` and move it into place, so a crash leaves the previous one intact."""
    tmp = output.with_name(f".{output.name}.tmp-{os.getpid()}")
    old = output.with_name(f".{output.name}.old-{os.getpid()}")
    moved = False
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / RECORD).write_text(json.dumps(report.to_dict(), indent=2, default=str) + "\n", encoding="utf-8")
        if output.exists():
            os.replace(output, old)
            moved = True
        os.replace(tmp, output)
    except OSError as e:
        if moved and not output.exists():
            os.replace(old, output)  # the previous text LM goes back in place
        raise WriteError(output, e) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
