"""Geo-localisation evaluation on a `vimgeo sim pairs` folder: metrics where the answer is known, the WGS84
distance, the NCC baseline on exact crops, the CSV reader's refusals, the CLI, and training with per-epoch
validation on this layout.

The pair folder here is written by ``write_pairs``: a random textured "orthophoto" at 1 m GSD, 64 px tiles
on a 32 px (half-tile) grid, validation rows at the top and training rows below a one-tile margin, and "drone"
views cut around a point uniform in each tile's central stride square (the format's rule), optionally with
gain, offset and noise.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vimgeo import geo_eval
from vimgeo import train as train_module
from vimgeo.baseline import NccConfig, ncc_similarity, ncc_similarity_paths
from vimgeo.config import load_config
from vimgeo.geo_eval import (
    SAMPLES_COLUMNS,
    SamplesError,
    ecef_m,
    geodesic_distance_m,
    load_split,
    read_samples,
    score,
)
from vimgeo.train import train
from vimgeo.transforms import RandomRot90

TILE, STRIDE, GSD = 64, 32, 1.0  # source pixels, source pixels, metres per pixel
LAT0, LON0 = 44.5, -110.5  # top-left corner of the synthetic orthophoto
M_PER_DEG_LAT = 111_132.0  # local conversion, only needs to be consistent within the folder


def _latlon(x: float, y: float) -> tuple[float, float]:
    """Pixel (x right, y down) of the synthetic orthophoto to (lat, lon), north-up."""
    lat = LAT0 - y * GSD / M_PER_DEG_LAT
    lon = LON0 + x * GSD / (M_PER_DEG_LAT * math.cos(math.radians(LAT0)))
    return lat, lon


def _ortho(rng: np.random.Generator, side: int) -> np.ndarray:
    """Grayscale-ish RGB texture with structure at several scales (so crops are distinctive)."""
    img = np.zeros((side, side), dtype=np.float32)
    for scale in (4, 8, 16, 32):
        coarse = rng.random((side // scale + 1, side // scale + 1)).astype(np.float32)
        up = np.asarray(
            Image.fromarray(coarse).resize((side + scale, side + scale), Image.Resampling.BILINEAR)
        )
        img += up[:side, :side] * scale
    img = (img - img.min()) / (img.max() - img.min()) * 255
    rgb = np.stack([img, 0.8 * img + 30, 0.6 * img + 50], axis=-1)
    return rgb.clip(0, 255).astype(np.uint8)


def write_pairs(
    root: Path,
    side: int = 256,
    views: int = 2,
    val_rows: tuple[int, ...] = (0, 1),
    train_rows: tuple[int, ...] = (4, 5, 6),
    photometric: bool = True,
    seed: int = 0,
) -> Path:
    """A tiny pair folder in the documented layout (see the module doc); returns ``root``."""
    rng = np.random.default_rng(seed)
    ortho = _ortho(rng, side)
    stem = "synth"
    n = (side - TILE) // STRIDE + 1
    rows = []
    for split, grid_rows in (("val", val_rows), ("train", train_rows)):
        for r in grid_rows:
            for c in range(n):
                tid = f"{stem}-r{r:03d}-c{c:03d}"
                x0, y0 = c * STRIDE, r * STRIDE
                cx, cy = x0 + TILE / 2, y0 + TILE / 2
                tlat, tlon = _latlon(cx, cy)
                sat = root / split / "satellite" / tid / f"{tid}.png"
                sat.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(ortho[y0 : y0 + TILE, x0 : x0 + TILE]).save(sat)
                common = [split, "satellite", tid, str(sat.relative_to(root)), stem, tlat, tlon, TILE * GSD]
                rows.append([*common, tlat, tlon] + [""] * 10)
                for k in range(views):
                    # integer offsets strictly inside the central stride square (its Voronoi cell)
                    dx, dy = (int(v) for v in rng.integers(-STRIDE // 2 + 1, STRIDE // 2, 2))
                    vx0 = min(max(x0 + dx, 0), side - TILE)
                    vy0 = min(max(y0 + dy, 0), side - TILE)
                    view = ortho[vy0 : vy0 + TILE, vx0 : vx0 + TILE].astype(np.float32)
                    if photometric:
                        view = view * rng.uniform(0.7, 1.3) + rng.uniform(-20, 20)
                        view += rng.normal(0, 2, view.shape)
                    path = root / split / "drone" / tid / f"{tid}-{k}.png"
                    path.parent.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(view.clip(0, 255).astype(np.uint8)).save(path)
                    glat, glon = _latlon(vx0 + TILE / 2, vy0 + TILE / 2)
                    common = [split, "drone", tid, str(path.relative_to(root)), stem, tlat, tlon, TILE * GSD]
                    pose = [glat, glon, 60.0, 1.0, -2.0, 45.0, 0.5, 0.1, 2.0, 0.05]
                    rows.append([*common, glat, glon, *pose])
    with (root / "samples.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(SAMPLES_COLUMNS)
        w.writerows(rows)
    (root / "pairs.json").write_text(json.dumps({"settings": {"size": TILE, "tile_src_px": TILE}}))
    return root


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    return write_pairs(tmp_path_factory.mktemp("pairs"))


@pytest.fixture(scope="module")
def clean_pairs(tmp_path_factory) -> Path:
    return write_pairs(tmp_path_factory.mktemp("clean_pairs"), photometric=False, seed=3)


def test_geodesic_distance_matches_wgs84_reference_values():
    # One degree of latitude at the equator and of longitude along it, on WGS84 (standard values).
    assert geodesic_distance_m(0.0, 0.0, 1.0, 0.0) == pytest.approx(110_574.389, abs=0.01)
    assert geodesic_distance_m(0.0, 0.0, 0.0, 1.0) == pytest.approx(111_319.491, abs=0.01)
    assert geodesic_distance_m(44.5, -110.5, 44.5, -110.5) == 0.0
    d = geodesic_distance_m([44.5, 44.6], [-110.5, -110.4], [44.6, 44.5], [-110.4, -110.5])
    assert d[0] == pytest.approx(d[1]) and 13_000 < d[0] < 14_000


def test_ecef_chords_are_ground_distances_at_tile_scale():
    # On the equator and prime meridian the point is (a, 0, 0); at the pole (0, 0, b).
    assert ecef_m(0.0, 0.0) == pytest.approx([6_378_137.0, 0.0, 0.0])
    assert ecef_m(90.0, 0.0) == pytest.approx([0.0, 0.0, 6_356_752.314], abs=1e-3)
    # Tiles 20-200 m apart: the chord equals the geodesic to well under a millimetre.
    lat = [44.9553, 44.9555, 44.9553, 44.9571]
    lon = [-110.644, -110.644, -110.6437, -110.6421]
    p = ecef_m(lat, lon)
    assert p.shape == (4, 3)
    for i in range(1, 4):
        chord = float(np.linalg.norm(p[i] - p[0]))
        assert chord == pytest.approx(float(geodesic_distance_m(lat[0], lon[0], lat[i], lon[i])), abs=1e-3)


def test_identity_similarity_gives_recall_one_and_error_to_the_true_tile_centre(pairs):
    data = load_split(pairs, "val")
    labels = data.query_labels
    sim = np.zeros((len(data.queries), len(data.gallery)), dtype=np.float32)
    sim[np.arange(len(labels)), labels] = 1.0  # "identity embeddings": each query is its own tile
    r = score(sim, data)
    assert r["R@1"] == r["R@5"] == r["AP"] == 100.0
    expected = [
        geodesic_distance_m(q.true_lat, q.true_lon, data.gallery[i].tile_lat, data.gallery[i].tile_lon)
        for q, i in zip(data.queries, labels, strict=True)
    ]
    assert r["error"]["median_m"] == pytest.approx(float(np.median(expected)))
    assert r["error"]["mean_m"] == pytest.approx(float(np.mean(expected)))
    assert r["error"] == r["oracle_error"]
    # offsets are inside the central stride square: at most stride/sqrt(2) from the centre, under one stride
    assert r["error"]["under_stride_%"] == 100.0
    assert max(expected) < STRIDE * GSD / math.sqrt(2)
    assert r["n_queries"] == len(data.queries) and r["n_gallery"] == len(data.gallery)
    assert set(r["per_ortho"]) == {"synth"}


def test_wrong_top1_counts_as_miss_with_the_distance_to_that_tile(pairs):
    data = load_split(pairs, "val")
    labels = data.query_labels
    wrong = (labels + 3) % len(data.gallery)  # a known wrong tile per query, ranked first
    sim = np.zeros((len(data.queries), len(data.gallery)), dtype=np.float32)
    sim[np.arange(len(labels)), wrong] = 1.0
    sim[np.arange(len(labels)), labels] = 0.5  # the right one second
    r = score(sim, data)
    # official AP of a single positive at rank 2: the trapezoid (0 + 1/2) / 2
    assert r["R@1"] == 0.0 and r["R@5"] == 100.0 and r["AP"] == pytest.approx(25.0)
    expected = [
        geodesic_distance_m(q.true_lat, q.true_lon, data.gallery[i].tile_lat, data.gallery[i].tile_lon)
        for q, i in zip(data.queries, wrong, strict=True)
    ]
    assert r["error"]["median_m"] == pytest.approx(float(np.median(expected)))
    assert r["error"]["p90_m"] == pytest.approx(float(np.percentile(expected, 90)))
    assert r["error"]["median_m"] > r["oracle_error"]["median_m"]


def test_per_ortho_gallery_ignores_tiles_of_other_orthophotos(pairs):
    data = load_split(pairs, "val")
    other = geo_eval.Sample(**{**data.gallery[0].__dict__, "id": "other-r000-c000", "ortho": "other"})
    mixed = geo_eval.SplitSet([other, *data.gallery], data.queries)
    sim = np.zeros((len(data.queries), len(mixed.gallery)), dtype=np.float32)
    sim[:, 0] = 2.0  # the other orthophoto's tile looks best for every query
    sim[np.arange(len(data.queries)), mixed.query_labels] = 1.0
    assert score(sim, mixed, "per-ortho")["R@1"] == 100.0
    assert score(sim, mixed, "joint")["R@1"] == 0.0


def test_ncc_baseline_finds_exact_crops_and_is_gain_invariant(clean_pairs, pairs):
    cfg = NccConfig(size=TILE, step=1)  # no downsampling, every integer offset within a quarter tile
    for root in (clean_pairs, pairs):
        data = load_split(root, "val")
        sim = ncc_similarity_paths([q.path for q in data.queries], [g.path for g in data.gallery], cfg)
        r = score(sim, data)
        assert r["R@1"] == 100.0, root
    data = load_split(clean_pairs, "val")
    sim = ncc_similarity_paths([q.path for q in data.queries], [g.path for g in data.gallery], cfg)
    best = sim[torch.arange(len(data.queries)), torch.from_numpy(data.query_labels)]
    assert torch.allclose(best, torch.ones_like(best), atol=1e-4)  # the exact crop: NCC 1


def test_ncc_without_shift_is_whole_image_correlation():
    g = torch.rand(3, 16, 16)
    q = g * 2.0 + 0.3  # gain and offset only
    sim = ncc_similarity(q, g, NccConfig(size=16, template_frac=1.0, max_shift=0.0))
    assert torch.allclose(sim.diagonal(), torch.ones(3), atol=1e-5)
    assert (sim.argmax(dim=1) == torch.arange(3)).all()


def _rewrite_csv(src: Path, dst: Path, edit) -> Path:
    rows = list(csv.reader((src / "samples.csv").open()))
    dst.mkdir()
    with (dst / "samples.csv").open("w", newline="") as f:
        csv.writer(f).writerows(edit(rows))
    return dst


def test_samples_csv_reader_refuses_malformed_files_naming_the_column(pairs, tmp_path):
    assert len(read_samples(pairs)) > 0

    def bad_number(rows):
        rows[2][SAMPLES_COLUMNS.index("tile_lat")] = "north"
        return rows

    with pytest.raises(SamplesError, match=r"line 3: column 'tile_lat' is not a number: 'north'"):
        read_samples(_rewrite_csv(pairs, tmp_path / "a", bad_number))

    def drop_true_lon(rows):
        i = SAMPLES_COLUMNS.index("true_lon")
        return [r[:i] + r[i + 1 :] for r in rows]

    with pytest.raises(SamplesError, match=r"header lacks column 'true_lon'"):
        read_samples(_rewrite_csv(pairs, tmp_path / "b", drop_true_lon))

    def bad_kind(rows):
        rows[1][SAMPLES_COLUMNS.index("kind")] = "street"
        return rows

    with pytest.raises(SamplesError, match=r"column 'kind'"):
        read_samples(_rewrite_csv(pairs, tmp_path / "c", bad_kind))
    with pytest.raises(SamplesError, match="not found"):
        read_samples(tmp_path / "nowhere")


def test_cli_writes_results_for_untrained_and_baseline_and_a_markdown_table(pairs, tmp_path, capsys):
    untrained, ncc, table = tmp_path / "untrained.json", tmp_path / "ncc.json", tmp_path / "table.md"
    assert geo_eval.main(["--pairs", str(pairs), "--untrained", "test", "--out", str(untrained)]) == 0
    assert (
        geo_eval.main(["--pairs", str(pairs), "--baseline", "ncc", "--ncc-size", "32", "--out", str(ncc)])
        == 0
    )
    for path, method in ((untrained, "VimGeo (untrained)"), (ncc, "NCC baseline")):
        r = json.loads(path.read_text())
        assert r["method"] == method and r["split"] == "val" and r["gallery"] == "per-ortho"
        assert 0.0 <= r["R@1"] <= r["R@5"] <= 100.0
        assert r["error"]["median_m"] >= 0 and "synth" in r["per_ortho"]
    assert geo_eval.main(["--markdown", str(untrained), str(ncc), "--out", str(table)]) == 0
    text = table.read_text()
    assert "| VimGeo (untrained) | all |" in text and "| NCC baseline | all |" in text


def test_training_on_a_pair_folder_validates_every_epoch_and_plots(
    pairs, tmp_path, one_torch_thread, monkeypatch
):
    seen = {}

    class RecordingPairs(train_module.TrainPairs):
        def __init__(self, root, drone_tf, sat_tf, **kwargs):
            seen["sat_tf"] = sat_tf
            super().__init__(root, drone_tf, sat_tf, **kwargs)

    monkeypatch.setattr(train_module, "TrainPairs", RecordingPairs)
    cfg = load_config(
        "test",
        [
            f'data="{pairs}"',
            f'out_dir="{tmp_path}"',
            "epochs=2",
            "eval_every=1",
            "flip_prob=0.0",
            "log_every=1",
        ],
    )
    summary = train(cfg, device="cpu")
    # both views are north-up: the satellite branch must not be rotated by 90-degree steps
    assert not any(isinstance(t, RandomRot90) for t in seen["sat_tf"].transforms)
    run = tmp_path / cfg.name
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if r["kind"] == "eval"]
    assert [r["epoch"] for r in evals] == [0, 1]
    for r in evals:
        assert r["split"] == "val"
        m = r["metrics"]
        assert 0.0 <= m["R@1"] <= m["R@5"] <= 100.0
        assert m["n_queries"] == len(load_split(pairs, "val").queries)
        assert m["oracle_error"]["under_stride_%"] == 100.0
    assert summary["step"] == sum(1 for r in records if r["kind"] == "train")
    png = run / "metrics.png"
    assert png.stat().st_size > 0
    with Image.open(png) as img:
        assert img.size[0] > 500
