"""Image transforms for University-1652 pairs: PIL images in, normalised float tensors out.

``build_transforms(img_size, mean, std, kind, train)`` returns ``(drone_tf, satellite_tf)``:

- ``kind="traditional"`` (the paper's, after Sample4Geo): JPEG re-compression, resize, colour jitter, blur or
  sharpen, coarse/grid dropout; the satellite branch also gets a random 90-degree rotation (an orthophoto has
  no preferred "up" for the encoder to learn; the drone view is taken as it comes).
- ``kind="augmix"`` (ablation): resize then torchvision's AugMix, the same on both branches.
- ``train=False``: resize and normalise only.

Horizontal flip is deliberately *not* in the per-branch transforms: a flipped drone view matches only the
flipped satellite tile, so the pair is flipped together by ``JointHorizontalFlip`` in the dataset.

``mixup_batch`` mixes whole pairs inside a batch and returns the soft target matrix the losses take.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn
from torchvision.transforms import v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
KINDS = ("traditional", "augmix")


class JpegRecompress(nn.Module):
    """With probability ``p``, re-encode a PIL image as JPEG at a quality uniform in ``quality`` (inclusive).

    PIL rather than ``v2.JPEG``: torchvision's image encoders are deprecated from 0.29 on."""

    def __init__(self, quality: tuple[int, int] = (90, 100), p: float = 0.5):
        super().__init__()
        self.quality, self.p = quality, p

    def forward(self, img: Image.Image) -> Image.Image:
        if float(torch.rand(())) >= self.p:
            return img
        buf = io.BytesIO()
        img.convert("RGB").save(
            buf, format="JPEG", quality=int(torch.randint(self.quality[0], self.quality[1] + 1, ()))
        )
        buf.seek(0)
        with Image.open(buf) as out:
            return out.convert("RGB")


class RandomRot90(nn.Module):
    """Rotate a [..., H, W] image by k * 90 degrees, k uniform in {0, 1, 2, 3}."""

    def forward(self, img: Tensor) -> Tensor:
        k = int(torch.randint(0, 4, ()))
        return torch.rot90(img, k, dims=(-2, -1)) if k else img


class CoarseDropout(nn.Module):
    """Zero ``n`` random rectangles (n uniform in [min_holes, max_holes]), each side a uniform fraction in
    ``[min_frac, max_frac]`` of the image side. Applied after normalisation: 0 is the dataset mean colour."""

    def __init__(
        self, min_holes: int = 10, max_holes: int = 25, min_frac: float = 0.1, max_frac: float = 0.2
    ):
        super().__init__()
        self.min_holes, self.max_holes = min_holes, max_holes
        self.min_frac, self.max_frac = min_frac, max_frac

    def forward(self, img: Tensor) -> Tensor:
        h, w = img.shape[-2:]
        out = img.clone()
        n = int(torch.randint(self.min_holes, self.max_holes + 1, ()))
        fracs = torch.empty(n, 2).uniform_(self.min_frac, self.max_frac)
        corners = torch.rand(n, 2)
        for (fh, fw), (cy, cx) in zip(fracs.tolist(), corners.tolist(), strict=True):
            hh, ww = max(1, round(fh * h)), max(1, round(fw * w))
            y, x = int(cy * (h - hh + 1)), int(cx * (w - ww + 1))
            out[..., y : y + hh, x : x + ww] = 0
        return out


