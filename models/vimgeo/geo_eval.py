"""Geo-localisation evaluation on a pair folder written by ``vimgeo sim pairs`` (issue 7's demo model).

The folder (format: ``samples.csv`` plus University-1652-style ``<split>/satellite/<id>/`` and
``<split>/drone/<id>/``) gives, for a split, a gallery (every satellite tile, with its centre) and queries
(rectified drone views, each filed under the tile whose centre is nearest its true ground centre). A method
turns both into a ``[Q, G]`` similarity matrix; this module scores it:

- ``R@1``, ``R@5``, ``R@10``, ``AP`` (percent; ``vimgeo.evaluate.retrieval_metrics``, official protocol): the
  correct gallery item of a query is the tile named by its folder id, and it is the only one;
- localisation error of a query: the geodesic distance on the WGS84 ellipsoid (Vincenty's inverse formula,
  ``geodesic_distance_m``) from its ``(true_lat, true_lon)`` to the centre ``(tile_lat, tile_lon)`` of its
  top-1 tile: median, mean, p90 and the fraction under one tile stride (half the tile's ground size); also
  the same statistics for the *oracle* (always the correct tile), the floor a tile-centre answer can reach;
- per-orthophoto breakdown of all of the above.

Gallery: ``per-ortho`` (default) ranks each query only against tiles of its own orthophoto, as onboard, where
the tile cache covers the mission area; ``joint`` ranks against every tile of the split.

Methods: a training checkpoint, an untrained model of a config (same architecture, seeded random weights),
or the classical baseline (``vimgeo.baseline``, normalised cross-correlation)::

    python -m vimgeo.geo_eval --pairs DIR --checkpoint runs/vimgeo-demo/final.pt --out demo.json
    python -m vimgeo.geo_eval --pairs DIR --untrained demo --seed 0 --out untrained.json
    python -m vimgeo.geo_eval --pairs DIR --baseline ncc --out ncc.json
    python -m vimgeo.geo_eval --pairs DIR --baseline orb --out orb.json   # needs models/requirements-eval.txt
    python -m vimgeo.geo_eval --markdown demo.json untrained.json ncc.json     # comparison table
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from vimgeo.atomic import atomic_write_text

SAMPLES_FILE = "samples.csv"
SAMPLES_COLUMNS = (
    "split", "kind", "id", "file", "ortho", "tile_lat", "tile_lon", "ground_size_m", "true_lat", "true_lon",
    "vehicle_lat", "vehicle_lon", "height_m", "roll_deg", "pitch_deg", "yaw_deg", "err_roll_deg",
    "err_pitch_deg", "err_yaw_deg", "err_height_frac",
)  # fmt: skip
_NUMERIC = ("tile_lat", "tile_lon", "ground_size_m", "true_lat", "true_lon")
KINDS = ("satellite", "drone")
GALLERY_MODES = ("per-ortho", "joint")
DISTANCE = "geodesic on WGS84 (Vincenty inverse)"
WGS84_A = 6378137.0
WGS84_F = 1 / 298.257223563


class SamplesError(ValueError):
    """``samples.csv`` is missing, or a header or row is malformed; the message names file, line, column."""


@dataclass(frozen=True)
class Sample:
    """One image of the pair folder (one row of ``samples.csv``; only the columns evaluation uses)."""

    split: str  # "train" or "val"
    kind: str  # "satellite" (a gallery tile) or "drone" (a rectified view)
    id: str  # the tile id: the tile itself, or the tile a drone view belongs to
    path: Path  # the image file (absolute: the folder joined with the row's relative ``file``)
    ortho: str  # the orthophoto's stem
    tile_lat: float  # centre of tile ``id``, degrees
    tile_lon: float
    ground_size_m: float  # the tile's ground side in metres
    true_lat: float  # satellite: the tile centre; drone: the true ground point of the image centre
    true_lon: float


def read_samples(root: str | Path) -> list[Sample]:
    """All rows of ``root/samples.csv``. Columns are found by header name (extra columns are ignored); every
    documented column must be there, and the ones evaluation uses must hold what they should."""
    root = Path(root)
    path = root / SAMPLES_FILE
    if not path.is_file():
        raise SamplesError(f"{path}: not found (is {root} a folder written by `vimgeo sim pairs`?)")
    with path.open(newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise SamplesError(f"{path}: empty file, expected the header line")
        header = [h.strip() for h in header]
        for column in SAMPLES_COLUMNS:
            if column not in header:
                raise SamplesError(f"{path}: header lacks column '{column}'")
        index = {name: header.index(name) for name in SAMPLES_COLUMNS}
        samples = []
        for row in reader:
            line = reader.line_num
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise SamplesError(f"{path} line {line}: {len(row)} fields, the header has {len(header)}")

            def cell(column: str, row=row) -> str:
                return row[index[column]].strip()

            values: dict[str, float] = {}
            for column in _NUMERIC:
                try:
                    values[column] = float(cell(column))
                except ValueError:
                    raise SamplesError(
                        f"{path} line {line}: column '{column}' is not a number: {cell(column)!r}"
                    ) from None
                if not math.isfinite(values[column]):
                    raise SamplesError(
                        f"{path} line {line}: column '{column}' is not finite: {cell(column)!r}"
                    )
            if cell("kind") not in KINDS:
                raise SamplesError(
                    f"{path} line {line}: column 'kind' must be one of {KINDS}, got {cell('kind')!r}"
                )
            for column in ("split", "id", "file", "ortho"):
                if not cell(column):
                    raise SamplesError(f"{path} line {line}: column '{column}' is empty")
            samples.append(
                Sample(
                    split=cell("split"),
                    kind=cell("kind"),
                    id=cell("id"),
                    path=root / cell("file"),
                    ortho=cell("ortho"),
                    **values,
                )
            )
    return samples


@dataclass(frozen=True)
class SplitSet:
    """A split's gallery (one tile per id, in id order) and queries (in file order)."""

    gallery: list[Sample]
    queries: list[Sample]

    @property
    def query_labels(self) -> np.ndarray:
        """Index into ``gallery`` of each query's correct tile, ``[Q]``."""
        position = {s.id: i for i, s in enumerate(self.gallery)}
        return np.array([position[q.id] for q in self.queries], dtype=np.int64)


