"""``scripts/evaluate.py``: decode a split with a checkpoint, write the report, log it to W&B (offline by default)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from mode_ssm.atomic import write_text
from mode_ssm.data.t15 import session_and_key, speaking_mode_id
from mode_ssm.data.truth import TEST_TRUTH, TruthError, read_test_truth
from mode_ssm.evaluation.pipeline import config_dict, prepare
from mode_ssm.evaluation.reports import phoneme_ids, write_report
from mode_ssm.evaluation.schema import EvaluateSchema
from mode_ssm.metrics import flag_counts
from mode_ssm.phonemes import BLANK
from mode_ssm.runtime.decode import scores
from mode_ssm.runtime.schema import check_values
from mode_ssm.runtime.tracking import start_tracker


def score_against_truth(rows: list[dict[str, Any]], truth: dict, data_root: Path) -> None:
    """Fill test rows with their held-out labels and errors, as decode_split does for val rows."""
    missing = []
    for row in rows:
        t = truth.get(session_and_key(row["source"]))
        if t is None:
            missing.append(row["source"])
            continue
        predicted = phoneme_ids(row["predicted_phonemes"])
        log_probs = torch.from_numpy(row.pop("log_probs"))
        ctc = F.ctc_loss(log_probs[:, None], torch.tensor([t.phoneme_ids]), torch.tensor([len(log_probs)]),
                         torch.tensor([len(t.phoneme_ids)]), blank=BLANK, reduction="sum", zero_infinity=False)
        row.update(scores(list(t.phoneme_ids), predicted, t.sentence, row.get("predicted_sentence"), float(ctc)),
                   mode_truth=speaking_mode_id(t.speaking_mode))
    if missing:
        raise TruthError(f"{data_root / TEST_TRUTH}: no labels for {len(missing)} decoded test trials "
                         f"(e.g. {missing[0]}); it does not belong to these test files")


def data_notes(report: Any) -> list[str]:
    """Report lines for what the reader could not use: unreadable trials (not decoded) and skipped sessions."""
    notes = []
    if report.skipped_trials:
        reasons = ", ".join(f"{n} {r}" for r, n in report.skipped_by_reason.most_common())
        notes.append(f"{report.skipped_trials} unreadable trials were not decoded ({reasons}): "
                     + "; ".join(f"{t.file}:{t.key}" for t in report.skipped[:5])
                     + (" ..." if report.skipped_trials > 5 else ""))
    notes += [f"session {s.session} skipped (data.on_bad_session=skip): {s.error}" for s in report.skipped_sessions]
    return notes


def run_evaluation(cfg: Any, launch_dir: str | Path, console: Any | None = None) -> dict[str, Any]:
    """``scripts/evaluate.py``: decode a split with a checkpoint and write the report (see configs/evaluate.yaml)."""
    check_values(cfg, EvaluateSchema)
    launch_dir = Path(launch_dir)
    out_dir = launch_dir / Path(str(cfg.output_dir))
    labelled = cfg.split != "test"
    # every readable trial is decoded (rules="eval"); on test full validation still flags NaN/Inf and dead channels
    job = prepare(cfg, launch_dir, cfg.split, out_dir, validate=None if labelled else "full")
    loaded, data, tta = job.loaded, job.data, job.tta
    if cfg.get("flow_bridge") is not None:
        bridge = getattr(loaded.model, "flow_bridge", None)
        if bridge is None:
            raise ValueError(f"flow_bridge={cfg.flow_bridge} but {loaded.path} holds a "
                             f"{type(loaded.model).__name__} without a flow bridge")
        bridge.enabled = bool(cfg.flow_bridge)
    data_root = job.data_root
    say = console.print if console is not None else (lambda *_: None)
    say(f"decoding {len(data)} {cfg.split} trials of {data_root} with {cfg.decoder}"
        + (f" and test-time adaptation {tta.to_dict()}" if tta.enabled else ""))
    # the held-out truth of simulated test data is read only after decoding, to score
    scoring_test = not labelled and (data_root / TEST_TRUTH).is_file()
    result = job.decode(log=say, keep_log_probs=scoring_test)
    truth_note = None
    if not labelled:  # simulated data: score the held-out test against the truth file only now
        truth = read_test_truth(data_root)
        if truth is None:
            truth_note = f"no {TEST_TRUTH} in {data_root} (real data has none): predictions only"
        else:
            score_against_truth(result.rows, truth, data_root)
            labelled = True
            truth_note = f"test scored against {data_root / TEST_TRUTH} (the held-out labels; nothing else reads them)"
        say(truth_note)
    unseen = [s for s, d in result.days.items() if not d.exact]
    notes = [
        f"checkpoint {loaded.description}; data {data_root}; split {cfg.split}; decoder {cfg.decoder}; "
        f"TTA {'on ' + json.dumps(tta.to_dict()) if tta.enabled else 'off'}",
        f"decoding took {result.seconds:.1f} s for {result.neural_seconds:.1f} s of neural data "
        f"(real-time factor {result.real_time_factor:.4f}, {loaded.device.type}, {int(cfg.torch_threads)} thread(s))",
    ]
    notes += [f"session {s} was not in training: decoded with the {result.days[s].note}" for s in unseen]
    notes += data_notes(data.report)
    if truth_note:
        notes.append(truth_note)
    report = write_report(
        result.rows, out_dir, title=f"MODE-SSM evaluation ({cfg.split})", first_session=loaded.day_index.sessions[0],
        day_notes={s: d.note for s, d in result.days.items()}, unseen=unseen, notes=notes, labelled=labelled,
        phoneme_source="RNN-T " + cfg.decoder.split("_")[1] if cfg.decoder.startswith("rnnt") else "CTC greedy",
        console=console,
    )
    metrics = {k: v for k, v in report["metrics"].items() if v is not None}
    metrics.update(decode_seconds=result.seconds, neural_seconds=result.neural_seconds,
                   real_time_factor=result.real_time_factor, unseen_sessions=unseen,
                   flagged_by_reason=flag_counts(result.rows), skipped_unreadable=data.report.skipped_trials,
                   skipped_unreadable_by_reason=dict(data.report.skipped_by_reason),
                   skipped_sessions={s.session: s.error for s in data.report.skipped_sessions})
    write_text(out_dir / "metrics.json", json.dumps({"metrics": metrics, "tta": result.tta}, indent=2, default=str))
    tracker = start_tracker(cfg.wandb, out_dir, config_dict(cfg), launch_dir)
    try:
        tracker.summary({f"eval/{k}": v for k, v in metrics.items() if isinstance(v, (int, float))})
        for by, table in report["tables"].items():
            cols = list(table[0]) if table else []
            tracker.log_table(f"eval/by_{by}", cols, [[r.get(c) for c in cols] for r in table])
        for key, path in report["paths"].items():
            if str(path).endswith(".png"):
                tracker.log_image(f"eval/{key}", path)
    finally:
        tracker.finish()
    return {"metrics": metrics, "paths": report["paths"], "days": result.days, "rows": result.rows,
            "out_dir": out_dir}
