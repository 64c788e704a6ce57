"""One short GPU check of the paper-size MODE-SSM: bf16 training steps, peak memory, kernel vs pure scan.

    bash benchmarks/gpu_smoke.sh            # installs mamba-ssm if it can, simulates bench, runs this
    python benchmarks/gpu_smoke.py --data-root data/simulated/bench_seed0 --steps 300

On a CUDA machine: builds ``model=mode_ssm`` (d_model 512, 8 bidirectional layers, joiner 512) for
the bench sessions, trains ``--steps`` optimizer steps of the joint CTC + RNN-T + mode loss on bench
train batches (``--batch-size``, bf16 autocast, AdamW), and prints steps/s and trials/s (after
``--warmup`` steps), peak GPU memory, and, on one real batch, the largest difference between the
encoder run with ``mamba_ssm``'s fused scan and with the pure PyTorch chunked scan (if mamba_ssm
imports). ``--rnnt-loss pruned`` uses the memory-bounded loss. Exits 2 with a message where no
CUDA device is present. Not part of CI.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", required=True)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--rnnt-loss", default="full", choices=("full", "pruned"))
    args = p.parse_args()
    if not torch.cuda.is_available():
        print("gpu_smoke: no CUDA device here (torch.cuda.is_available() is False); run it on a GPU machine",
              file=sys.stderr)
        sys.exit(2)
    from omegaconf import OmegaConf

    from mode_ssm.data.batching import collate_trials
    from mode_ssm.data.t15 import T15Split
    from mode_ssm.models.build import build_model
    from mode_ssm.models.losses import compute_losses, trim_targets
    from mode_ssm.models.ssm import cuda_kernel_available

    device = torch.device("cuda")
    torch.manual_seed(0)
    train = T15Split(args.data_root, "train", validate="metadata")
    cfg = OmegaConf.load(__file__.rsplit("/benchmarks/", 1)[0] + "/configs/model/mode_ssm.yaml")
    cfg.rnnt_loss = args.rnnt_loss
    model = build_model(cfg, n_days=len(train.sessions), n_channels=512).to(device).train()
    kernel = cuda_kernel_available()
    print(f"paper-size MODE-SSM: {sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters; "
          f"mamba_ssm kernel {'in use' if kernel else 'NOT available: pure chunked scan'}; "
          f"RNN-T loss {args.rnnt_loss}; batch {args.batch_size}; {torch.cuda.get_device_name()}")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    order = torch.randperm(len(train)).tolist()
    weights = {"ctc": 0.5, "rnnt": 0.5, "mode": 0.1}

    def batch_at(step: int) -> dict:
        idx = [order[(step * args.batch_size + i) % len(order)] for i in range(args.batch_size)]
        b = collate_trials([train[i] for i in idx])
        return {k: v.to(device) if torch.is_tensor(v) else v for k, v in b.items()}

    torch.cuda.reset_peak_memory_stats()
    started, trials = None, 0
    for step in range(args.steps):
        if step == args.warmup:
            torch.cuda.synchronize()
            started, trials = time.perf_counter(), 0
        b = batch_at(step)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = model(b["features"], b["feature_lengths"], b["day_index"],
                        rnnt_targets=trim_targets(b["phoneme_ids"], b["phoneme_lengths"]))
            losses = compute_losses(model, b, out, weights, torch.full((args.batch_size,), -1, device=device))
        opt.zero_grad(set_to_none=True)
        losses["total"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        trials += args.batch_size
        if step % 50 == 0:
            print(f"step {step}: loss {float(losses['total'].detach()):.3f}", flush=True)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    print(f"{(args.steps - args.warmup) / seconds:.2f} steps/s, {trials / seconds:.1f} trials/s "
          f"(steps {args.warmup}..{args.steps}); peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")

    if kernel:  # the same encoder, fused kernel vs pure scan, on a real batch in float32
        model.eval()
        b = batch_at(0)
        blocks = [blk for layer in model.encoder.layers for blk in (layer.forward_block, layer.backward_block) if blk]
        with torch.no_grad():
            outs = []
            for use in (True, False):
                for blk in blocks:
                    blk.use_cuda_kernel = use
                outs.append(model(b["features"], b["feature_lengths"], b["day_index"])["encoder_features"].float())
        print(f"kernel vs pure scan on a real batch: max abs difference of the encoder output "
              f"{float((outs[0] - outs[1]).abs().max()):.2e} (scale {float(outs[1].abs().max()):.2f})")


if __name__ == "__main__":
    main()