def load_split(root: str | Path, split: str = "val") -> SplitSet:
    """The gallery and queries of ``split``; every image must exist, every query's tile be in the gallery."""
    root = Path(root)
    rows = [s for s in read_samples(root) if s.split == split]
    gallery = sorted((s for s in rows if s.kind == "satellite"), key=lambda s: s.id)
    queries = sorted((s for s in rows if s.kind == "drone"), key=lambda s: str(s.path))
    if not gallery or not queries:
        raise SamplesError(
            f"{root / SAMPLES_FILE}: split '{split}' has {len(gallery)} satellite and {len(queries)} "
            "drone rows; need at least one of each"
        )
    ids = [s.id for s in gallery]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise SamplesError(f"{root / SAMPLES_FILE}: split '{split}' has several satellite rows for {dup}")
    known = set(ids)
    for q in queries:
        if q.id not in known:
            raise SamplesError(f"{q.path}: its tile {q.id} has no satellite row in split '{split}'")
    for s in (*gallery, *queries):
        if not s.path.is_file():
            raise FileNotFoundError(f"{root / SAMPLES_FILE} names {s.path}, which does not exist")
    return SplitSet(gallery, queries)


# ----------------------------------------------------------------------------- distances


def ecef_m(lat_deg, lon_deg) -> np.ndarray:
    """``[..., 3]`` Earth-centred, Earth-fixed positions in metres of points on the WGS84 ellipsoid (height
    0), element-wise over arrays of degrees: straight-line distances between them are ground distances at
    tile scale, and points on different orthophotos come out far apart."""
    lat, lon = (np.radians(np.asarray(v, dtype=np.float64)) for v in (lat_deg, lon_deg))
    e2 = WGS84_F * (2 - WGS84_F)
    n = WGS84_A / np.sqrt(1 - e2 * np.sin(lat) ** 2)
    return np.stack(
        (n * np.cos(lat) * np.cos(lon), n * np.cos(lat) * np.sin(lon), n * (1 - e2) * np.sin(lat)), axis=-1
    )