class GridDropout(nn.Module):
    """Zero a regular grid of squares: cell side uniform in [side/10, side/4], a ``ratio`` of each cell's side
    dropped, the grid shifted by a random offset."""

    def __init__(self, ratio: float = 0.4):
        super().__init__()
        self.ratio = ratio

    def forward(self, img: Tensor) -> Tensor:
        h, w = img.shape[-2:]
        side = min(h, w)
        cell = int(torch.randint(max(2, side // 10), max(3, side // 4) + 1, ()))
        hole = max(1, round(cell * self.ratio))
        oy, ox = (int(v) for v in torch.randint(0, cell, (2,)))
        keep_y = ((torch.arange(h) + oy) % cell) >= hole  # [H]
        keep_x = ((torch.arange(w) + ox) % cell) >= hole  # [W]
        keep = (keep_y[:, None] | keep_x[None, :]).to(img.dtype)  # [H, W]
        return img * keep


class JointHorizontalFlip:
    """Flip a (drone, satellite) PIL pair left-right together with probability ``p``.

    The decision comes from the caller's ``rng`` so the dataset can make it reproducible per item and epoch.
    """

    def __init__(self, p: float = 0.5):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"flip probability must be in [0, 1], got {p}")
        self.p = p

    def __call__(
        self, drone: Image.Image, sat: Image.Image, rng: np.random.Generator
    ) -> tuple[Image.Image, Image.Image]:
        if self.p > 0 and rng.random() < self.p:
            flip = Image.Transpose.FLIP_LEFT_RIGHT
            return drone.transpose(flip), sat.transpose(flip)
        return drone, sat


def _size(img_size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(img_size, int):
        return img_size, img_size
    h, w = img_size
    return int(h), int(w)


def build_transforms(
    img_size: int | Sequence[int],
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    kind: str = "traditional",
    train: bool = True,
    interpolation: str = "bicubic",
) -> tuple[Callable[[Image.Image], Tensor], Callable[[Image.Image], Tensor]]:
    """``(drone_tf, satellite_tf)``: PIL RGB image -> float tensor [3, H, W], normalised with mean/std.

    ``img_size`` is a side (square) or ``(H, W)``. Random draws use torch's global generator, which the
    DataLoader seeds per worker. ``interpolation`` is the model's (``VimConfig.interpolation``, recorded in
    the exported manifest); evaluation resizes the PIL image with it, as the onboard preprocessing does.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown augmentation kind {kind!r} (known: {', '.join(KINDS)})")
    size = _size(img_size)
    modes = {"bicubic": v2.InterpolationMode.BICUBIC, "bilinear": v2.InterpolationMode.BILINEAR}
    if interpolation not in modes:
        raise ValueError(f"unknown interpolation {interpolation!r} (known: {', '.join(modes)})")
    resize = v2.Resize(size, interpolation=modes[interpolation], antialias=True)
    to_float = [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]

    if not train:  # PIL resize first: the same filter as the Rust preprocessing (a PIL port)
        tf = v2.Compose([resize, v2.ToImage(), *to_float])
        return tf, tf

    if kind == "augmix":
        tf = v2.Compose([resize, v2.ToImage(), v2.AugMix(), *to_float])
        return tf, tf

    def traditional(rotate: bool) -> v2.Compose:
        return v2.Compose(
            [
                JpegRecompress((90, 100), p=0.5),  # on the PIL image, before anything resamples it
                v2.ToImage(),  # uint8 [3, H, W]
                *([RandomRot90()] if rotate else []),  # before resize so a non-square target stays exact
                resize,
                v2.RandomApply([v2.ColorJitter(0.15, 0.15, 0.15, 0.15)], p=0.5),
                v2.RandomApply(
                    [
                        v2.RandomChoice(
                            [v2.GaussianBlur(7, sigma=(0.1, 2.0)), v2.RandomAdjustSharpness(2.0, p=1.0)]
                        )
                    ],
                    p=0.3,
                ),
                *to_float,
                v2.RandomApply([v2.RandomChoice([GridDropout(0.4), CoarseDropout()])], p=0.3),
            ]
        )

    return traditional(rotate=False), traditional(rotate=True)


def mixup_batch(
    drone: Tensor, sat: Tensor, alpha: float, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """MixUp of whole pairs: ``(drone_m, sat_m, targets[B, B])``.

    One ``lam ~ Beta(alpha, alpha)`` per batch, folded to ``max(lam, 1 - lam)`` so each mixed item stays
    dominated by its own building, and one permutation ``p`` of the batch. Both branches are mixed with the
    SAME ``lam`` and partner, so mixed drone i and mixed satellite i still show the same blend of buildings:

        drone_m[i] = lam * drone[i] + (1 - lam) * drone[p[i]]      (likewise sat_m)

    Item i's content is ``A[i] = lam * e_i + (1 - lam) * e_p[i]`` over buildings; the target for
    (drone_m i, sat_m j) is their shared content ``T = A @ A.T``. ``A``'s rows and columns sum to 1, so ``T``
    is symmetric with rows and columns summing to 1 (identity when lam = 1; fixed points of ``p`` keep an
    identity row). ``alpha <= 0`` returns the inputs and the identity.
    """
    if drone.shape[0] != sat.shape[0]:
        raise ValueError(f"drone and satellite batches differ in size: {drone.shape[0]} vs {sat.shape[0]}")
    b = drone.shape[0]
    eye = torch.eye(b, device=drone.device)
    if alpha <= 0:
        return drone, sat, eye
    # torch has no generator-aware Beta sampler: draw a seed from the (given or global) torch generator.
    seed = int(torch.randint(0, 2**62, (), generator=generator))
    lam = float(np.random.default_rng(seed).beta(alpha, alpha))
    lam = max(lam, 1.0 - lam)
    perm = torch.randperm(b, generator=generator).to(drone.device)
    drone_m = lam * drone + (1 - lam) * drone[perm]
    sat_m = lam * sat + (1 - lam) * sat[perm]
    mix = lam * eye + (1 - lam) * eye[perm]  # [B, B] row i = content of item i
    return drone_m, sat_m, mix @ mix.T
