"""Time the selective-scan encoder and the RNN-T loss on CPU (forward + backward).

    python benchmarks/encoder_scaling.py                 # all three parts, 1 thread
    python benchmarks/encoder_scaling.py --parts encoder --lengths 250 500 1000 2000

1. BiMambaEncoder (d_model 256, 2 layers, bidirectional) at several sequence
   lengths: ms per 1000 frames should stay roughly flat (linear time).
2. The raw chunked scan at batch 16, length 600, 16 heads x 32, state 16,
   against its sequential twin.
3. rnnt_loss at batch 16, T 150, U 40, V 41.

Prints the best of ``--repeats`` runs (process CPU time) after one warm-up; no
assertions. With --threads above 1, CPU time sums over threads.
"""

from __future__ import annotations

import argparse
import time
from typing import Callable

import torch

from mode_ssm.models.rnnt_loss import rnnt_loss
from mode_ssm.models.ssm import BiMambaEncoder, ssd_chunked_scan, ssd_sequential_scan


def best_time(step: Callable[[], None], repeats: int) -> float:
    """Seconds for the fastest of ``repeats`` calls, after one warm-up call.

    Process CPU time rather than wall time: on a machine shared with other
    jobs, a single-threaded run's CPU time is far less disturbed by them.
    """
    step()
    times = []
    for _ in range(repeats):
        start = time.process_time()
        step()
        times.append(time.process_time() - start)
    return min(times)


def encoder_scaling(batch: int, lengths: list[int], chunk_size: int, repeats: int) -> None:
    torch.manual_seed(0)
    encoder = BiMambaEncoder(256, n_layers=2, chunk_size=chunk_size)
    print(f"\nBiMambaEncoder d_model 256, 2 layers, bidirectional, chunk {chunk_size}, batch {batch}, fwd+bwd")
    print(f"{'frames':>7} {'seconds':>9} {'ms / 1000 frames':>17}")
    for length in lengths:
        x = torch.randn(batch, length, 256, requires_grad=True)
        lengths_t = torch.full((batch,), length, dtype=torch.long)

        def step() -> None:
            encoder.zero_grad(set_to_none=True)
            encoder(x, lengths_t).square().mean().backward()

        seconds = best_time(step, repeats)
        print(f"{length:>7} {seconds:>9.3f} {1000 * seconds / (batch * length / 1000):>17.1f}")


def raw_scan(chunk_sizes: list[int], repeats: int, with_sequential: bool) -> None:
    torch.manual_seed(0)
    batch, length, n_heads, d_head, d_state = 16, 600, 16, 32, 16
    x = torch.randn(batch, length, n_heads, d_head, requires_grad=True)
    dt = (torch.rand(batch, length, n_heads) * 0.1).requires_grad_(True)
    A = (-1.0 - 15.0 * torch.rand(n_heads)).requires_grad_(True)
    B = torch.randn(batch, length, 1, d_state, requires_grad=True)
    C = torch.randn(batch, length, 1, d_state, requires_grad=True)
    print(f"\nscan B{batch} L{length} {n_heads} heads x {d_head} (512 channels), state {d_state}, fwd+bwd")
    for chunk_size in chunk_sizes:
        seconds = best_time(lambda: ssd_chunked_scan(x, dt, A, B, C, chunk_size).square().sum().backward(), repeats)
        print(f"  ssd_chunked_scan chunk {chunk_size:>3}: {seconds:.3f} s")
    if with_sequential:
        seconds = best_time(lambda: ssd_sequential_scan(x, dt, A, B, C).square().sum().backward(), 1)
        print(f"  ssd_sequential_scan:        {seconds:.3f} s")


def transducer_loss(repeats: int) -> None:
    torch.manual_seed(0)
    batch, frames, labels, vocab = 16, 150, 40, 41
    logits = torch.randn(batch, frames, labels + 1, vocab, requires_grad=True)
    targets = torch.randint(1, vocab, (batch, labels))
    logit_lengths = torch.randint(100, frames + 1, (batch,))
    target_lengths = torch.randint(20, labels + 1, (batch,))
    seconds = best_time(
        lambda: rnnt_loss(logits, targets, logit_lengths, target_lengths).backward(), repeats
    )
    print(f"\nrnnt_loss B{batch} T{frames} U{labels} V{vocab}, fwd+bwd: {1000 * seconds:.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", nargs="+", default=["encoder", "scan", "rnnt"], choices=["encoder", "scan", "rnnt"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lengths", type=int, nargs="+", default=[250, 500, 1000, 2000])
    parser.add_argument("--chunk-size", type=int, default=64)
    parser.add_argument("--scan-chunk-sizes", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--no-sequential", action="store_true", help="skip the slow sequential twin")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    if "encoder" in args.parts:
        encoder_scaling(args.batch, args.lengths, args.chunk_size, args.repeats)
    if "scan" in args.parts:
        raw_scan(args.scan_chunk_sizes, args.repeats, not args.no_sequential)
    if "rnnt" in args.parts:
        transducer_loss(max(args.repeats, 10))


if __name__ == "__main__":
    main()
