"""The selective scan (Mamba's S6 recurrence), the one op of Vision Mamba that ONNX has no operator for.

One function boundary, ``selective_scan``, with three interchangeable implementations:

- ``"ref"``: the exact sequential loop, one step per token, differentiated by autograd. Slow; the ground truth
  the tests hold the others to.
- ``"chunked"``: pure PyTorch, fast enough for CPU training and for GPUs without ``mamba_ssm``. The sequence
  is cut into chunks of ``T`` tokens; one pass runs the recurrence over the chunk positions for all chunks at
  once (``T`` batched steps), a second carries the state across chunk boundaries (``L / T`` small steps), a
  third reruns the positions from the carried-in states. About ``2 T + L / T`` tensor ops instead of ``L``,
  every decay factor stays in (0, 1], so nothing overflows whatever ``delta`` grows to after training (the
  closed "cumsum in log space" form needs ``exp(-cumsum)``, which overflows, or a ``T x T x N`` segment-sum
  tensor per channel, which does not fit at 577 tokens). Its backward is written by hand (the adjoint scan,
  recomputing the states), so a layer keeps for backward only its inputs and the states entering each chunk
  (``1 / T`` of the ``[B, D, L, N]`` states autograd would keep).
- ``"cuda"``: ``mamba_ssm``'s fused kernel ``selective_scan_fn``, when ``mamba_ssm`` imports and the tensors
  are on a GPU. Not tested here (no GPU, no ``mamba_ssm`` in the pinned environment); it has no reverse mode,
  so ``reverse=True`` flips the inputs along the sequence and the output back.

``"auto"`` picks ``"cuda"`` when it can, else ``"chunked"``.

Recurrence, per batch ``b``, channel ``d``, state ``n`` (``reverse=True`` runs ``t`` from ``L - 1`` down)::

    dt_t = softplus(delta_t + delta_bias)            (or without softplus / bias)
    h_t  = exp(dt_t * A[d, n]) * h_{t-1} + dt_t * B[b, n, t] * u_t
    y_t  = sum_n C[b, n, t] * h_t + D[d] * u_t
    out  = y * silu(z)                               (when z is given)

Inputs in half precision are computed in float32 and the output cast back; float64 stays float64 (the
gradient checks use it).
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import Tensor

try:  # the fused CUDA kernel is optional: it needs a GPU build of mamba_ssm
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn as _mamba_selective_scan_fn
except ImportError:  # pragma: no cover - depends on the environment
    _mamba_selective_scan_fn = None

__all__ = ["IMPLS", "cuda_kernel_available", "selective_scan"]

IMPLS = ("auto", "ref", "chunked", "cuda")

# torch.nn.functional.softplus's default, which mamba_ssm's kernel matches: linear above 20.
_SOFTPLUS_THRESHOLD = 20.0


def cuda_kernel_available() -> bool:
    """Whether ``mamba_ssm``'s fused selective-scan kernel could be imported."""
    return _mamba_selective_scan_fn is not None


def selective_scan(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    reverse: bool = False,
    impl: str = "auto",
    chunk_size: int | None = None,
) -> Tensor:
    """Run the selective scan; returns ``y [B, D, L]`` in ``u``'s dtype.

    Shapes: ``u, delta, z [B, D, L]``, ``A [D, N]`` (negative: decay), ``B, C [B, N, L]``, ``D, delta_bias
    [D]``. ``reverse=True`` scans from the end of the sequence (equal to flipping every ``L``-axis input,
    scanning forward and flipping the output). ``impl`` is one of ``IMPLS``; ``chunk_size`` (``"chunked"``
    only) defaults to about ``sqrt(L)``.

    ``"cuda"`` calls ``mamba_ssm.ops.selective_scan_interface.selective_scan_fn``; it raises RuntimeError
    when ``mamba_ssm`` is missing or the tensors are not on a GPU. That path is untested in this repository.
    """
    _check_shapes(u, delta, A, B, C, D, z, delta_bias)
    if impl == "auto":
        impl = "cuda" if (cuda_kernel_available() and u.is_cuda) else "chunked"
    if impl == "ref":
        with _autocast_off(u):
            return _scan_ref(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse)
    if impl == "chunked":
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        args = (u, delta, A, B, C, D, z, delta_bias)
        with _autocast_off(u):
            if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in args):
                return _ChunkedScan.apply(*args, delta_softplus, reverse, chunk_size)
            return _chunked_forward(*args, delta_softplus, reverse, chunk_size)[0]
    if impl == "cuda":
        return _scan_cuda(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse)
    raise ValueError(f"unknown selective-scan impl {impl!r}; expected one of {IMPLS}")


