"""Scores the onboard path: `vimgeo cache query` output (JSON lines) against a pair folder's truth.

``geo_eval`` measures a model in PyTorch on the pair folder's own gallery; this measures what the product
does: the tile cache that `vimgeo cache build` cut from a whole orthophoto, searched by `vimgeo cache
query` in Rust with ONNX Runtime or tract. For every query view of the split, the top-1 tile's distance to
the view's true ground point is its error; "R@k" counts the views whose *nearest* tile (the best a
tile-centre answer can do) is among the first k. Three galleries, each a subset of the query's returned
tiles (ask for all of them: ``--top-k`` at least the cache's size):

- ``all``: every tile of the cache (the whole orthophoto, the training area included);
- ``split``: the tiles within 1 m of a satellite tile of the split (the pair folder's own gallery);
- ``prior``: the tiles within ``--prior-m`` of the view's true ground point (a prior window, as onboard).

For the ``prior`` gallery it also fits the model's *frame temperature*: the ``T`` that makes
``softmax(similarity / T)`` over the window's tiles the best-calibrated probability that the nearest tile
is the right one (maximum likelihood over the views; temperature scaling, Guo et al. 2017). It is a property
of the model on that kind of view (appearance gap included), the input a localizer needs to turn
similarities into likelihoods of independent looks.

    python -m vimgeo.cache_eval --pairs target/demo-model/pairs --query trained.jsonl --label trained
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .geo_eval import ecef_m, read_samples


class QueryError(ValueError):
    """A query file line that is not what `vimgeo cache query` writes; the message names file and line."""


def read_query(path: str | Path) -> dict[Path, np.ndarray]:
    """``image (resolved path) -> [N, 3]`` rows of (lat, lon, similarity), best first."""
    path = Path(path)
    out: dict[Path, np.ndarray] = {}
    with path.open() as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
                rows = [(float(m["lat"]), float(m["lon"]), float(m["similarity"])) for m in d["matches"]]
                image = Path(d["image"]).resolve()
            except (ValueError, KeyError, TypeError) as e:
                raise QueryError(f"{path} line {number}: not a `vimgeo cache query` line ({e})") from None
            if not rows:
                raise QueryError(f"{path} line {number}: no matches")
            out[image] = np.array(rows, dtype=np.float64)
    return out


def score(pairs: str | Path, query: str | Path, split: str = "val", prior_m: float = 40.0) -> dict[str, dict]:
    """R@1, R@5, median and p90 error (metres) and the median gallery size, per gallery (see the module)."""
    samples = [s for s in read_samples(pairs) if s.split == split]
    tiles = ecef_m(
        [s.tile_lat for s in samples if s.kind == "satellite"],
        [s.tile_lon for s in samples if s.kind == "satellite"],
    )
    views = [s for s in samples if s.kind == "drone"]
    results = read_query(query)
    missing = [str(v.path) for v in views if v.path.resolve() not in results]
    if missing:
        raise QueryError(f"{query}: no line for {len(missing)} {split} views, e.g. {missing[0]}")
    found: dict[str, list[tuple[int, float, int]]] = {"all": [], "split": [], "prior": []}
    windows: list[tuple[np.ndarray, int]] = []  # (similarities in the prior window, index of the nearest)
    for v in views:
        rows = results[v.path.resolve()]
        pos = ecef_m(rows[:, 0], rows[:, 1])
        sim = rows[:, 2]
        dist = np.linalg.norm(pos - ecef_m(v.true_lat, v.true_lon), axis=-1)
        in_split = np.linalg.norm(pos[:, None, :] - tiles[None, :, :], axis=-1).min(axis=1) < 1.0
        galleries = (("all", np.ones(len(rows), bool)), ("split", in_split), ("prior", dist <= prior_m))
        for name, mask in galleries:
            idx = np.flatnonzero(mask)
            if idx.size == 0:
                continue
            order = idx[np.argsort(-sim[idx], kind="stable")]
            nearest = idx[np.argmin(dist[idx])]
            if name == "prior":
                windows.append((sim[idx], int(np.argmin(dist[idx]))))
            found[name].append((int(np.flatnonzero(order == nearest)[0]), float(dist[order[0]]), idx.size))
    out = {}
    for name, rows in found.items():
        if not rows:
            continue
        a = np.array(rows, dtype=np.float64)
        out[name] = {
            "views": len(rows),
            "gallery": float(np.median(a[:, 2])),
            "r1": 100.0 * float(np.mean(a[:, 0] == 0)),
            "r5": 100.0 * float(np.mean(a[:, 0] < 5)),
            "median_m": float(np.median(a[:, 1])),
            "p90_m": float(np.percentile(a[:, 1], 90)),
            "p95_m": float(np.percentile(a[:, 1], 95)),
        }
    if windows:
        out["prior"]["temperature"] = fit_temperature(windows)
    return out


def fit_temperature(windows: Sequence[tuple[np.ndarray, int]]) -> float:
    """The ``T`` minimising the mean negative log-likelihood of the right tile under ``softmax(s / T)``.

    ``windows``: per view, the similarities of its candidate tiles and the index of the right one. A golden-
    section search on ``log T`` over 1e-3..10 (the likelihood is unimodal in ``T``), to 0.1 % of ``T``.
    """

    def nll(log_t: float) -> float:
        t = np.exp(log_t)
        total = 0.0
        for s, k in windows:
            z = s / t
            m = z.max()
            total += m + np.log(np.exp(z - m).sum()) - z[k]
        return total / len(windows)

    lo, hi = np.log(1e-3), np.log(10.0)
    g = (np.sqrt(5.0) - 1.0) / 2.0
    a, b = hi - g * (hi - lo), lo + g * (hi - lo)
    fa, fb = nll(a), nll(b)
    while hi - lo > 1e-3:
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - g * (hi - lo)
            fa = nll(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + g * (hi - lo)
            fb = nll(b)
    return float(np.exp((lo + hi) / 2.0))


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pairs", required=True, help="the `vimgeo sim pairs` folder")
    p.add_argument("--query", required=True, nargs="+", help="`vimgeo cache query` output, one per model")
    p.add_argument("--label", nargs="+", help="a name per query file (default: the file stems)")
    p.add_argument("--split", default="val")
    p.add_argument("--prior-m", type=float, default=40.0)
    args = p.parse_args(argv)
    labels = args.label or [Path(q).stem for q in args.query]
    if len(labels) != len(args.query):
        p.error("--label needs one name per --query file")
    print(
        "| gallery | model | views | tiles (median) | R@1 % | R@5 % | median error m | p90 error m "
        "| p95 error m |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    scored = [
        (label, score(args.pairs, q, args.split, args.prior_m))
        for label, q in zip(labels, args.query, strict=True)
    ]
    for gallery in ("split", "prior", "all"):
        for label, result in scored:
            r = result.get(gallery)
            if r is None:
                continue
            print(
                f"| {gallery} | {label} | {r['views']} | {r['gallery']:.0f} | {r['r1']:.1f} | {r['r5']:.1f} "
                f"| {r['median_m']:.1f} | {r['p90_m']:.1f} | {r['p95_m']:.1f} |"
            )
    for label, result in scored:
        if "temperature" in result.get("prior", {}):
            print(f"\n{label}: frame temperature in the prior window {result['prior']['temperature']:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
