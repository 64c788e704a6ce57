"""Re-run the README's headline training commands at reduced size and compare with the stated figures.

    python benchmarks/reproduce.py                 # every check in benchmarks/expected.json
    python benchmarks/reproduce.py --only bench_ctc
    python benchmarks/reproduce.py --update        # after a deliberate change: store what was measured

Each check is a ``scripts/train.py`` command (one thread, its own run folder under ``--work``)
on simulated data written by ``scripts/simulate.py`` if missing, and the figure it must reproduce:
the val PER after a fixed number of epochs (epochs, not minutes, so the load of the machine does not
move it). A figure further than the check's tolerance from the stated one fails the check and the
command exits 1, so a regression in the simulator, the trainer, the model or the defaults is caught
by whoever runs this. Tolerances are the epoch-to-epoch noise measured on these data (see
expected.json); val PER of one run on a few hundred trials is not a precise number.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EXPECTED = Path(__file__).with_name("expected.json")


def ensure_data(preset: str, seed: int, work: Path) -> Path:
    root = work / f"{preset}_seed{seed}"
    if not (root / "simulation.json").is_file():
        subprocess.run([sys.executable, str(REPO / "scripts" / "simulate.py"), f"preset={preset}",
                        f"output_dir={root}", f"seed={seed}", "overwrite=true"], check=True, cwd=REPO)
    return root


def run_check(name: str, check: dict, work: Path) -> dict:
    root = ensure_data(check["preset"], check.get("data_seed", 0), work)
    run_dir = work / "runs" / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    cmd = [sys.executable, str(REPO / "scripts" / "train.py"), f"data.data_root={root}", *check["overrides"],
           f"hydra.run.dir={run_dir}"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{name}: train.py failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    import torch

    history = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["position"]["history"]
    pers = [h["val/per"] for h in history if "val/per" in h]
    measured = {"val_per_last": pers[-1], "val_per_best": min(pers), "val_per_by_epoch": pers,
                "minutes": (time.perf_counter() - start) / 60, "run_dir": str(run_dir)}
    return measured


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", nargs="+", default=None)
    p.add_argument("--work", type=Path, default=REPO / "outputs" / "reproduce")
    p.add_argument("--update", action="store_true", help="store the measured figures as the expected ones")
    args = p.parse_args()
    expected = json.loads(EXPECTED.read_text())
    names = args.only or list(expected["checks"])
    unknown = [n for n in names if n not in expected["checks"]]
    if unknown:
        raise SystemExit(f"unknown check(s) {unknown}; {EXPECTED} has {list(expected['checks'])}")
    failed = []
    for name in names:
        check = expected["checks"][name]
        got = run_check(name, check, args.work)
        want, tol = check["expect"][check["metric"]], check["tolerance"]
        value = got[check["metric"]]
        ok = abs(value - want) <= tol
        print(f"{'ok  ' if ok else 'FAIL'} {name}: {check['metric']} {value:.3f} (stated {want:.3f} ± {tol}); "
              f"by epoch {[round(v, 3) for v in got['val_per_by_epoch']]}; {got['minutes']:.1f} min; {got['run_dir']}",
              flush=True)
        if not ok:
            failed.append(name)
        if args.update:
            check["expect"][check["metric"]] = round(value, 3)
    if args.update:
        EXPECTED.write_text(json.dumps(expected, indent=2) + "\n")
        print(f"updated {EXPECTED}")
    if failed and not args.update:
        raise SystemExit(f"{len(failed)} check(s) moved beyond their tolerance: {failed}")


if __name__ == "__main__":
    main()
