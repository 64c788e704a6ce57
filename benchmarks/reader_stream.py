"""One streamed, fully validated pass over every split of a T15 data root: time, bytes, peak memory.

    python benchmarks/reader_stream.py DATA_ROOT            # measure an existing root
    python benchmarks/reader_stream.py DATA_ROOT --iterate  # also read every kept trial via __getitem__
    python benchmarks/reader_stream.py /tmp/t15_full --synthesize --scale 1.0
        # first write a random T15-shaped set with the release's counts (45 sessions,
        # 8,072 / 1,426 / 1,450 trials, about 13 GB at scale 1.0), then measure it

Prints one line per split, then one JSON line. Peak RSS is ``ru_maxrss`` of this
process; the reader's target is a peak far below the data size (< 4 GB on the
full-size set). Page cache is not RSS, so a second run reads faster, not bigger.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

from mode_ssm.data.t15 import SPLITS, T15Split, ctc_min_time_steps
from mode_ssm.data.writer import TrialRecord, write_trials

RELEASE_TRIALS = {"train": 8072, "val": 1426, "test": 1450}
RELEASE_SESSIONS = 45


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def bytes_read_by_process() -> int | None:
    """Bytes this process has read through system calls (page cache included), if the OS says."""
    try:
        for line in Path("/proc/self/io").read_text().splitlines():
            if line.startswith("rchar:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def synthesize(root: Path, scale: float, seed: int = 0) -> None:
    """Write a random T15-shaped set: real counts x scale, lengths 150..1050 bins (mean 600, ~1.2 MB/trial)."""
    if root.exists() and any(root.iterdir()):
        sys.exit(f"{root} exists and is not empty; refusing to write synthetic data into it")
    rng = np.random.default_rng(seed)
    # Slicing one pool of noise keeps generation cheap: this measures reading, not the RNG.
    pool = rng.standard_normal((4096, 512), dtype=np.float32)
    n_sessions = max(2, round(RELEASE_SESSIONS * scale)) if scale < 1 else RELEASE_SESSIONS
    sessions = [f"t15.{dt.date(2023, 8, 11) + dt.timedelta(days=14 * i):%Y.%m.%d}" for i in range(n_sessions)]

    def trials(session: str, split: str, n: int):
        for i in range(n):
            labels = rng.integers(1, 41, size=int(rng.integers(10, 60)))
            steps = max(int(rng.integers(150, 1051)), ctc_min_time_steps(labels))
            start = int(rng.integers(0, len(pool) - steps))
            yield TrialRecord(
                features=pool[start : start + steps] + np.float32(rng.standard_normal()),
                session=session,
                block_num=1 + i // 50,
                trial_num=i % 50,
                sentence="synthetic sentence" if split != "test" else None,
                phoneme_ids=labels if split != "test" else None,
            )

    for split, total in RELEASE_TRIALS.items():
        per_session = np.full(n_sessions, round(total * scale) // n_sessions)
        per_session[: round(total * scale) % n_sessions] += 1
        for session, n in zip(sessions, per_session):
            if n:
                path = root / session / f"data_{split}.hdf5"
                write_trials(path, trials(session, split, int(n)), with_labels=split != "test")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data_root", type=Path)
    parser.add_argument("--synthesize", action="store_true", help="write a random T15-shaped set first")
    parser.add_argument("--scale", type=float, default=1.0, help="size of the synthetic set relative to the release")
    parser.add_argument("--iterate", action="store_true", help="also read every kept trial through __getitem__")
    args = parser.parse_args()

    if args.synthesize:
        started = time.perf_counter()
        synthesize(args.data_root, args.scale)
        print(f"wrote synthetic set to {args.data_root} in {time.perf_counter() - started:.1f} s", flush=True)

    data_mb = sum(p.stat().st_size for p in args.data_root.glob("t15.*/data_*.hdf5")) / 1e6
    rss_before_mb = peak_rss_mb()
    rchar_before = bytes_read_by_process()
    totals = {"trials": 0, "kept": 0, "feature_bytes": 0, "seconds": 0.0}
    for split in SPLITS:
        started = time.perf_counter()
        ds = T15Split(args.data_root, split, validate="full", on_bad_session="skip")
        seconds = time.perf_counter() - started
        r = ds.report
        totals["trials"] += r.total_trials
        totals["kept"] += r.kept_trials
        totals["feature_bytes"] += r.bytes_read
        totals["seconds"] += seconds
        print(
            f"{split:>5}: {r.kept_trials}/{r.total_trials} trials kept, {r.bytes_read / 1e6:.0f} MB of features "
            f"in {seconds:.1f} s ({r.bytes_read / 1e6 / max(seconds, 1e-9):.0f} MB/s), peak RSS {peak_rss_mb():.0f} MB",
            flush=True,
        )
        if args.iterate:
            started = time.perf_counter()
            nbytes = sum(ds[i].features.nbytes for i in range(len(ds)))
            seconds = time.perf_counter() - started
            print(f"       __getitem__ pass: {len(ds)} trials, {nbytes / 1e6:.0f} MB in {seconds:.1f} s", flush=True)
        ds.close()

    rchar_after = bytes_read_by_process()
    result = {
        "data_root": str(args.data_root),
        "data_mb_on_disk": round(data_mb, 1),
        "trials": totals["trials"],
        "kept": totals["kept"],
        "seconds": round(totals["seconds"], 2),
        "mb_features_read": round(totals["feature_bytes"] / 1e6, 1),
        "mb_read_syscalls": None if rchar_before is None else round((rchar_after - rchar_before) / 1e6, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "peak_rss_mb_before_reading": round(rss_before_mb, 1),
        "iterate": args.iterate,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