def _check_shapes(u, delta, A, B, C, D, z, delta_bias) -> None:
    if u.dim() != 3:
        raise ValueError(f"u must be [batch, channels, length], got shape {tuple(u.shape)}")
    batch, dim, length = u.shape
    if A.dim() != 2 or A.shape[0] != dim:
        raise ValueError(f"A must be [{dim}, d_state], got shape {tuple(A.shape)}")
    expected = {
        "delta": (delta, (batch, dim, length)),
        "B": (B, (batch, A.shape[1], length)),
        "C": (C, (batch, A.shape[1], length)),
        "D": (D, (dim,)),
        "z": (z, (batch, dim, length)),
        "delta_bias": (delta_bias, (dim,)),
    }
    for name, (t, shape) in expected.items():
        if t is not None and tuple(t.shape) != shape:
            raise ValueError(f"{name} must have shape {shape}, got {tuple(t.shape)}")


def _compute_dtype(u: Tensor) -> torch.dtype:
    return torch.promote_types(u.dtype, torch.float32)


def _autocast_off(t: Tensor) -> contextlib.AbstractContextManager:
    """Suspend autocast around the scan: its matmuls would otherwise drop to half precision."""
    kind = t.device.type
    if kind in ("cpu", "cuda", "xpu", "mps") and torch.is_autocast_enabled(kind):
        return torch.autocast(kind, enabled=False)
    return contextlib.nullcontext()


def _discretise(delta: Tensor, delta_bias: Tensor | None, delta_softplus: bool) -> Tensor:
    """The step size ``dt [B, D, L]`` from the raw ``delta``."""
    if delta_bias is not None:
        delta = delta + delta_bias[:, None]
    if delta_softplus:
        delta = F.softplus(delta, threshold=_SOFTPLUS_THRESHOLD)
    return delta


def _finish(y: Tensor, u: Tensor, D: Tensor | None, z: Tensor | None) -> Tensor:
    """``(y + D u) * silu(z)``, all ``[B, D, L]``."""
    if D is not None:
        y = y + D[:, None] * u
    if z is not None:
        y = y * F.silu(z)
    return y


# --------------------------------------------------------------------------------------------------- ref


def _scan_ref(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse) -> Tensor:
    out_dtype = u.dtype
    cd = _compute_dtype(u)
    u, delta, A, B, C = (t.to(cd) for t in (u, delta, A, B, C))
    D, z, delta_bias = (None if t is None else t.to(cd) for t in (D, z, delta_bias))

    dt = _discretise(delta, delta_bias, delta_softplus)  # [B, D, L]
    decay = torch.exp(dt[..., None] * A[:, None, :])  # [B, D, L, N]
    drive = (dt * u)[..., None] * B.transpose(1, 2)[:, None]  # [B, D, L, N]
    Ct = C.transpose(1, 2)  # [B, L, N]
    length = u.shape[-1]
    h = u.new_zeros(u.shape[0], u.shape[1], A.shape[1])  # [B, D, N]
    ys: list[Tensor] = [u] * length  # placeholders, all overwritten
    for t in range(length - 1, -1, -1) if reverse else range(length):
        h = decay[:, :, t] * h + drive[:, :, t]
        ys[t] = (h * Ct[:, None, t]).sum(-1)  # [B, D]
    y = torch.stack(ys, dim=-1)
    return _finish(y, u, D, z).to(out_dtype)


# ----------------------------------------------------------------------------------------------- chunked
#
# Layout: a [B, X, L] tensor is padded to chunks * T positions and viewed as [T, B, chunks, X], so position j
# of every chunk is one contiguous slab. The state exists one position at a time, a [B, chunks, D, N] slab;
# the contractions over D and N are batched matmuls over (B, chunks). The forward pass keeps the T decay
# slabs for its third pass (one [B, D, L, N] worth, freed on return); the backward builds two such buffers
# (decays and states) and frees them before returning.


