"""Retrieval evaluation on University-1652: metrics, the evaluation loop, a picture of results, and a CLI.

Two protocols, always reported side by side (papers mix them up):

- ``"official"``: the University-1652 evaluator (layumi/University1652-Baseline ``evaluate_gpu.py``): every
  gallery image is ranked, including the 250 distractor buildings that have no query.
- ``"sample4geo"``: Sample4Geo's evaluator: gallery images whose building is not among the queries' are
  marked junk and removed from the ranking before scoring. Numbers are never worse than the official ones.

Metrics (percent): ``R@1``, ``R@5``, ``R@10``, ``R@top1%`` (recall within the first ``round(0.01 * G) + 1``
ranks, see ``retrieval_metrics``) and ``AP`` (the official evaluator's average precision).

CLI::

    python -m vimgeo.evaluate --data ROOT --checkpoint CKPT [--batch-size 64] [--device cuda] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageOps
from torch import Tensor
from torch.utils.data import DataLoader

from vimgeo.atomic import atomic_open, atomic_write_text
from vimgeo.dataset import GalleryFolder
from vimgeo.model import build_model_from_checkpoint
from vimgeo.transforms import IMAGENET_MEAN, IMAGENET_STD, build_transforms

PROTOCOLS = ("official", "sample4geo")
METRIC_KEYS = ("R@1", "R@5", "R@10", "R@top1%", "AP")
# (direction, query folder, query branch, gallery folder, gallery branch)
DIRECTIONS = (
    ("drone->satellite", "query_drone", "drone", "gallery_satellite", "satellite"),
    ("satellite->drone", "query_satellite", "satellite", "gallery_drone", "drone"),
)
_CHUNK_ELEMENTS = 1 << 21  # query rows per scoring chunk = this / gallery size (bounds memory)


def _as_tensor(x: Any, dtype: torch.dtype) -> Tensor:
    return torch.as_tensor(np.asarray(x) if not isinstance(x, Tensor) else x).to("cpu", dtype)


def retrieval_metrics(
    sim: Tensor | np.ndarray,
    query_labels: Sequence[int] | Tensor | np.ndarray,
    gallery_labels: Sequence[int] | Tensor | np.ndarray,
    protocol: str = "official",
) -> dict[str, float]:
    """Recall@k and AP (percent) for a ``[Q, G]`` similarity matrix (higher = more similar).

    ``protocol="official"`` ranks every gallery item; ``"sample4geo"`` first drops gallery items whose label
    is not among ``query_labels``. Galleries are ranked by descending similarity; ties go to the lower
    gallery index (the reference code's argsort leaves ties unspecified).

    For a query with ``n`` positives found at 0-based ranks ``r_0 < r_1 < ... < r_{n-1}`` the official
    ``compute_mAP`` gives

        AP = sum_i (1 / n) * (p_old_i + p_i) / 2,   p_i = (i + 1) / (r_i + 1),
                                                     p_old_i = i / r_i  (1.0 when r_i = 0)

    i.e. the trapezoid between the precision just before and at each hit. ``R@k`` is the fraction of queries
    with a positive in the first k ranks (for k beyond the gallery size, the whole gallery). ``R@top1%``
    follows both reference evaluators exactly: ``CMC[round(0.01 * G)]`` on a 0-based CMC, i.e. recall
    within the first ``round(0.01 * G) + 1`` ranks, with Python's round and ``G`` the full gallery size
    before any junk is dropped (University-1652: G = 951 -> R@11 drone->satellite, G = 51355 -> R@515
    satellite->drone). A query without any positive counts as a miss with AP 0, as in both references
    (they skip it but still divide by the number of queries).
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r} (known: {', '.join(PROTOCOLS)})")
    sim = _as_tensor(sim, torch.float32)
    ql = _as_tensor(query_labels, torch.int64)
    gl = _as_tensor(gallery_labels, torch.int64)
    if sim.ndim != 2 or sim.shape != (len(ql), len(gl)):
        raise ValueError(f"sim must be [Q, G] = [{len(ql)}, {len(gl)}], got {tuple(sim.shape)}")
    n_query, g_full = sim.shape
    ks = {"R@1": 1, "R@5": 5, "R@10": 10, "R@top1%": round(0.01 * g_full) + 1}
    if protocol == "sample4geo":
        keep = torch.isin(gl, ql)
        sim, gl = sim[:, keep], gl[keep]
    n_gallery = sim.shape[1]
    hits = dict.fromkeys(ks, 0)
    ap_sum = 0.0
    if n_query and n_gallery:
        ranks = torch.arange(n_gallery, dtype=torch.float64)  # 0-based rank r
        step = max(1, _CHUNK_ELEMENTS // n_gallery)
        for start in range(0, n_query, step):
            s = sim[start : start + step]  # [C, G]
            order = torch.argsort(-s, dim=1, stable=True)  # [C, G] gallery index at each rank
            good = gl[order] == ql[start : start + step, None]  # [C, G] positive at rank r?
            n_good = good.sum(dim=1)  # [C]
            has_pos = n_good > 0
            first = good.to(torch.int8).argmax(dim=1)  # [C] rank of the first positive (0 if none)
            for name, k in ks.items():
                hits[name] += int((has_pos & (first < k)).sum())
            count = good.cumsum(dim=1).to(torch.float64)  # [C, G] positives within ranks 0..r
            precision = count / (ranks + 1)
            old_precision = torch.where(ranks > 0, (count - 1) / ranks.clamp(min=1), 1.0)
            per_hit = torch.where(good, (old_precision + precision) / 2, 0.0)
            ap_sum += float((per_hit.sum(dim=1) / n_good.clamp(min=1)).sum())
    denom = max(n_query, 1)
    out = {name: 100.0 * hits[name] / denom for name in ks}
    out["AP"] = 100.0 * ap_sum / denom
    return out


@torch.inference_mode()
def embed_folder(
    model: torch.nn.Module,
    folder: Path,
    branch: str,
    tf,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
) -> tuple[Tensor, Tensor, list[Path]]:
    """``(features [N, E] float32 on CPU, labels [N], paths)`` for every image under ``folder/<id>/``."""
    data = GalleryFolder(folder, tf)
    loader = DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    feats = []
    for x, _ in loader:
        feats.append(model.encode(x.to(device, non_blocking=True), branch).float().cpu())
    return torch.cat(feats), torch.tensor(data.labels, dtype=torch.int64), list(data.paths)


def _evaluate(
    model: torch.nn.Module,
    root: str | Path,
    img_size: int | Sequence[int],
    mean: Sequence[float],
    std: Sequence[float],
    batch_size: int,
    device: str | torch.device,
    num_workers: int,
) -> tuple[dict[str, dict[str, dict[str, float]]], dict[str, dict[str, Any]]]:
    """Metrics plus, per direction, what ``retrieval_picture`` needs (sim, labels, paths)."""
    test = Path(root) / "test"
    if not test.is_dir():
        raise FileNotFoundError(f"University-1652 test folder not found: {test}")
    tf, _ = build_transforms(img_size, mean, std, train=False)
    was_training = model.training
    model.eval()
    try:
        cache: dict[str, tuple[Tensor, Tensor, list[Path]]] = {}
        for _, q_name, q_branch, g_name, g_branch in DIRECTIONS:
            for name, branch in ((q_name, q_branch), (g_name, g_branch)):
                if name not in cache:  # each folder is embedded once
                    cache[name] = embed_folder(
                        model, test / name, branch, tf, batch_size, device, num_workers
                    )
    finally:
        model.train(was_training)
    metrics: dict[str, dict[str, dict[str, float]]] = {}
    details: dict[str, dict[str, Any]] = {}
    for direction, q_name, _, g_name, _ in DIRECTIONS:
        qf, ql, qp = cache[q_name]
        gf, gl, gp = cache[g_name]
        sim = qf @ gf.T  # [Q, G]
        metrics[direction] = {p: retrieval_metrics(sim, ql, gl, p) for p in PROTOCOLS}
        details[direction] = {
            "sim": sim,
            "query_labels": ql,
            "gallery_labels": gl,
            "query_paths": qp,
            "gallery_paths": gp,
        }
    return metrics, details


def evaluate(
    model: torch.nn.Module,
    root: str | Path,
    img_size: int | Sequence[int],
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
) -> dict[str, dict[str, dict[str, float]]]:
    """Both directions, both protocols, on ``root/test``.

    Uses ``model.encode(x, branch)`` (L2-normalised embeddings; branch ``"drone"`` or ``"satellite"``) with
    eval transforms; the model is put in eval mode and its mode restored afterwards. Returns
    ``{"drone->satellite": {"official": {...}, "sample4geo": {...}}, "satellite->drone": {...}}``.
    """
    metrics, _ = _evaluate(model, root, img_size, mean, std, batch_size, device, num_workers)
    return metrics


def retrieval_picture(
    query_paths: Sequence[str | Path],
    gallery_paths: Sequence[str | Path],
    sim: Tensor | np.ndarray,
    query_labels: Sequence[int] | Tensor | np.ndarray,
    gallery_labels: Sequence[int] | Tensor | np.ndarray,
    out_png: str | Path,
    k: int = 5,
    n_queries: int = 8,
    thumb: int = 112,
) -> Path:
    """A PNG grid: one row per query (blue frame), then its top-k gallery images over the full gallery,
    framed green when the building matches and red when not, each captioned with its id and similarity.
    Queries are spread evenly over the query list. Written atomically (``vimgeo.atomic``)."""
    sim = _as_tensor(sim, torch.float32)
    ql = _as_tensor(query_labels, torch.int64)
    gl = _as_tensor(gallery_labels, torch.int64)
    n_q, n_g = sim.shape
    if n_q == 0 or n_g == 0:
        raise ValueError("retrieval_picture needs at least one query and one gallery image")
    k = min(k, n_g)
    rows = np.unique(np.linspace(0, n_q - 1, min(n_queries, n_q)).round().astype(int))
    pad, caption, border = 6, 14, 4
    cell_w, cell_h = thumb + 2 * pad, thumb + 2 * pad + caption
    canvas = Image.new("RGB", ((k + 1) * cell_w + pad, len(rows) * cell_h), "white")
    draw = ImageDraw.Draw(canvas)

    def place(path: str | Path, col: int, row: int, colour: str, text: str) -> None:
        with Image.open(path) as img:
            tile = ImageOps.fit(img.convert("RGB"), (thumb - 2 * border, thumb - 2 * border))
        tile = ImageOps.expand(tile, border=border, fill=colour)
        x = col * cell_w + pad + (pad if col else 0)  # a little gap after the query column
        y = row * cell_h + pad
        canvas.paste(tile, (x, y))
        draw.text((x, y + thumb + 1), text, fill="black")

    for row, qi in enumerate(rows):
        place(query_paths[qi], 0, row, "#1f4fd1", f"query {int(ql[qi]):04d}")
        scores, top = torch.topk(sim[qi], k)
        for col, (gi, score) in enumerate(zip(top.tolist(), scores.tolist(), strict=True), start=1):
            ok = int(gl[gi]) == int(ql[qi])
            place(
                gallery_paths[gi], col, row, "#1a9e1a" if ok else "#d11f1f", f"{int(gl[gi]):04d} {score:.2f}"
            )
    out_png = Path(out_png)
    with atomic_open(out_png) as f:
        canvas.save(f, format="PNG")
    return out_png


def format_table(metrics: dict[str, dict[str, dict[str, float]]]) -> str:
    head = f"{'direction':<18} {'protocol':<11}" + "".join(f"{k:>9}" for k in METRIC_KEYS)
    lines = [head, "-" * len(head)]
    for direction, by_protocol in metrics.items():
        for protocol, m in by_protocol.items():
            lines.append(f"{direction:<18} {protocol:<11}" + "".join(f"{m[k]:9.2f}" for k in METRIC_KEYS))
    return "\n".join(lines)


def _preprocessing(ckpt: dict, model: torch.nn.Module, args: argparse.Namespace) -> tuple[Any, list, list]:
    """Input size and normalisation, first found of: the CLI flag, ``model.config``, the model, the
    checkpoint's ``backbone`` dict, its flat training ``config``, ``config["model"]["backbone"]``; mean/std
    fall back to ImageNet's (which the Vim checkpoints use)."""

    def as_dict(value: Any) -> dict:
        return value if isinstance(value, dict) else {}

    cfg = as_dict(ckpt.get("config"))
    sources = [as_dict(ckpt.get("backbone")), cfg, as_dict(as_dict(cfg.get("model")).get("backbone"))]

    def pick(name: str, flag: Any, default: Any) -> Any:
        found = [flag, getattr(getattr(model, "config", None), name, None), getattr(model, name, None)]
        found += [src.get(name) for src in sources]
        return next((v for v in found if v is not None), default)

    img_size = pick("img_size", args.img_size, None)
    if img_size is None:
        raise ValueError("checkpoint says nothing about the input size; pass --img-size")
    return img_size, list(pick("mean", args.mean, IMAGENET_MEAN)), list(pick("std", args.std, IMAGENET_STD))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vimgeo.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="University-1652 root (holds test/)")
    parser.add_argument(
        "--checkpoint", required=True, help="training checkpoint (.pt) with 'config' and 'model'"
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--num-workers", type=int, default=4)
    parser.add_argument("--out", help="output folder (default: <checkpoint folder>/eval)")
    parser.add_argument("--img-size", type=int, help="override the checkpoint's input size")
    parser.add_argument("--mean", type=float, nargs=3, help="override the normalisation mean")
    parser.add_argument("--std", type=float, nargs=3, help="override the normalisation std")
    args = parser.parse_args(argv)

    ckpt_path = Path(args.checkpoint)
    if not ckpt_path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {ckpt_path}")
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    missing = [key for key in ("config", "model") if key not in ckpt]
    if missing:
        raise ValueError(f"{ckpt_path}: not a vimgeo checkpoint, missing key(s) {', '.join(missing)}")
    model = build_model_from_checkpoint(ckpt)
    img_size, mean, std = _preprocessing(ckpt, model, args)
    model.to(args.device)

    metrics, details = _evaluate(
        model, args.data, img_size, mean, std, args.batch_size, args.device, args.num_workers
    )
    print(format_table(metrics))

    out = Path(args.out) if args.out else ckpt_path.parent / "eval"
    report = {
        "checkpoint": str(ckpt_path),
        "data": str(args.data),
        "img_size": img_size,
        "mean": mean,
        "std": std,
        "metrics": metrics,
    }
    atomic_write_text(out / "metrics.json", json.dumps(report, indent=2) + "\n")
    for direction, d in details.items():
        name = "retrieval_" + direction.replace("->", "_to_") + ".png"
        retrieval_picture(
            d["query_paths"], d["gallery_paths"], d["sim"], d["query_labels"], d["gallery_labels"], out / name
        )
    print(f"wrote {out / 'metrics.json'} and retrieval pictures to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
