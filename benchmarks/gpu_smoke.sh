#!/usr/bin/env bash
# One short GPU check (under 8 minutes on one modern GPU): paper-size MODE-SSM, bf16, mamba_ssm kernel
# if it installs, a few hundred steps on simulated bench. See benchmarks/gpu_smoke.py. Not part of CI.
#   bash benchmarks/gpu_smoke.sh [--steps 300] [--rnnt-loss pruned]
set -euo pipefail
cd "$(dirname "$0")/.."
if ! python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "gpu_smoke: no CUDA device (or no CUDA build of torch) on this machine; run it on a GPU machine" >&2
    exit 2
fi
python3 -m pip install -q -e . >/dev/null
# the fused scan kernel; its build can fail (CUDA toolkit, compiler): then the pure scan runs and the output says so
python3 -m pip install -q "mamba-ssm>=2.2,<3" --no-build-isolation >/dev/null 2>&1 \
    || echo "gpu_smoke: mamba-ssm did not install; running the pure PyTorch scan"
ROOT=data/simulated/bench_seed0
[ -f "$ROOT/simulation.json" ] || python3 scripts/simulate.py preset=bench output_dir="$ROOT"
timeout 480 python3 benchmarks/gpu_smoke.py --data-root "$ROOT" "$@"
