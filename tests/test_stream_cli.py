"""scripts/stream.py as a user runs it: replay equals evaluate on the same causal checkpoint; the Redis source."""

from __future__ import annotations

import csv
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from helpers import REPO, TINY_TRAIN, env, run_script

CAUSAL_TRAIN = ["model=mode_ssm_causal_small", *TINY_TRAIN, "training.max_steps=40", "training.stages.0.epochs=3",
                "training.stages.1.epochs=1", "training.stages.2.epochs=1"]


@pytest.fixture(scope="module")
def causal_checkpoint(tmp_path_factory, tiny_data_root) -> Path:
    run_dir = tmp_path_factory.mktemp("causal_run")
    run_script("train.py", [f"data.data_root={tiny_data_root}", *CAUSAL_TRAIN, f"hydra.run.dir={run_dir}"], REPO)
    return run_dir / "checkpoints" / "best.pt"


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_replay_writes_the_same_final_text_as_evaluate(tmp_path, tiny_data_root, causal_checkpoint):
    args = [f"checkpoint={causal_checkpoint}", f"data.data_root={tiny_data_root}", "split=val"]
    run_script("evaluate.py", [*args, "output_dir=ev"], tmp_path)
    proc = run_script("stream.py", [*args, "source=replay", "speed=0", "chunk_bins=3", "output=stream.csv"], tmp_path)
    offline = read_csv(tmp_path / "ev" / "predictions.csv")
    streamed = read_csv(tmp_path / "stream.csv")
    assert list(streamed[0]) == ["session", "block", "trial", "text", "reference", "wer", "first_word_ms",
                                 "final_latency_ms"]
    assert [(r["session"], r["block"], r["trial"]) for r in streamed] == \
        [(r["session"], r["block"], r["trial"]) for r in offline]
    assert [r["text"] for r in streamed] == [r["predicted_sentence"] for r in offline]
    assert sum(bool(r["text"]) for r in streamed) >= 2  # words were decoded, not only empty strings
    assert all(r["reference"] == o["true_sentence"] for r, o in zip(streamed, offline))
    assert all(float(r["final_latency_ms"]) >= 0 for r in streamed)
    wer = sum(int(o["word_errors"]) for o in offline) / sum(int(o["words"]) for o in offline)
    assert f"WER {100 * wer:.1f}%" in proc.stdout


def test_a_bidirectional_checkpoint_is_refused_with_a_reason(tmp_path, tiny_data_root, tiny_checkpoint):
    proc = run_script("stream.py", [f"checkpoint={tiny_checkpoint}", f"data.data_root={tiny_data_root}", "speed=0"],
                      tmp_path, expect_rc=1)
    assert "reads future bins (causal=false)" in proc.stderr and "Traceback" not in proc.stderr


# --------------------------------------------------------------------------- Redis


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def redis_url(tmp_path):
    server = shutil.which("redis-server")
    if server is None:
        pytest.fail("redis-server is not installed (apt-get install -y redis-server; .ci/run installs it)")
    port = free_port()
    proc = subprocess.Popen([server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import redis

    client = redis.Redis(host="127.0.0.1", port=port)
    for _ in range(100):  # bounded: 5 s at most
        try:
            client.ping()
            break
        except redis.exceptions.ConnectionError:
            time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail("redis-server did not start")
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(timeout=10)


@pytest.mark.slow
def test_redis_source_decodes_a_pushed_trial_and_reports_a_malformed_entry(tmp_path, tiny_data_root,
                                                                           causal_checkpoint, redis_url):
    import redis

    from mode_ssm.data.t15 import T15Split

    client = redis.Redis.from_url(redis_url)
    trials = T15Split(tiny_data_root, "val", validate="metadata")
    x = trials[0].features.astype("<f4")
    for i, row in enumerate(x):
        client.xadd("neural_features", {"trial": "t1", "features": row.tobytes()})
        if i == 5:  # malformed: short, NaN, an end for a trial that is not open
            client.xadd("neural_features", {"trial": "t1", "features": row[:100].tobytes()})
            client.xadd("neural_features", {"trial": "t1", "features": np.full(512, np.nan, "<f4").tobytes()})
            client.xadd("neural_features", {"trial": "other", "end": "1"})
    client.xadd("neural_features", {"trial": "t1", "end": "1"})
    y = trials[1].features.astype("<f4")
    for row in y:
        client.xadd("neural_features", {"trial": "t2", "features": row.tobytes()})
    client.xadd("neural_features", {"trial": "t2", "end": "1"})
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "stream.py"), f"checkpoint={causal_checkpoint}",
         f"data.data_root={tiny_data_root}", "source=redis", f"redis.url={redis_url}", "redis.start_id=0",
         "redis.idle_timeout_s=20", "max_trials=2", "chunk_bins=4", "output=redis.csv"],
        cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in client.xrange("decoded_text")]
    errors = [e for e in out if "error" in e]
    assert [e["trial"] for e in errors] == ["t1", "t1", "other"]
    assert "400 bytes, expected 2048" in errors[0]["error"] and "NaN" in errors[1]["error"]
    assert "not open" in errors[2]["error"]
    finals = [e for e in out if e.get("final") == "1"]
    assert [f["trial"] for f in finals] == ["t1", "t2"]
    assert all(float(f["latency_ms"]) >= 0 for f in finals)
    # the same words as streaming the same bins from the replay source (skipping the malformed entries)
    from mode_ssm.runtime.loading import load_model
    from mode_ssm.evaluation.search import WordDecoding
    from mode_ssm.streaming import StreamingDecoder

    loaded = load_model(causal_checkpoint, "cpu")
    words = WordDecoding(loaded, tiny_data_root, tmp_path / "lm").decoder()
    decoder = StreamingDecoder(loaded.model, words, day_index=loaded.day_index.lookup(
        loaded.day_index.sessions[-1]).index, augmenter=loaded.eval_augmenter())
    expected = []
    for features in (x, y):
        decoder.start()
        for i in range(0, len(features), 4):
            decoder.push(features[i : i + 4])
        expected.append(decoder.finish().text)
    assert [f["text"] for f in finals] == expected
    assert "3 malformed entries skipped" in proc.stdout
