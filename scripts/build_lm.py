"""Build an interpolated modified Kneser-Ney ARPA language model over words.

    python scripts/build_lm.py                       # TRAIN sentences under data_root
    python scripts/build_lm.py corpus=my_text.txt order=4 output=lm/my4gram.arpa

An ARPA file built with KenLM's lmplz or SRILM works with the decoder just as well.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.utils import to_absolute_path
from omegaconf import DictConfig

from mode_ssm.atomic import WriteError
from mode_ssm.data.sentences import train_sentences
from mode_ssm.data.t15 import T15DataError
from mode_ssm.decoding.ngram import build_lm_from_sentences


def read_lines(path: Path, what: str) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"{what} file {path} does not exist")
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@hydra.main(version_base="1.3", config_path="../configs", config_name="build_lm")
def main(cfg: DictConfig) -> None:
    try:
        build(cfg)
    except (FileNotFoundError, T15DataError, ValueError, WriteError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)


def build(cfg: DictConfig) -> None:
    if cfg.corpus:
        source = Path(to_absolute_path(cfg.corpus))
        sentences = read_lines(source, "corpus")
    else:
        source = Path(to_absolute_path(cfg.data_root))
        if not source.is_dir():
            raise FileNotFoundError(f"data root {source} is not a folder; pass corpus=PATH or data_root=DIR")
        sentences = train_sentences(source)  # the sentences training and evaluation build their LM from
    extra = read_lines(Path(to_absolute_path(cfg.extra_words)), "extra_words") if cfg.extra_words else []
    output = Path(to_absolute_path(cfg.output))

    report = build_lm_from_sentences(sentences, output, order=int(cfg.order), extra_words=extra)
    print(f"read {len(sentences)} sentences from {source}")
    print(f"wrote {report.path}: order {report.order}, vocabulary {report.vocabulary_size} "
          f"(incl. <s> </s> <unk>), from {report.n_sentences} non-empty sentences")
    for n, (count, d, fell_back) in enumerate(zip(report.ngram_counts, report.discounts, report.discount_fallback), 1):
        note = " (fallback: too few counts-of-counts)" if fell_back else ""
        print(f"  {n}-grams: {count}  discounts D1={d[0]:.3f} D2={d[1]:.3f} D3+={d[2]:.3f}{note}")
    missing = report.missing_from_cmudict
    if missing:
        shown = ", ".join(missing[:30]) + (" ..." if len(missing) > 30 else "")
        print(f"{len(missing)} words have no CMUdict pronunciation (the decoder cannot emit them): {shown}")
    else:
        print("every word has a CMUdict pronunciation")


if __name__ == "__main__":
    main()
