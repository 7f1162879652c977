"""Classical baselines for the demo model: zero-mean normalised cross-correlation (NCC) with a shift search,
and ORB keypoints matched with RANSAC (``orb_similarity_paths``, below), as keypoint-based UAV localizers do.

What it does, per query (a rectified, north-up drone view) and gallery tile (a north-up orthophoto tile of the
same ground size), both converted to grayscale and downsampled to ``size`` px (area filter):

1. take the query's central ``template`` x ``template`` window (``template = size * template_frac``);
2. slide it over the tile at every offset within ``max_shift * size`` px of the tile centre, in steps of
   ``step`` px; at each offset compute the NCC (both windows made zero-mean and unit-norm, then the dot
   product: 1 = identical up to gain and offset, 0 = unrelated);
3. the tile's score is the best NCC over the offsets; tiles are ranked by it.

Why these defaults (``size`` 64, ``template_frac`` 0.5, ``max_shift`` 0.25): a query's true ground centre
lies in its tile's central stride square (stride = half a tile), i.e. within a quarter tile of the tile
centre along each axis, which is exactly the region where that tile is the nearest one. Searching offsets of
up to a quarter tile therefore finds the query inside its own tile whatever its offset, and a half-tile
template stays inside the tile at every such offset. ``max_shift=0, template_frac=1`` is plain whole-image
NCC.

Fair to say: NCC is invariant to brightness gain and offset (the pair generator's photometric changes) and
the shift search undoes the view's offset, but it has no rotation or scale search, so heading and height
errors of the rectification (σ 3° heading, ±10 % height in the generator) and seasonal or lighting changes
that are not affine in intensity hurt it; on a forest canopy, texture repeats and a half-tile template at
64 px (about 10 m of ground for a 19.2 m tile) is not always distinctive. It needs no training; its cost
per query is O(G · shifts · template²), so it is an offline yardstick, not a candidate for the onboard
matcher (the learned embedding is one dot product per tile).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

_EPS = 1e-8


@dataclass(frozen=True)
class NccConfig:
    size: int = 64  # grayscale side in pixels both images are downsampled to
    template_frac: float = 0.5  # side of the query's central template, as a fraction of ``size``
    max_shift: float = 0.25  # largest offset searched from the tile centre, fraction of ``size`` (0: none)
    step: int = 2  # offset step in pixels (at ``size``)
    query_chunk: int = 64  # queries scored at once (bounds memory: chunk x G x offsets floats)

    def __post_init__(self):
        if self.size < 4:
            raise ValueError(f"NCC size must be >= 4 px, got {self.size}")
        if not 0 < self.template_frac <= 1:
            raise ValueError(f"NCC template_frac must be in (0, 1], got {self.template_frac}")
        if self.max_shift < 0 or self.step < 1 or self.query_chunk < 1:
            raise ValueError("NCC max_shift must be >= 0, step and query_chunk >= 1")

    @property
    def template(self) -> int:
        return max(2, round(self.size * self.template_frac))

    @property
    def shift_px(self) -> int:
        """Largest searched offset in pixels, limited so the template window stays inside the tile."""
        room = (self.size - self.template) // 2
        return min(room, round(self.max_shift * self.size))

    def describe(self) -> dict[str, Any]:
        n = 2 * (self.shift_px // self.step) + 1
        return {
            "name": "zero-mean normalised cross-correlation, grayscale",
            **asdict(self),
            "template_px": self.template,
            "shift_px": self.shift_px,
            "offsets": n * n,
        }


def load_gray(paths: Sequence[str | Path], size: int) -> Tensor:
    """``[N, size, size]`` float32 grayscale images in [0, 1], downsampled with an area (box) filter."""
    out = np.empty((len(paths), size, size), dtype=np.float32)
    for i, path in enumerate(paths):
        with Image.open(path) as img:
            gray = img.convert("L")
            if gray.size != (size, size):
                gray = gray.resize((size, size), Image.Resampling.BOX)
            out[i] = np.asarray(gray, dtype=np.float32) / 255.0
    return torch.from_numpy(out)


def _normalise(windows: Tensor, dim: int) -> Tensor:
    """Zero-mean, unit-norm along ``dim`` (a flat window of pixels); a constant window becomes all zeros."""
    centred = windows - windows.mean(dim=dim, keepdim=True)
    return centred / centred.norm(dim=dim, keepdim=True).clamp(min=_EPS)


def ncc_similarity(queries: Tensor, gallery: Tensor, cfg: NccConfig = NccConfig()) -> Tensor:
    """``[Q, G]`` best NCC over the searched offsets, for grayscale ``queries [Q, S, S]`` and
    ``gallery [G, S, S]`` (``S = cfg.size``)."""
    s, t, shift = cfg.size, cfg.template, cfg.shift_px
    if queries.shape[-2:] != (s, s) or gallery.shape[-2:] != (s, s):
        got = f"{tuple(queries.shape)}, {tuple(gallery.shape)}"
        raise ValueError(f"NCC wants [N, {s}, {s}] images, got {got}")
    lo = (s - t) // 2  # template's top-left corner when centred
    templates = queries[:, lo : lo + t, lo : lo + t].reshape(len(queries), t * t)  # [Q, T²]
    templates = _normalise(templates, dim=1)
    region = gallery[:, lo - shift : lo + shift + t, lo - shift : lo + shift + t]  # [G, t+2s, t+2s]
    windows = F.unfold(region[:, None], kernel_size=t, stride=cfg.step)  # [G, T², K] K offsets
    windows = _normalise(windows, dim=1)
    n_g, _, n_k = windows.shape
    flat = windows.permute(1, 0, 2).reshape(t * t, n_g * n_k)  # [T², G*K]
    out = torch.empty(len(queries), n_g)
    for start in range(0, len(queries), cfg.query_chunk):
        scores = templates[start : start + cfg.query_chunk] @ flat  # [C, G*K]
        out[start : start + cfg.query_chunk] = scores.view(-1, n_g, n_k).amax(dim=2)
    return out


def ncc_similarity_paths(
    query_paths: Sequence[str | Path], gallery_paths: Sequence[str | Path], cfg: NccConfig = NccConfig()
) -> Tensor:
    """``ncc_similarity`` of image files (loaded with ``load_gray``)."""
    with torch.inference_mode():
        return ncc_similarity(load_gray(query_paths, cfg.size), load_gray(gallery_paths, cfg.size), cfg)


@dataclass(frozen=True)
class OrbConfig:
    """ORB keypoints + a RANSAC similarity transform: a tile's score is the number of inlier matches.

    Both images are resized to ``size`` px (ORB's FAST corners and 31 px patches need more than the 128 px
    views have), ``features`` keypoints each, matched by Hamming distance with Lowe's ratio test, then
    ``cv2.estimateAffinePartial2D`` (rotation, uniform scale, shift: what heading and height errors of the
    rectification leave) with a ``ransac_px`` reprojection threshold. Ties (few inliers) break on the number
    of ratio-test matches. Needs ``opencv-python-headless`` (models/requirements-eval.txt): an evaluation
    extra, not a dependency of the package.
    """

    size: int = 256
    features: int = 500
    ratio: float = 0.8
    ransac_px: float = 4.0

    def describe(self) -> dict[str, Any]:
        return {"method": "orb-ransac", **asdict(self)}


def orb_similarity_paths(
    query_paths: Sequence[str | Path], gallery_paths: Sequence[str | Path], cfg: OrbConfig = OrbConfig()
) -> Tensor:
    """``[Q, G]`` scores: RANSAC inliers of ORB matches (+ ratio-test matches / 1000 to break ties)."""
    import cv2  # the evaluation extra (see OrbConfig)

    orb = cv2.ORB_create(nfeatures=cfg.features)
    matcher = cv2.BFMatcher(cv2.NORM_HAMMING)

    def features(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
        gray = Image.open(path).convert("L").resize((cfg.size, cfg.size), Image.Resampling.BICUBIC)
        gray = np.asarray(gray)
        keypoints, descriptors = orb.detectAndCompute(gray, None)
        return np.float32([k.pt for k in keypoints]).reshape(-1, 2), descriptors

    gallery = [features(p) for p in gallery_paths]
    out = torch.zeros(len(query_paths), len(gallery), dtype=torch.float32)
    for qi, path in enumerate(query_paths):
        q_pts, q_des = features(path)
        if q_des is None or len(q_des) < 2:
            continue
        for gi, (g_pts, g_des) in enumerate(gallery):
            if g_des is None or len(g_des) < 2:
                continue
            pairs = matcher.knnMatch(q_des, g_des, k=2)
            good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < cfg.ratio * p[1].distance]
            inliers = 0
            if len(good) >= 3:
                src = q_pts[[m.queryIdx for m in good]]
                dst = g_pts[[m.trainIdx for m in good]]
                _, mask = cv2.estimateAffinePartial2D(
                    src, dst, method=cv2.RANSAC, ransacReprojThreshold=cfg.ransac_px
                )
                inliers = int(mask.sum()) if mask is not None else 0
            out[qi, gi] = inliers + len(good) / 1000.0
    return out