def _default_chunk(length: int) -> int:
    # About 2 T + L / T steps in all: sqrt(L) keeps both loops short and each step's slab cache-sized.
    return max(1, min(length, math.ceil(math.sqrt(length))))


class _Chunking:
    """Index bookkeeping for one sequence length, chunk size and direction."""

    def __init__(self, length: int, chunk_size: int | None, reverse: bool):
        self.length = length
        self.T = _default_chunk(length) if chunk_size is None else min(chunk_size, length)
        self.chunks = -(-length // self.T)
        self.pad = self.chunks * self.T - length
        self.reverse = reverse
        # Scan order of the positions inside a chunk and of the chunks themselves.
        self.positions = list(range(self.T - 1, -1, -1) if reverse else range(self.T))
        self.chunk_order = list(range(self.chunks - 1, -1, -1) if reverse else range(self.chunks))

    def split(self, x: Tensor) -> Tensor:
        """``[B, X, L]`` -> ``[T, B, chunks, X]``; the padding (zeros) goes where the scan ends."""
        if self.pad:
            x = F.pad(x, (self.pad, 0) if self.reverse else (0, self.pad))
        return x.unflatten(-1, (self.chunks, self.T)).permute(3, 0, 2, 1).contiguous()

    def merge(self, x: Tensor) -> Tensor:
        """``[T, B, chunks, X]`` -> ``[B, X, L]``."""
        x = x.permute(1, 3, 2, 0).flatten(-2)
        if self.pad:
            x = x[..., self.pad :] if self.reverse else x[..., : self.length]
        return x


def _decay(dt: Tensor, A: Tensor) -> Tensor:
    """``exp(dt * A)``: ``dt [B, chunks, D]``, ``A [D, N]`` -> ``[B, chunks, D, N]``, all in (0, 1]."""
    return (dt[..., None] * A).exp_()


def _outer(x: Tensor, s: Tensor) -> Tensor:
    """``x [B, chunks, D]`` times ``s [B, chunks, N]`` -> ``[B, chunks, D, N]``."""
    return x[..., None] * s[..., None, :]


def _entry_states(
    decay_at, chunk_decay: Tensor, drive_at, positions: list[int], chunk_order: list[int]
) -> Tensor:
    """The state entering each chunk, ``[B, chunks, D, N]``, for ``h = decay_at(j) * h + drive_at(j)``.

    Pass 1 runs every chunk from a zero state (all chunks at once, one step per position); pass 2 carries the
    exit states across chunk boundaries with each chunk's total decay ``chunk_decay [B, chunks, D, N]``.
    """
    h = drive_at(positions[0])
    for j in positions[1:]:
        h = torch.addcmul(drive_at(j), decay_at(j), h)
    state = torch.zeros_like(h[:, 0])
    entry: list[Tensor] = [state] * h.shape[1]
    for c in chunk_order:
        entry[c] = state
        state = torch.addcmul(h[:, c], chunk_decay[:, c], state)
    return torch.stack(entry, dim=1)


def _chunked_forward(
    u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse, chunk_size
) -> tuple[Tensor, Tensor]:
    """``(y, entry states)``; the entry states ``[B, chunks, D, N]`` spare the backward pass 1 and 2."""
    out_dtype = u.dtype
    cd = _compute_dtype(u)
    u, delta, A, B, C = (t.to(cd) for t in (u, delta, A, B, C))
    D, z, delta_bias = (None if t is None else t.to(cd) for t in (D, z, delta_bias))
    ch = _Chunking(u.shape[-1], chunk_size, reverse)
    dt = _discretise(delta, delta_bias, delta_softplus)
    dt_c, dtu_c = ch.split(dt), ch.split(dt * u)  # [T, B, chunks, D]
    B_c, C_c = ch.split(B), ch.split(C)  # [T, B, chunks, N]
    decays = [_decay(dt_c[j], A) for j in range(ch.T)]  # kept for pass 3

    def drive_at(j):
        return _outer(dtu_c[j], B_c[j])

    h = entry = _entry_states(
        decays.__getitem__, _decay(dt_c.sum(0), A), drive_at, ch.positions, ch.chunk_order
    )
    ys: list[Tensor] = [dt_c[0]] * ch.T
    for j in ch.positions:  # pass 3: rerun the positions from the carried-in states
        h = torch.addcmul(drive_at(j), decays[j], h)
        ys[j] = (h @ C_c[j][..., None]).squeeze(-1)  # [B, chunks, D]
    y = ch.merge(torch.stack(ys))
    return _finish(y, u, D, z).to(out_dtype), entry


def _shift(x: Tensor, towards_end: bool) -> Tensor:
    """``x [B, D, L]`` moved one step along ``L``, zero-filled: ``x_{t-1}`` (towards_end) or ``x_{t+1}``."""
    return F.pad(x[..., :-1], (1, 0)) if towards_end else F.pad(x[..., 1:], (0, 1))


class _ChunkedScan(torch.autograd.Function):
    """The chunked scan with a hand-written backward. It keeps the inputs and the small chunk-entry states,
    recomputes the states and decays into two ``[T, B, chunks, D, N]`` buffers, and runs the adjoint scan
    against the scan's direction.

    With ``h_t = a_t h_prev + b_t`` (``a_t = exp(dt_t A)``, ``b_t = dt_t u_t B_t``) and ``g_t = dL/dy_t``,
    the adjoint is ``lam_t = C_t g_t + a_next lam_next`` (``next`` one step further in the scan's direction),
    and ``dL/d(dt_t A) = lam_t a_t h_prev``, ``dL/db_t = lam_t``.
    """

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse, chunk_size):
        y, entry = _chunked_forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse, chunk_size)
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, entry)
        ctx.options = (delta_softplus, reverse, chunk_size)
        return y

    @staticmethod
    def backward(ctx, grad_out):
        with _autocast_off(grad_out):
            return _ChunkedScan._backward(ctx, grad_out)

    @staticmethod
    def _backward(ctx, grad_out):
        u0, delta0, A0, B0, C0, D0, z0, bias0, h_entry = ctx.saved_tensors
        delta_softplus, reverse, chunk_size = ctx.options
        cd = _compute_dtype(u0)
        u, delta, A, B, C = (t.to(cd) for t in (u0, delta0, A0, B0, C0))
        D, z, bias = (None if t is None else t.to(cd) for t in (D0, z0, bias0))
        g = grad_out.to(cd)  # becomes dL/d(scan output) below
        ch = _Chunking(u.shape[-1], chunk_size, reverse)

        pre = delta if bias is None else delta + bias[:, None]  # the softplus input
        dt = F.softplus(pre, threshold=_SOFTPLUS_THRESHOLD) if delta_softplus else pre
        grad_z = None
        if z is not None:
            sig = torch.sigmoid(z)
            g_gate, g = g, g * (z * sig)
        dt_c, dtu_c, g_c = ch.split(dt), ch.split(dt * u), ch.split(g)  # [T, B, chunks, D]
        B_c, C_c = ch.split(B), ch.split(C)  # [T, B, chunks, N]

        # Recompute decays and states from the saved entry states; dL/dC needs nothing else.
        decays = h_entry.new_empty((ch.T, *h_entry.shape))  # [T, B, chunks, D, N]
        states = torch.empty_like(decays)
        grad_C_c = torch.empty_like(C_c)
        ys: list[Tensor] = [dt_c[0]] * ch.T
        h = h_entry
        for j in ch.positions:
            a = torch.mul(dt_c[j][..., None], A, out=decays[j]).exp_()
            h = torch.addcmul(_outer(dtu_c[j], B_c[j]), a, h, out=states[j])
            torch.matmul(g_c[j][..., None, :], h, out=grad_C_c[j].unsqueeze(-2))
            if z is not None:
                ys[j] = (h @ C_c[j][..., None]).squeeze(-1)
        if z is not None:
            y = _finish(ch.merge(torch.stack(ys)), u, D, None)
            grad_z = g_gate * y * sig * (1 + z * (1 - sig))  # d silu(z)/dz = sig (1 + z (1 - sig))

        # The adjoint runs the other way; at t it applies the decay the scan applied one step later: the next
        # position's, or, at a chunk's last position, the first position's of the next chunk.
        first, last = ch.positions[0], ch.positions[-1]
        step = -1 if reverse else 1
        ones = torch.ones_like(decays[first][:, :1])
        if reverse:
            boundary = torch.cat((ones, decays[first][:, :-1]), dim=1)
        else:
            boundary = torch.cat((decays[first][:, 1:], ones), dim=1)

        def decay_next_at(j):
            return boundary if j == last else decays[j + step]

        def adjoint_drive_at(j):
            return _outer(g_c[j], C_c[j])

        adjoint_positions = ch.positions[::-1]
        adjoint_chunk_decay = _decay(ch.split(_shift(dt, towards_end=reverse)).sum(0), A)
        lam = _entry_states(
            decay_next_at, adjoint_chunk_decay, adjoint_drive_at, adjoint_positions, ch.chunk_order[::-1]
        )
        grad_dt_c = torch.empty_like(dt_c)
        lam_b_c = torch.empty_like(dt_c)
        grad_B_c = torch.empty_like(B_c)
        grad_A_parts = torch.zeros_like(h_entry)  # sum over positions of dL/d(dt A) * dt, [B, chunks, D, N]
        for j in adjoint_positions:
            lam = torch.addcmul(adjoint_drive_at(j), decay_next_at(j), lam)
            h_prev = h_entry if j == first else states[j - step]
            grad_log_decay = (lam * decays[j]).mul_(h_prev)  # [B, chunks, D, N]
            grad_A_parts.addcmul_(grad_log_decay, dt_c[j][..., None])
            torch.sum(grad_log_decay.mul_(A), -1, out=grad_dt_c[j])
            torch.matmul(lam, B_c[j][..., None], out=lam_b_c[j].unsqueeze(-1))
            torch.matmul(dtu_c[j][..., None, :], lam, out=grad_B_c[j].unsqueeze(-2))
        states = decays = None  # free the two big buffers
        lam_b = ch.merge(lam_b_c)
        grad_dt = ch.merge(grad_dt_c) + u * lam_b
        grad_u = dt * lam_b
        grad_D = None
        if D is not None:
            grad_u = grad_u + g * D[:, None]
            grad_D = (g * u).sum((0, 2))
        if delta_softplus:
            grad_pre = torch.where(pre > _SOFTPLUS_THRESHOLD, grad_dt, grad_dt * torch.sigmoid(pre))
        else:
            grad_pre = grad_dt
        grad_bias = None if bias is None else grad_pre.sum((0, 2))

        def cast(grad, like):
            return None if grad is None else grad.to(like.dtype)

        return (
            cast(grad_u, u0),
            cast(grad_pre, delta0),
            cast(grad_A_parts.sum((0, 1)), A0),
            cast(ch.merge(grad_B_c), B0),
            cast(ch.merge(grad_C_c), C0),
            cast(grad_D, D0),
            cast(grad_z, z0),
            cast(grad_bias, bias0),
            None,
            None,
            None,
        )


# -------------------------------------------------------------------------------------------------- cuda


def _scan_cuda(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse) -> Tensor:
    """mamba_ssm's fused kernel (untested here: needs a GPU and a CUDA build of mamba_ssm)."""
    if _mamba_selective_scan_fn is None:
        raise RuntimeError("selective_scan impl='cuda' needs mamba_ssm, which is not installed")
    if not u.is_cuda:
        raise RuntimeError(f"selective_scan impl='cuda' needs CUDA tensors, got device {u.device}")

    def flip(t):
        return t.flip(-1) if (reverse and t is not None) else t

    y = _mamba_selective_scan_fn(
        flip(u).contiguous(),
        flip(delta).contiguous(),
        A.float(),
        flip(B).contiguous(),
        flip(C).contiguous(),
        None if D is None else D.float(),
        z=None if z is None else flip(z).contiguous(),
        delta_bias=None if delta_bias is None else delta_bias.float(),
        delta_softplus=delta_softplus,
    )
    return flip(y)