def geodesic_distance_m(lat1, lon1, lat2, lon2) -> np.ndarray:
    """Distance in metres on the WGS84 ellipsoid (Vincenty's inverse formula), element-wise over arrays of
    degrees. Agrees with Karney's algorithm to well under a millimetre at the distances here; the few
    nearly antipodal pairs where Vincenty does not converge fall back to the haversine on the mean radius."""
    lat1, lon1, lat2, lon2 = (np.asarray(v, dtype=np.float64) for v in (lat1, lon1, lat2, lon2))
    a, f = WGS84_A, WGS84_F
    b = a * (1 - f)
    big_l = np.radians(lon2 - lon1)
    u1 = np.arctan((1 - f) * np.tan(np.radians(lat1)))
    u2 = np.arctan((1 - f) * np.tan(np.radians(lat2)))
    sin_u1, cos_u1, sin_u2, cos_u2 = np.sin(u1), np.cos(u1), np.sin(u2), np.cos(u2)
    lam = big_l.copy()
    converged = np.zeros(np.broadcast(lam, u1, u2).shape, dtype=bool)
    for _ in range(200):
        sin_lam, cos_lam = np.sin(lam), np.cos(lam)
        sin_sigma = np.hypot(cos_u2 * sin_lam, cos_u1 * sin_u2 - sin_u1 * cos_u2 * cos_lam)
        cos_sigma = sin_u1 * sin_u2 + cos_u1 * cos_u2 * cos_lam
        sigma = np.arctan2(sin_sigma, cos_sigma)
        with np.errstate(invalid="ignore", divide="ignore"):
            sin_alpha = np.where(sin_sigma == 0, 0.0, cos_u1 * cos_u2 * sin_lam / sin_sigma)
            cos2_alpha = 1 - sin_alpha**2
            cos_2sm = np.where(cos2_alpha == 0, 0.0, cos_sigma - 2 * sin_u1 * sin_u2 / cos2_alpha)
        c = f / 16 * cos2_alpha * (4 + f * (4 - 3 * cos2_alpha))
        lam_next = big_l + (1 - c) * f * sin_alpha * (
            sigma + c * sin_sigma * (cos_2sm + c * cos_sigma * (-1 + 2 * cos_2sm**2))
        )
        converged = np.abs(lam_next - lam) < 1e-12
        lam = lam_next
        if converged.all():
            break
    u_sq = cos2_alpha * (a * a - b * b) / (b * b)
    big_a = 1 + u_sq / 16384 * (4096 + u_sq * (-768 + u_sq * (320 - 175 * u_sq)))
    big_b = u_sq / 1024 * (256 + u_sq * (-128 + u_sq * (74 - 47 * u_sq)))
    delta_sigma = (
        big_b
        * sin_sigma
        * (
            cos_2sm
            + big_b
            / 4
            * (
                cos_sigma * (-1 + 2 * cos_2sm**2)
                - big_b / 6 * cos_2sm * (-3 + 4 * sin_sigma**2) * (-3 + 4 * cos_2sm**2)
            )
        )
    )
    s = b * big_a * (sigma - delta_sigma)
    return np.where(converged, s, haversine_m(lat1, lon1, lat2, lon2))


def haversine_m(lat1, lon1, lat2, lon2, radius: float = 6371008.8) -> np.ndarray:
    """Great-circle distance in metres on a sphere of the mean Earth radius (the fallback above)."""
    p1, p2 = np.radians(lat1), np.radians(lat2)
    h = np.sin((p2 - p1) / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(np.radians(lon2 - lon1) / 2) ** 2
    return 2 * radius * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0)))


# ----------------------------------------------------------------------------- scoring


def error_stats(errors_m: np.ndarray, stride_m: np.ndarray) -> dict[str, float]:
    """Median, mean, p90 (metres) and the fraction (percent) under one tile stride."""
    e = np.asarray(errors_m, dtype=np.float64)
    if e.size == 0:
        return {"median_m": math.nan, "mean_m": math.nan, "p90_m": math.nan, "under_stride_%": math.nan}
    return {
        "median_m": float(np.median(e)),
        "mean_m": float(e.mean()),
        "p90_m": float(np.percentile(e, 90)),
        "under_stride_%": float(100.0 * np.mean(e < np.asarray(stride_m))),
    }


