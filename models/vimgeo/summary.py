"""Parameter count and compute of a VimGeo encoder.

Run as ``python -m vimgeo.summary --config small --img-size 384``.

Counting conventions:

- Parameters: every parameter of the ``VimGeo`` model (shared weights: one backbone, no classification
  head). Vim-S is "26 M" in the Vim and VimGeo papers; that figure includes the 1000-class ImageNet head
  (384 * 1000 + 1000 = 385,000). Without it Vim-S at 224 px has 25,411,584 parameters. At 384 px the
  position embedding grows from 197 to 577 tokens (+380 * 384 = 145,920): 25,557,504. Vim-Ti: 6,955,008 at
  224 px, 7,027,968 at 384 px.
- FLOPs: one image through one branch. Matrix multiplies and convolutions are counted by
  ``torch.utils.flop_counter.FlopCounterMode``, which counts a multiply-accumulate as 2 FLOPs. The selective
  scan is counted analytically (FlopCounterMode sees only matmuls): per batch, channel and token, 7 FLOPs per
  state entry (dt * A, exp, dt u * B, the decay multiply-add, the C read-out multiply-add) plus 7 (bias,
  softplus, dt * u, D skip multiply-add, silu gate and its multiply). Norms, activations outside the scan
  and residual adds are not counted. Papers that use fvcore (Vim, VMamba) report multiply-accumulates
  under the name "FLOPs": compare those with the GMACs line (FLOPs / 2).
"""

from __future__ import annotations

import argparse
from typing import NamedTuple
from unittest import mock

import torch
from torch.utils.flop_counter import FlopCounterMode

from vimgeo import model as model_module
from vimgeo.model import CONFIGS, Vim, VimGeo, get_config

__all__ = ["FlopCount", "count_flops", "count_parameters", "scan_flops"]

_FLOPS_PER_STATE = 7  # per (batch, channel, token, state entry)
_FLOPS_PER_CHANNEL = 7  # per (batch, channel, token)


class FlopCount(NamedTuple):
    matmul_conv: int  # counted by FlopCounterMode (2 per multiply-accumulate)
    scan: int  # selective scans, counted analytically
    total: int


def count_parameters(model: torch.nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (all of them, or only those with ``requires_grad``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def scan_flops(batch: int, channels: int, length: int, d_state: int) -> int:
    """FLOPs of one selective scan by the convention in the module docstring."""
    return batch * channels * length * (_FLOPS_PER_STATE * d_state + _FLOPS_PER_CHANNEL)


def count_flops(model: Vim | VimGeo, img_size: int | None = None) -> FlopCount:
    """FLOPs to embed one image (one branch of a ``VimGeo``), on the model's device (``meta`` works).

    ``img_size`` must be the size the model was built for (its position embedding is fixed); ``None``
    takes it from the model's config.
    """
    cfg = model.config
    img_size = cfg.img_size if img_size is None else img_size
    param = next(model.parameters())
    x = torch.zeros(1, cfg.in_chans, img_size, img_size, device=param.device, dtype=param.dtype)
    scans: list[int] = []

    def counted_scan(u, delta, A, B, C, *args, **kwargs):
        scans.append(scan_flops(u.shape[0], u.shape[1], u.shape[2], A.shape[1]))
        return torch.zeros_like(u)

    encode = model.encode if isinstance(model, VimGeo) else model.forward_features
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), mock.patch.object(model_module, "selective_scan", counted_scan), counter:
        encode(x)
    matmul_conv = counter.get_total_flops()
    return FlopCount(matmul_conv, sum(scans), matmul_conv + sum(scans))


def time_training_step(cfg, batch_size: int, steps: int, share_weights: bool = True) -> list[float]:
    """Seconds per optimiser step (forward + backward + AdamW) of VimGeo with the paper's loss, on the CPU.

    One untimed warm-up step first; random images, ``batch_size`` pairs (drone + satellite) per step.
    """
    import time

    from vimgeo.losses import VimGeoLoss

    torch.manual_seed(0)
    model = VimGeo(cfg, share_weights=share_weights).train()
    loss_fn = VimGeoLoss({"infonce": 1.0, "dice": 1.0, "kl": 1.0})
    opt = torch.optim.AdamW([*model.parameters(), *loss_fn.parameters()], lr=1e-4)
    drone = torch.randn(batch_size, 3, cfg.img_size, cfg.img_size)
    sat = torch.randn(batch_size, 3, cfg.img_size, cfg.img_size)
    times = []
    for i in range(steps + 1):
        t0 = time.perf_counter()
        loss, _ = loss_fn(*model(drone, sat))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i:
            times.append(time.perf_counter() - t0)
    return times


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m vimgeo.summary", description="Parameter count and FLOPs of a VimGeo encoder."
    )
    ap.add_argument("--config", required=True, choices=sorted(CONFIGS), help="named Vim config")
    ap.add_argument("--img-size", type=int, default=None, help="input side in pixels (default: config's)")
    ap.add_argument("--proj-dim", type=int, default=None, help="projection to this embedding width")
    ap.add_argument("--separate-weights", action="store_true", help="one backbone per branch")
    ap.add_argument(
        "--time-steps",
        type=int,
        default=0,
        metavar="N",
        help="also time N CPU training steps (after a warm-up)",
    )
    ap.add_argument("--batch-size", type=int, default=2, help="pairs per timed training step")
    args = ap.parse_args(argv)

    overrides = {} if args.img_size is None else {"img_size": args.img_size}
    cfg = get_config(args.config, **overrides)
    with torch.device("meta"):  # shapes only: nothing is allocated or initialised for real
        model = VimGeo(cfg, share_weights=not args.separate_weights, proj_dim=args.proj_dim)
    n_params = count_parameters(model)
    flops = count_flops(model)
    print(f"config        {args.config} (embed {cfg.embed_dim}, depth {cfg.depth}, patch {cfg.patch_size})")
    print(f"image         {cfg.img_size} px, {cfg.num_patches} patches + class token at {cfg.token_position}")
    print(f"parameters    {n_params / 1e6:.2f} M ({n_params:,}; no classification head)")
    print(f"GFLOPs        {flops.total / 1e9:.3f} per image (multiply-accumulate = 2 FLOPs)")
    print(f"  matmul/conv {flops.matmul_conv / 1e9:.3f} (FlopCounterMode)")
    print(f"  scan        {flops.scan / 1e9:.3f} (analytic: {_FLOPS_PER_STATE} per state entry, ", end="")
    print(f"{_FLOPS_PER_CHANNEL} per channel and token)")
    print(f"GMACs         {flops.total / 2e9:.3f} per image (= GFLOPs / 2; fvcore-style 'FLOPs' in papers)")
    print(f"embedding     {model.embedding_dim} dims, L2-normalised")
    if args.time_steps > 0:
        times = sorted(time_training_step(cfg, args.batch_size, args.time_steps, not args.separate_weights))
        median = times[len(times) // 2]
        print(
            f"train step    median {median:.2f} s, min {times[0]:.2f} s over {len(times)} steps "
            f"(batch {args.batch_size} pairs, CPU, {torch.get_num_threads()} threads, scan '{cfg.scan_impl}')"
        )


if __name__ == "__main__":
    main()
