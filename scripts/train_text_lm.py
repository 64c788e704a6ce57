"""Train a small causal LM and its tokenizer on the train sentences, for n-best rescoring.

    python scripts/train_text_lm.py data.data_root=DIR output=DIR/text_lm      # TRAIN sentences under DIR
    python scripts/train_text_lm.py corpus=my_text.txt output=lm/text_lm steps=2000 n_layer=4

Writes a Hugging Face folder that AutoModelForCausalLM / AutoTokenizer load offline;
use it with `rescore.model=DIR` in scripts/evaluate.py and scripts/make_submission.py.
Config: configs/train_text_lm.yaml. The work is in mode_ssm.decoding.text_lm.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
import torch
from hydra.utils import to_absolute_path
from omegaconf import DictConfig, OmegaConf

from mode_ssm.atomic import WriteError
from mode_ssm.data.sentences import train_sentences
from mode_ssm.data.t15 import T15DataError
from mode_ssm.decoding.text_lm import TextLMSettings, train_text_lm


def read_lines(path: Path, what: str) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"{what} file {path} does not exist")
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@hydra.main(version_base="1.3", config_path="../configs", config_name="train_text_lm")
def main(cfg: DictConfig) -> None:
    try:
        train(cfg)
    except (FileNotFoundError, T15DataError, ValueError, WriteError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)


def train(cfg: DictConfig) -> None:
    torch.set_num_threads(int(cfg.torch_threads))
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # one tiny weights file: no bars on stderr
    settings = TextLMSettings.from_mapping(OmegaConf.to_container(cfg, resolve=True))  # type: ignore[arg-type]
    if cfg.corpus:
        source = Path(to_absolute_path(cfg.corpus))
        sentences = read_lines(source, "corpus")
    else:
        source = Path(to_absolute_path(cfg.data.data_root))
        if not source.is_dir():
            raise FileNotFoundError(f"data root {source} is not a folder; pass data.data_root=DIR or corpus=PATH")
        sentences = train_sentences(source)  # the sentences the n-gram LM is built from (train files only)
    output = Path(to_absolute_path(cfg.output))
    print(f"read {len(sentences)} sentences from {source}")

    report = train_text_lm(sentences, output, settings, log=print, log_every=int(cfg.log_every))
    print(f"wrote {report.path}: GPT-2 {settings.n_layer} layers x {settings.n_embd}, context {settings.context}, "
          f"{report.n_parameters / 1e6:.2f} M parameters, {settings.tokenizer} tokenizer of {report.vocab_size} tokens")
    print(f"trained {settings.steps} steps of {settings.batch_size} on {report.n_train} sentences "
          f"in {report.seconds:.1f} s" + (f" ({report.truncated} cut to {settings.context} tokens)" if report.truncated else ""))
    rows = [("untrained, train", report.init_train), ("train", report.train)]
    if report.heldout is not None:
        rows.append((f"held-out ({report.n_heldout} train sentences kept aside)", report.heldout))
    for name, p in rows:
        print(f"  perplexity {name}: {p.per_token:.2f} per token, {p.per_word:.2f} per word "
              f"({p.words} words incl. </s>)")
    if report.heldout is None:
        print("  no held-out perplexity (heldout_fraction=0 or too few distinct sentences)")


if __name__ == "__main__":
    main()