def score(sim: Tensor | np.ndarray, data: SplitSet, gallery_mode: str = "per-ortho") -> dict[str, Any]:
    """Retrieval and localisation metrics of a ``[Q, G]`` similarity matrix (higher = more similar) over
    ``data.queries`` x ``data.gallery``. Ties go to the lower gallery index."""
    from vimgeo.evaluate import retrieval_metrics

    if gallery_mode not in GALLERY_MODES:
        raise ValueError(f"unknown gallery mode {gallery_mode!r} (known: {', '.join(GALLERY_MODES)})")
    sim = torch.as_tensor(np.asarray(sim) if not isinstance(sim, Tensor) else sim).to("cpu", torch.float32)
    n_q, n_g = len(data.queries), len(data.gallery)
    if tuple(sim.shape) != (n_q, n_g):
        raise ValueError(f"similarity must be [Q, G] = [{n_q}, {n_g}], got {tuple(sim.shape)}")
    q_orthos = np.array([q.ortho for q in data.queries])
    g_orthos = np.array([g.ortho for g in data.gallery])
    sim = sim.clone()
    if gallery_mode == "per-ortho":
        sim[torch.from_numpy(q_orthos[:, None] != g_orthos[None, :])] = -math.inf  # other orthophotos
    labels = data.query_labels
    top1 = torch.argmax(sim, dim=1).numpy()  # first maximum: the lower index on ties
    g_lat = np.array([g.tile_lat for g in data.gallery])
    g_lon = np.array([g.tile_lon for g in data.gallery])
    q_lat = np.array([q.true_lat for q in data.queries])
    q_lon = np.array([q.true_lon for q in data.queries])
    stride = np.array([data.gallery[i].ground_size_m / 2 for i in labels])
    errors = geodesic_distance_m(q_lat, q_lon, g_lat[top1], g_lon[top1])
    oracle = geodesic_distance_m(q_lat, q_lon, g_lat[labels], g_lon[labels])

    def block(mask: np.ndarray) -> dict[str, Any]:
        idx = torch.from_numpy(np.flatnonzero(mask))
        r = retrieval_metrics(sim[idx], labels[mask], np.arange(n_g), "official")
        seen = np.isin(g_orthos, q_orthos[mask]) if gallery_mode == "per-ortho" else np.ones(n_g, bool)
        return {
            "n_queries": int(mask.sum()),
            "n_gallery": int(seen.sum()),
            **{k: r[k] for k in ("R@1", "R@5", "R@10", "AP")},
            "error": error_stats(errors[mask], stride[mask]),
            "oracle_error": error_stats(oracle[mask], stride[mask]),
        }

    result = block(np.ones(n_q, dtype=bool))
    result["per_ortho"] = {o: block(q_orthos == o) for o in sorted(set(q_orthos.tolist()))}
    result["gallery"] = gallery_mode
    result["distance"] = DISTANCE
    result["stride"] = "half the tile's ground size (ground_size_m / 2)"
    return result


# ----------------------------------------------------------------------------- model embedding


class ImageList(Dataset):
    """Images by path for embedding: items ``(tensor, index)``."""

    def __init__(self, paths: Sequence[Path], tf: Callable[[Image.Image], Tensor]):
        self.paths, self.tf = list(paths), tf

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        with Image.open(self.paths[index]) as img:
            return self.tf(img.convert("RGB")), index


@torch.inference_mode()
def embed_paths(
    model: torch.nn.Module,
    paths: Sequence[Path],
    branch: str,
    tf: Callable[[Image.Image], Tensor],
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
) -> Tensor:
    """``[N, E]`` float32 embeddings on the CPU (``model.encode(x, branch)``, L2-normalised)."""
    loader = DataLoader(ImageList(paths, tf), batch_size=batch_size, shuffle=False, num_workers=num_workers)
    return torch.cat([model.encode(x.to(device), branch).float().cpu() for x, _ in loader])


def model_similarity(
    model: torch.nn.Module,
    data: SplitSet,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
) -> Tensor:
    """``[Q, G]`` cosine similarity of the model's drone-branch queries and satellite-branch gallery, with
    the model's own evaluation preprocessing (``model.config``: size, mean/std, interpolation)."""
    from vimgeo.transforms import build_transforms

    c = model.config
    tf, _ = build_transforms(c.img_size, c.mean, c.std, train=False, interpolation=c.interpolation)
    was_training = model.training
    model.eval()
    try:
        loader = {"batch_size": batch_size, "device": device, "num_workers": num_workers}
        q = embed_paths(model, [s.path for s in data.queries], "drone", tf, **loader)
        g = embed_paths(model, [s.path for s in data.gallery], "satellite", tf, **loader)
    finally:
        model.train(was_training)
    return q @ g.T


def evaluate_model(
    model: torch.nn.Module,
    root: str | Path,
    split: str = "val",
    gallery_mode: str = "per-ortho",
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
) -> dict[str, Any]:
    """Score a VimGeo on ``root``'s ``split`` (what ``vimgeo.train`` runs after each epoch on this layout)."""
    data = load_split(root, split)
    return score(model_similarity(model, data, batch_size, device, num_workers), data, gallery_mode)


# ----------------------------------------------------------------------------- reports


