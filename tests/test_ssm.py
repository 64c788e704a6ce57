"""Chunked selective scan pinned to its sequential twin; encoder padding and direction."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mode_ssm.models.ssm import (
    BiMambaEncoder,
    MambaBlock,
    cuda_kernel_available,
    reverse_within_lengths,
    segment_sum,
    selective_scan,
    ssd_chunked_scan,
    ssd_sequential_scan,
)

torch.set_num_threads(1)


def random_scan_inputs(batch, length, n_heads, d_head, n_groups, d_state, dtype, seed, dt_scale=1.0):
    generator = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=generator, dtype=dtype)

    x = randn(batch, length, n_heads, d_head)
    dt = F.softplus(randn(batch, length, n_heads) - 1.0) * dt_scale
    A = -torch.exp(randn(n_heads))
    B = randn(batch, length, n_groups, d_state)
    C = randn(batch, length, n_groups, d_state)
    initial_state = randn(batch, n_heads, d_head, d_state)
    return x, dt, A, B, C, initial_state


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual - expected).detach().abs().max() / expected.detach().abs().max())


@pytest.mark.parametrize(
    "length, chunk_size, n_heads, n_groups",
    [(37, 7, 4, 1), (50, 1, 3, 1), (64, 64, 4, 2), (130, 64, 6, 3), (20, 64, 2, 1)],
)
def test_chunked_scan_equals_sequential_in_float64(length, chunk_size, n_heads, n_groups):
    x, dt, A, B, C, h0 = random_scan_inputs(2, length, n_heads, 5, n_groups, 6, torch.float64, seed=length)
    y, final = ssd_chunked_scan(x, dt, A, B, C, chunk_size, initial_state=h0, return_final_state=True)
    y_ref, final_ref = ssd_sequential_scan(x, dt, A, B, C, initial_state=h0, return_final_state=True)
    assert y.shape == (2, length, n_heads, 5) and final.shape == (2, n_heads, 5, 6)
    assert (y - y_ref).abs().max() < 1e-10
    assert (final - final_ref).abs().max() < 1e-10
    # Without an initial state, the same twin agreement.
    assert (ssd_chunked_scan(x, dt, A, B, C, chunk_size) - ssd_sequential_scan(x, dt, A, B, C)).abs().max() < 1e-10


def test_sequential_scan_matches_the_recurrence_written_by_hand():
    x, dt, A, B, C, _ = random_scan_inputs(1, 3, 1, 1, 1, 1, torch.float64, seed=0)
    a = torch.exp(dt[0, :, 0] * A[0])
    u = dt[0, :, 0] * x[0, :, 0, 0] * B[0, :, 0, 0]
    h1 = u[0]
    h2 = a[1] * h1 + u[1]
    h3 = a[2] * h2 + u[2]
    expected = torch.stack([h1, h2, h3]) * C[0, :, 0, 0]
    assert torch.allclose(ssd_sequential_scan(x, dt, A, B, C)[0, :, 0, 0], expected, atol=1e-14, rtol=0)


def test_chunked_scan_float32_outputs_and_gradients_match_sequential():
    inputs = random_scan_inputs(2, 90, 4, 8, 1, 16, torch.float32, seed=1)[:5]
    weights = torch.randn(2, 90, 4, 8, generator=torch.Generator().manual_seed(2))
    chunked = [t.clone().requires_grad_(True) for t in inputs]
    sequential = [t.clone().requires_grad_(True) for t in inputs]
    y = ssd_chunked_scan(*chunked, chunk_size=32)
    y_ref = ssd_sequential_scan(*sequential)
    (y * weights).sum().backward()
    (y_ref * weights).sum().backward()
    assert relative_error(y, y_ref) < 1e-4
    for name, a, b in zip("x dt A B C".split(), chunked, sequential):
        assert relative_error(a.grad, b.grad) < 1e-4, name


def test_strong_decay_stays_finite_and_exact():
    # dt * |A| up to ~60 per step: exp of summed decays underflows to 0, never overflows.
    x, dt, A, B, C, _ = random_scan_inputs(2, 100, 2, 4, 1, 4, torch.float64, seed=3, dt_scale=30.0)
    A = A - 1.0
    y = ssd_chunked_scan(x, dt, A, B, C, chunk_size=64)
    assert (y - ssd_sequential_scan(x, dt, A, B, C)).abs().max() < 1e-9
    inputs32 = [t.float().requires_grad_(True) for t in (x, dt, A, B, C)]
    ssd_chunked_scan(*inputs32, chunk_size=64).sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in inputs32)


def test_segment_sum_is_the_sum_over_each_segment():
    log_decay = torch.tensor([[-0.5, -1.0, -2.0, -0.25]], dtype=torch.float64)
    sums = segment_sum(log_decay)[0]
    assert sums[2, 0] == -3.0 and sums[3, 1] == -2.25 and sums[1, 1] == 0.0
    assert sums[0, 1] == -math.inf and sums[2, 3] == -math.inf


def test_scan_rejects_heads_not_divisible_by_groups():
    x, dt, A, B, C, _ = random_scan_inputs(1, 8, 3, 2, 2, 4, torch.float32, seed=4)
    with pytest.raises(ValueError, match="divide"):
        ssd_chunked_scan(x, dt, A, B, C)


def test_reverse_within_lengths_keeps_padding_at_the_end():
    x = torch.arange(10.0).reshape(2, 5, 1)
    reversed_x = reverse_within_lengths(x, torch.tensor([3, 5]))
    assert reversed_x[..., 0].tolist() == [[2, 1, 0, 3, 4], [9, 8, 7, 6, 5]]
    assert torch.equal(reverse_within_lengths(reversed_x, torch.tensor([3, 5])), x)


def test_mamba_block_initial_dt_and_decay():
    torch.manual_seed(0)
    block = MambaBlock(32, head_dim=8, dt_min=0.002, dt_max=0.05)
    dt = F.softplus(block.dt_bias)
    assert block.n_heads == 8
    assert dt.min() >= 0.002 - 1e-6 and dt.max() <= 0.05 + 1e-6
    A = -torch.exp(block.A_log)
    assert A.max() <= -1.0 and A.min() >= -16.0


def test_mamba_block_padding_does_not_reach_valid_positions():
    torch.manual_seed(0)
    block = MambaBlock(16, d_state=8, head_dim=8, chunk_size=8)
    x = torch.randn(2, 21, 16)
    lengths = torch.tensor([13, 21])
    y = block(x, lengths)
    x_noisy = x.clone()
    x_noisy[0, 13:] = 1e3 * torch.randn(8, 16)
    y_noisy = block(x_noisy, lengths)
    assert y.shape == (2, 21, 16)
    assert torch.allclose(y[0, :13], y_noisy[0, :13], atol=1e-6, rtol=0)
    assert torch.equal(y[1], y_noisy[1])


def test_mamba_block_without_lengths_matches_full_lengths():
    torch.manual_seed(1)
    block = MambaBlock(16, d_state=8, head_dim=8, chunk_size=8)
    x = torch.randn(2, 11, 16)
    assert torch.allclose(block(x), block(x, torch.tensor([11, 11])), atol=1e-6, rtol=0)


def small_encoder(bidirectional: bool = True, seed: int = 0) -> BiMambaEncoder:
    torch.manual_seed(seed)
    return BiMambaEncoder(24, n_layers=2, d_state=8, head_dim=12, chunk_size=8, bidirectional=bidirectional).eval()


def test_encoder_output_does_not_depend_on_padding():
    encoder = small_encoder()
    short = torch.randn(1, 13, 24)
    alone = encoder(short, torch.tensor([13]))
    batch = torch.randn(2, 30, 24)  # padding of the short sequence is random, not zero
    batch[0, :13] = short[0]
    together = encoder(batch, torch.tensor([13, 30]))
    assert torch.allclose(together[0, :13], alone[0], atol=1e-5, rtol=0)
    assert together[0, 13:].abs().max() == 0


def test_encoder_is_bidirectional_only_when_asked():
    x = torch.randn(1, 20, 24, generator=torch.Generator().manual_seed(6))
    lengths = torch.tensor([20])
    changed = x.clone()
    changed[0, 19] += 1.0
    for bidirectional in (True, False):
        encoder = small_encoder(bidirectional)
        first_frame_moves = (encoder(x, lengths)[0, 0] - encoder(changed, lengths)[0, 0]).abs().max()
        assert (first_frame_moves > 1e-4) == bidirectional


def test_encoder_ignores_non_finite_padding_and_trains_every_parameter():
    encoder = small_encoder().train()
    x = torch.randn(2, 17, 24)
    x[1, 9:] = float("nan")
    out = encoder(x, torch.tensor([17, 9]))
    assert torch.isfinite(out).all()
    out.square().sum().backward()
    for name, parameter in encoder.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().max() > 0, name


@pytest.mark.skipif(not cuda_kernel_available(), reason="needs CUDA and the mamba_ssm package")
def test_cuda_kernel_matches_pure_pytorch_scan():
    inputs = random_scan_inputs(2, 300, 4, 32, 1, 16, torch.float32, seed=5)[:5]
    on_gpu = [t.cuda().requires_grad_(True) for t in inputs]
    on_cpu = [t.clone().requires_grad_(True) for t in inputs]
    weights = torch.randn(2, 300, 4, 32)
    y_kernel = selective_scan(*on_gpu, chunk_size=64, use_cuda_kernel=True)
    y_pure = selective_scan(*on_cpu, chunk_size=64, use_cuda_kernel=False)
    (y_kernel * weights.cuda()).sum().backward()
    (y_pure * weights).sum().backward()
    # The kernel may use TF32 matrix products, hence the looser bound than the CPU twins.
    assert relative_error(y_kernel.cpu(), y_pure.detach()) < 5e-3
    for name, a, b in zip("x dt A B C".split(), on_gpu, on_cpu):
        assert relative_error(a.grad.cpu(), b.grad) < 5e-3, name
