"""Selective state-space encoder (Mamba-2 style), pure PyTorch with an optional CUDA kernel.

The recurrence, per head h, state size N, head width P::

    h_t = exp(dt_t * A) * h_{t-1} + dt_t * x_t B_t^T        h_t: (P, N)
    y_t = h_t C_t                                           y_t: (P,)

with one scalar decay ``A < 0`` per head (Mamba-2's "SSD" restriction). That
restriction lets the scan be computed chunk by chunk with matrix products
(``ssd_chunked_scan``), which is what makes it fast on CPU as well as GPU:
quadratic attention-like work inside a chunk, a short recurrence between
chunks. ``ssd_sequential_scan`` is the step-by-step twin the tests pin it to.
Reference: Dao & Gu, "Transformers are SSMs" (2024), section 6.

Where the ``mamba_ssm`` package is installed and tensors are on CUDA, its fused
Triton kernel replaces the pure chunked scan (same inputs, same outputs).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable, Literal, Union

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

CudaKernelChoice = Union[Literal["auto"], bool]


# --------------------------------------------------------------------------- scans


def segment_sum(log_decay: Tensor) -> Tensor:
    """Sums of log-decays over every segment of the last axis.

    log_decay: (..., length). Returns (..., length, length) with
    ``out[..., i, j] = sum_{k=j+1}^{i} log_decay[..., k]`` for i >= j and -inf above
    the diagonal, so ``exp(out)`` is the causal decay matrix.

    Built by a masked cumulative sum rather than a difference of two cumulative
    sums: the difference of two large negative numbers loses precision in float32.
    """
    length = log_decay.shape[-1]
    repeated = log_decay[..., :, None].expand(*log_decay.shape, length)  # [..., i, j] = a_i
    strictly_lower = torch.tril(
        torch.ones(length, length, dtype=torch.bool, device=log_decay.device), diagonal=-1
    )
    sums = torch.cumsum(repeated.masked_fill(~strictly_lower, 0.0), dim=-2)
    causal = torch.tril(torch.ones(length, length, dtype=torch.bool, device=log_decay.device))
    return sums.masked_fill(~causal, -math.inf)


def _check_scan_shapes(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor) -> None:
    batch, length, n_heads, _ = x.shape
    n_groups = B.shape[2]
    if dt.shape != (batch, length, n_heads):
        raise ValueError(f"dt has shape {tuple(dt.shape)}, expected {(batch, length, n_heads)}")
    if A.shape != (n_heads,):
        raise ValueError(f"A has shape {tuple(A.shape)}, expected ({n_heads},)")
    if B.shape[:2] != (batch, length) or C.shape != B.shape:
        raise ValueError(f"B {tuple(B.shape)} and C {tuple(C.shape)} must be (batch, length, n_groups, d_state)")
    if n_heads % n_groups != 0:
        raise ValueError(f"n_groups={n_groups} must divide n_heads={n_heads}")


def ssd_chunked_scan(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    chunk_size: int = 64,
    initial_state: Tensor | None = None,
    return_final_state: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Selective scan with a scalar decay per head, computed chunk by chunk.

    x: (batch, length, n_heads, d_head)
    dt: (batch, length, n_heads), positive (already softplus'ed)
    A: (n_heads,), negative
    B, C: (batch, length, n_groups, d_state); heads are split evenly over groups
    initial_state: (batch, n_heads, d_head, d_state) or None (zeros)
    Returns y: (batch, length, n_heads, d_head), and the state after the last
    step, (batch, n_heads, d_head, d_state), if ``return_final_state``.

    A length that is not a multiple of ``chunk_size`` is padded with dt = 0 and
    x = 0, steps that neither decay nor write the state.
    """
    _check_scan_shapes(x, dt, A, B, C)
    batch, length, n_heads, d_head = x.shape
    n_groups, d_state = B.shape[2], B.shape[3]
    pad = (-length) % chunk_size
    if pad:
        x = F.pad(x, (0, 0, 0, 0, 0, pad))
        dt = F.pad(dt, (0, 0, 0, pad))
        B = F.pad(B, (0, 0, 0, 0, 0, pad))
        C = F.pad(C, (0, 0, 0, 0, 0, pad))

    # Heads are written as (group, head-in-group) so B and C are shared, not copied,
    # per head; head-major layout keeps every per-chunk matrix contiguous for matmul.
    x_dt = rearrange(x * dt[..., None], "b (c q) (g r) p -> b g r c q p", q=chunk_size, g=n_groups)
    B = rearrange(B, "b (c q) g n -> b g 1 c q n", q=chunk_size)
    C = rearrange(C, "b (c q) g n -> b g 1 c q n", q=chunk_size)
    log_decay = rearrange(dt * A, "b (c q) (g r) -> b g r c q", q=chunk_size, g=n_groups)
    log_decay_cumsum = torch.cumsum(log_decay, dim=-1)  # from chunk start to position, <= 0

    # 1. Within each chunk: y_i = sum_{j<=i} (C_i . B_j) decay(j->i) dt_j x_j.
    scores = C @ B.transpose(-1, -2)  # (b g 1 c i j)
    decay_matrix = torch.exp(segment_sum(log_decay))  # (b g r c i j)
    y_within = (scores * decay_matrix) @ x_dt  # (b g r c q p)

    # 2. What each chunk alone writes into the state by its end.
    decay_to_chunk_end = torch.exp(log_decay_cumsum[..., -1:] - log_decay_cumsum)  # (b g r c q)
    chunk_writes = x_dt.transpose(-1, -2) @ (B * decay_to_chunk_end[..., None])  # (b g r c p n)

    # 3. Carry the state across chunks: a short loop, one step per chunk (linear time).
    chunk_decay = torch.exp(log_decay_cumsum[..., -1])  # (b g r c)
    if initial_state is None:
        state = x.new_zeros(batch, n_groups, n_heads // n_groups, d_head, d_state)
    else:
        state = rearrange(initial_state, "b (g r) p n -> b g r p n", g=n_groups)
    chunk_start_states = []
    # unbind, not indexing in the loop: indexing's backward allocates a full-size
    # zero gradient per chunk, which made the loop quadratic in length.
    for decay, write in zip(chunk_decay.unbind(dim=-1), chunk_writes.unbind(dim=3)):
        chunk_start_states.append(state)
        state = decay[..., None, None] * state + write
    start_states = torch.stack(chunk_start_states, dim=3)  # (b g r c p n)

    # 4. Read the carried-in state at every position, decayed from the chunk start.
    decay_from_chunk_start = torch.exp(log_decay_cumsum)[..., None]  # (b g r c q 1)
    y_carried = (C * decay_from_chunk_start) @ start_states.transpose(-1, -2)  # (b g r c q p)

    y = rearrange(y_within + y_carried, "b g r c q p -> b (c q) (g r) p")[:, :length]
    if return_final_state:
        return y, rearrange(state, "b g r p n -> b (g r) p n")
    return y


def ssd_sequential_scan(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    chunk_size: int = 64,
    initial_state: Tensor | None = None,
    return_final_state: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """The same scan one time step at a time: the readable reference.

    Shapes as in ``ssd_chunked_scan``; ``chunk_size`` is accepted and ignored so
    the two functions are interchangeable.
    """
    _check_scan_shapes(x, dt, A, B, C)
    batch, length, n_heads, d_head = x.shape
    heads_per_group = n_heads // B.shape[2]
    B = B.repeat_interleave(heads_per_group, dim=2)  # (b l h n)
    C = C.repeat_interleave(heads_per_group, dim=2)
    if initial_state is None:
        state = x.new_zeros(batch, n_heads, d_head, B.shape[-1])
    else:
        state = initial_state
    outputs = []
    for t in range(length):
        decay = torch.exp(dt[:, t] * A)[:, :, None, None]  # (b h 1 1)
        write = (dt[:, t, :, None] * x[:, t])[..., None] * B[:, t, :, None, :]  # (b h p n)
        state = decay * state + write
        outputs.append(torch.einsum("bhpn,bhn->bhp", state, C[:, t]))
    y = torch.stack(outputs, dim=1)
    if return_final_state:
        return y, state
    return y


@functools.lru_cache(maxsize=1)
def _load_mamba_kernel() -> tuple[Callable | None, str]:
    """(``mamba_ssm``'s fused chunked scan or None, why it could not be imported)."""
    try:
        from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined
    except Exception as e:  # ImportError, or a Triton/CUDA mismatch raised at import
        return None, f"{type(e).__name__}: {e}"
    return mamba_chunk_scan_combined, ""


def _mamba_kernel() -> Callable | None:
    return _load_mamba_kernel()[0]


def cuda_kernel_available() -> bool:
    """True where ``mamba_ssm`` imports and a CUDA device is present."""
    return torch.cuda.is_available() and _mamba_kernel() is not None


def require_cuda_kernel() -> None:
    """For ``use_cuda_kernel: true``: raise, saying why, unless the kernel can run here."""
    kernel, why = _load_mamba_kernel()
    if kernel is None:
        raise RuntimeError(f"use_cuda_kernel=true but mamba_ssm's kernel cannot be imported ({why}); "
                           "install it with pip install -e '.[cuda]' or set model.use_cuda_kernel=auto")
    if not torch.cuda.is_available():
        raise RuntimeError("use_cuda_kernel=true but no CUDA device is available; set model.use_cuda_kernel=auto")


def selective_scan(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    chunk_size: int = 64,
    use_cuda_kernel: CudaKernelChoice = "auto",
) -> Tensor:
    """The scan the model uses: ``mamba_ssm``'s kernel on CUDA where allowed and installed,
    else ``ssd_chunked_scan``. Shapes as in ``ssd_chunked_scan``; returns y only.

    ``use_cuda_kernel``: "auto" uses the kernel where it can; True requires it
    (an error on CPU tensors or without the package, never a silent fallback);
    False always runs the pure scan.
    """
    if use_cuda_kernel is True:
        require_cuda_kernel()
        if not x.is_cuda:
            raise RuntimeError(f"use_cuda_kernel=true but the input is on {x.device}; move the model to CUDA "
                               "or set model.use_cuda_kernel=auto")
    if use_cuda_kernel and x.is_cuda and _mamba_kernel() is not None:
        kernel = _mamba_kernel()
        return kernel(x.contiguous(), dt.contiguous(), A, B.contiguous(), C.contiguous(), chunk_size)
    return ssd_chunked_scan(x, dt, A, B, C, chunk_size=chunk_size)


# --------------------------------------------------------------------------- modules


def valid_mask(lengths: Tensor, max_length: int) -> Tensor:
    """lengths: (batch,) -> (batch, max_length) bool, True where t < length."""
    return torch.arange(max_length, device=lengths.device)[None, :] < lengths[:, None]


def reverse_within_lengths(x: Tensor, lengths: Tensor) -> Tensor:
    """Reverse each sequence in time within its own length; padding stays at the end.

    x: (batch, time, ...); lengths: (batch,) int. Returns the same shape.
    Applying it twice gives back ``x``.
    """
    time = x.shape[1]
    t = torch.arange(time, device=x.device)[None, :]
    lengths = lengths.to(x.device)[:, None]
    source = torch.where(t < lengths, lengths - 1 - t, t)  # (batch, time)
    source = source.reshape(*source.shape, *([1] * (x.dim() - 2))).expand_as(x)
    return torch.gather(x, 1, source)


class RMSNorm(nn.Module):
    """Root-mean-square norm over the last axis with a learned scale.

    (Written here because ``torch.nn.RMSNorm`` needs torch >= 2.4.)
    """

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        """x: (..., dim) -> (..., dim)."""
        x_float = x.float()
        normed = x_float * torch.rsqrt(x_float.pow(2).mean(-1, keepdim=True) + self.eps)
        return normed.to(x.dtype) * self.weight


@dataclass
class BlockState:
    """What a ``MambaBlock`` carries from one piece of a sequence to the next."""

    conv: Tensor  # (batch, conv channels, d_conv - 1): the convolution's last inputs
    ssm: Tensor  # (batch, n_heads, head_dim, d_state): the scan state


class MambaBlock(nn.Module):
    """One Mamba-2 mixer: projection, causal conv, selective scan, gated norm, projection.

    The input is projected to a gate z, the scan input x, the shared B and C
    (one group), and one dt per head. x, B, C pass through a short causal
    depthwise convolution and SiLU; dt = softplus(raw + bias), with the bias
    initialised so dt starts log-uniform in [dt_min, dt_max]; A = -exp(A_log)
    per head. Output: out_proj(RMSNorm(y * silu(z))) with y = scan + D * x.
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        head_dim: int = 32,
        chunk_size: int = 64,
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        use_cuda_kernel: CudaKernelChoice = "auto",
    ) -> None:
        super().__init__()
        d_inner = expand * d_model
        if d_inner % head_dim != 0:
            raise ValueError(f"expand * d_model = {d_inner} is not a multiple of head_dim = {head_dim}")
        self.d_inner = d_inner
        self.d_state = d_state
        self.head_dim = head_dim
        self.n_heads = d_inner // head_dim
        self.chunk_size = chunk_size
        if use_cuda_kernel is True:
            require_cuda_kernel()  # fail at construction, not at the first batch
        self.use_cuda_kernel = use_cuda_kernel
        conv_channels = d_inner + 2 * d_state  # x, B, C

        self.in_proj = nn.Linear(d_model, d_inner + conv_channels + self.n_heads, bias=False)
        self.conv1d = nn.Conv1d(
            conv_channels, conv_channels, kernel_size=d_conv, groups=conv_channels, padding=d_conv - 1
        )
        dt_init = torch.exp(
            torch.rand(self.n_heads) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        )
        # softplus(dt_bias) == dt_init at the start; expm1 form of the inverse softplus.
        self.dt_bias = nn.Parameter(dt_init + torch.log(-torch.expm1(-dt_init)))
        # Decay rates spread over [1, 16] per head, as in Mamba-2, for a mix of time scales.
        self.A_log = nn.Parameter(torch.log(torch.empty(self.n_heads).uniform_(1.0, 16.0)))
        self.D = nn.Parameter(torch.ones(self.n_heads))
        self.norm = RMSNorm(d_inner)
        self.out_proj = nn.Linear(d_inner, d_model, bias=False)

    def forward(self, x: Tensor, lengths: Tensor | None = None, state: BlockState | None = None,
                return_state: bool = False) -> Tensor | tuple[Tensor, BlockState]:
        """x: (batch, length, d_model); lengths: (batch,) or None (all full).
        Returns (batch, length, d_model); padded positions hold no meaning.

        ``state``: the convolution inputs and scan state left by the sequence's earlier
        steps (None: a sequence's start), and ``return_state``: also return the state
        after the last step, so a sequence can be fed in pieces (streaming; no padding).
        """
        length = x.shape[1]
        if lengths is not None:
            lengths = lengths.to(x.device)
        z, xBC, dt_raw = torch.split(
            self.in_proj(x), [self.d_inner, self.d_inner + 2 * self.d_state, self.n_heads], dim=-1
        )
        padding = None if lengths is None else ~valid_mask(lengths, length)[..., None]  # (b l 1)
        if padding is not None:
            xBC = xBC.masked_fill(padding, 0.0)
        xBC = rearrange(xBC, "b l c -> b c l")
        history = self.conv1d.kernel_size[0] - 1
        if state is None and not return_state:
            xBC = self.conv1d(xBC)[..., :length]
        else:  # the same causal convolution with the carried inputs in place of the zero padding
            carried = xBC.new_zeros(*xBC.shape[:2], history) if state is None else state.conv.to(xBC.dtype)
            xBC = torch.cat([carried, xBC], dim=-1)
            conv_state = xBC[..., xBC.shape[-1] - history:]
            xBC = F.conv1d(xBC, self.conv1d.weight, self.conv1d.bias, groups=self.conv1d.groups)
        xBC = F.silu(rearrange(xBC, "b c l -> b l c"))
        dt = F.softplus(dt_raw + self.dt_bias)
        if padding is not None:
            # Padded steps must neither write nor decay the state (it is carried on).
            xBC = xBC.masked_fill(padding, 0.0)
            dt = dt.masked_fill(padding, 0.0)
        x_ssm, B, C = torch.split(xBC, [self.d_inner, self.d_state, self.d_state], dim=-1)
        x_heads = rearrange(x_ssm, "b l (h p) -> b l h p", p=self.head_dim)

        # The scan runs in float32 even under autocast: exp of summed decays is
        # where half precision goes wrong first.
        with torch.autocast(device_type=x.device.type, enabled=False):
            scan_args = (x_heads.float(), dt.float(), -torch.exp(self.A_log.float()),
                         rearrange(B, "b l n -> b l 1 n").float(), rearrange(C, "b l n -> b l 1 n").float())
            if state is None and not return_state:
                y = selective_scan(*scan_args, chunk_size=self.chunk_size, use_cuda_kernel=self.use_cuda_kernel)
            else:  # a few steps at a time: the step-by-step scan is cheaper than a padded chunk
                scan = ssd_sequential_scan if length < self.chunk_size // 2 else ssd_chunked_scan
                y, ssm_state = scan(*scan_args, chunk_size=self.chunk_size, return_final_state=True,
                                    initial_state=None if state is None else state.ssm)
        y = y.to(x_heads.dtype) + x_heads * self.D[:, None]
        y = rearrange(y, "b l h p -> b l (h p)")
        out = self.out_proj(self.norm(y * F.silu(z)))
        return (out, BlockState(conv_state, ssm_state)) if return_state else out


class BiMambaLayer(nn.Module):
    """Pre-norm residual layer: x + dropout(forward_mamba(n) + backward_mamba(n)), n = norm(x).

    The backward block reads each sequence reversed within its own length.
    Merging the two directions by a sum loses nothing against concatenating
    them and projecting: each block ends in its own output projection, so the
    sum is exactly a linear map of the concatenation.
    """

    def __init__(self, d_model: int, dropout: float = 0.0, bidirectional: bool = True, **block_kwargs) -> None:
        super().__init__()
        self.norm = RMSNorm(d_model)
        self.forward_block = MambaBlock(d_model, **block_kwargs)
        self.backward_block = MambaBlock(d_model, **block_kwargs) if bidirectional else None
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, lengths: Tensor | None, state: BlockState | None = None,
                return_state: bool = False) -> Tensor | tuple[Tensor, BlockState]:
        """x: (batch, time, d_model); lengths: (batch,) -> (batch, time, d_model).

        ``state`` / ``return_state``: see ``MambaBlock``; forward direction only.
        """
        normed = self.norm(x)
        if state is not None or return_state:
            if self.backward_block is not None:
                raise ValueError("a bidirectional layer reads the whole sequence and cannot carry a state")
            mixed, state = self.forward_block(normed, lengths, state, return_state=True)
            return x + self.dropout(mixed), state
        mixed = self.forward_block(normed, lengths)
        if self.backward_block is not None:
            reversed_in = reverse_within_lengths(normed, lengths)
            mixed = mixed + reverse_within_lengths(self.backward_block(reversed_in, lengths), lengths)
        return x + self.dropout(mixed)


class BiMambaEncoder(nn.Module):
    """Stack of bidirectional Mamba layers and a final RMSNorm.

    Outputs at valid positions do not depend on how much padding follows
    them; padded positions of the output are zero.
    """

    def __init__(
        self,
        d_model: int,
        n_layers: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        head_dim: int = 32,
        chunk_size: int = 64,
        dropout: float = 0.0,
        bidirectional: bool = True,
        use_cuda_kernel: CudaKernelChoice = "auto",
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            BiMambaLayer(
                d_model,
                dropout=dropout,
                bidirectional=bidirectional,
                d_state=d_state,
                d_conv=d_conv,
                expand=expand,
                head_dim=head_dim,
                chunk_size=chunk_size,
                use_cuda_kernel=use_cuda_kernel,
            )
            for _ in range(n_layers)
        )
        self.final_norm = RMSNorm(d_model)

    def forward(self, x: Tensor, lengths: Tensor | None = None, states: list[BlockState] | None = None,
                return_states: bool = False) -> Tensor | tuple[Tensor, list[BlockState]]:
        """x: (batch, time, d_model); lengths: (batch,) int64 or None (all full).
        Returns (batch, time, d_model), zero at t >= length.

        ``states`` / ``return_states`` (unidirectional encoders, unpadded input): each layer's
        state carried from the sequence's earlier steps, and the states after the last step.
        """
        if states is not None or return_states:
            states = states if states is not None else [None] * len(self.layers)
            new_states = []
            for layer, state in zip(self.layers, states):
                x, state = layer(x, lengths, state, return_state=True)
                new_states.append(state)
            return self.final_norm(x), new_states
        batch, time, _ = x.shape
        if lengths is None:
            lengths = torch.full((batch,), time, dtype=torch.long, device=x.device)
        lengths = lengths.to(x.device)
        padding = ~valid_mask(lengths, time)[..., None]
        # masked_fill rather than a multiply so that NaN or inf in padding cannot leak.
        x = x.masked_fill(padding, 0.0)
        for layer in self.layers:
            x = layer(x, lengths).masked_fill(padding, 0.0)
        return self.final_norm(x).masked_fill(padding, 0.0)