def markdown_table(results: Sequence[dict[str, Any]]) -> str:
    """One row per result (``method``), overall then per orthophoto."""
    head = (
        "| method | orthophoto | queries | gallery | R@1 % | R@5 % | median error m | mean error m | "
        "p90 error m | under 1 stride % | oracle median m |"
    )
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]

    def row(method: str, ortho: str, m: dict[str, Any]) -> str:
        e, o = m["error"], m["oracle_error"]
        return (
            f"| {method} | {ortho} | {m['n_queries']} | {m['n_gallery']} | {m['R@1']:.1f} | {m['R@5']:.1f} | "
            f"{e['median_m']:.1f} | {e['mean_m']:.1f} | {e['p90_m']:.1f} | {e['under_stride_%']:.1f} | "
            f"{o['median_m']:.1f} |"
        )

    for r in results:
        lines.append(row(r["method"], "all", r))
        if len(r.get("per_ortho", {})) > 1:
            lines.extend(row(r["method"], o, m) for o, m in r["per_ortho"].items())
    gallery = {r.get("gallery") for r in results}
    lines.append("")
    lines.append(
        f"Gallery: {', '.join(sorted(g for g in gallery if g))}; error = {DISTANCE} from the true ground "
        "point to the top-1 tile centre; oracle = to the correct tile's centre (the floor of a tile-centre "
        "answer)."
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m vimgeo.geo_eval", description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=Path, help="pair folder written by `vimgeo sim pairs`")
    method = ap.add_mutually_exclusive_group()
    method.add_argument("--checkpoint", type=Path, help="training checkpoint (.pt) written by vimgeo.train")
    method.add_argument("--untrained", metavar="CONFIG", help="training config (name, .toml): random weights")
    method.add_argument("--baseline", choices=("ncc", "orb"), help="classical baseline (vimgeo.baseline)")
    ap.add_argument("--markdown", nargs="+", type=Path, metavar="RESULTS", help="comparison table of results")
    ap.add_argument("--seed", type=int, default=0, help="random init seed (--untrained)")
    ap.add_argument("--split", default="val")
    ap.add_argument("--gallery", choices=GALLERY_MODES, default="per-ortho")
    ap.add_argument("--name", help="method name in the results (default: from the method)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--num-workers", type=int, default=0)
    ap.add_argument("--ncc-size", type=int, default=64, help="NCC: grayscale side in pixels")
    ap.add_argument("--ncc-max-shift", type=float, default=0.25, help="NCC: shift search, fraction of side")
    ap.add_argument("--out", type=Path, help="results JSON (with --markdown: the table, else stdout)")
    args = ap.parse_args(argv)

    if args.markdown:
        results = [json.loads(p.read_text()) for p in args.markdown]
        table = markdown_table(results)
        if args.out:
            atomic_write_text(args.out, table + "\n")
        print(table)
        return 0
    if args.pairs is None or not (args.checkpoint or args.untrained or args.baseline):
        ap.error("give --pairs and one of --checkpoint, --untrained, --baseline (or --markdown FILES)")

    data = load_split(args.pairs, args.split)
    record: dict[str, Any] = {"pairs": str(args.pairs), "split": args.split}
    if args.baseline == "orb":
        from vimgeo.baseline import OrbConfig, orb_similarity_paths

        orb = OrbConfig()
        sim = orb_similarity_paths([q.path for q in data.queries], [g.path for g in data.gallery], orb)
        record.update(method=args.name or "ORB + RANSAC baseline", baseline=orb.describe())
    elif args.baseline:
        from vimgeo.baseline import NccConfig, ncc_similarity_paths

        ncc = NccConfig(size=args.ncc_size, max_shift=args.ncc_max_shift)
        sim = ncc_similarity_paths([q.path for q in data.queries], [g.path for g in data.gallery], ncc)
        record.update(method=args.name or "NCC baseline", baseline=ncc.describe())
    else:
        if args.checkpoint:
            from vimgeo.model import build_model_from_checkpoint

            model = build_model_from_checkpoint(args.checkpoint)
            record.update(method=args.name or "VimGeo (trained)", checkpoint=str(args.checkpoint))
        else:
            from vimgeo.config import load_config
            from vimgeo.model import build_model

            cfg = load_config(args.untrained)
            torch.manual_seed(args.seed)
            model = build_model(cfg).eval()
            record.update(method=args.name or "VimGeo (untrained)", config=args.untrained, seed=args.seed)
        model.to(args.device)
        sim = model_similarity(model, data, args.batch_size, args.device, args.num_workers)
    record.update(score(sim, data, args.gallery))
    text = json.dumps(record, indent=2) + "\n"
    if args.out:
        atomic_write_text(args.out, text)
    print(markdown_table([record]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
