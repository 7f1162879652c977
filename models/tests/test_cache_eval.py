"""vimgeo.cache_eval: `vimgeo cache query` output scored against a pair folder (synthetic: test_geo_eval)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_geo_eval import GSD, STRIDE, write_pairs

from vimgeo.cache_eval import QueryError, main, score
from vimgeo.geo_eval import ecef_m, read_samples


def _write_query(path: Path, pairs: Path, rank_by) -> Path:
    """A query file as `vimgeo cache query` writes it: every val tile for every val view, ordered by
    ``rank_by(distance to the view's true point)`` (higher first), with the image paths as given."""
    samples = [s for s in read_samples(pairs) if s.split == "val"]
    tiles = [s for s in samples if s.kind == "satellite"]
    with path.open("w") as f:
        for v in (s for s in samples if s.kind == "drone"):
            centres = ecef_m([t.tile_lat for t in tiles], [t.tile_lon for t in tiles])
            d = np.linalg.norm(centres - ecef_m(v.true_lat, v.true_lon), axis=-1)
            sim = rank_by(d)
            order = np.argsort(-sim, kind="stable")
            matches = [
                {"rank": r + 1, "lat": t.tile_lat, "lon": t.tile_lon, "similarity": float(sim[i])}
                for r, (i, t) in enumerate((i, tiles[i]) for i in order)
            ]
            f.write(json.dumps({"image": str(v.path), "matches": matches}) + "\n")
    return path


def test_a_perfect_retrieval_scores_full_recall_and_the_oracle_error(tmp_path):
    pairs = write_pairs(tmp_path / "pairs")
    good = score(pairs, _write_query(tmp_path / "good.jsonl", pairs, lambda d: -d))
    bad = score(pairs, _write_query(tmp_path / "bad.jsonl", pairs, lambda d: d))
    for gallery in ("all", "split"):
        assert good[gallery]["r1"] == 100.0 and good[gallery]["r5"] == 100.0
        assert bad[gallery]["r1"] == 0.0
        assert good[gallery]["median_m"] < bad[gallery]["median_m"]
    # The views lie inside their tile's stride cell: the nearest tile centre is under half a diagonal away.
    assert good["split"]["median_m"] < STRIDE * GSD * 2**0.5 / 2
    # A prior window smaller than the tile spacing keeps only the nearest tiles.
    tight = score(pairs, tmp_path / "good.jsonl", prior_m=1.0)
    assert tight["prior"]["gallery"] <= 2


def test_bad_query_files_name_the_file_and_line(tmp_path, capsys):
    pairs = write_pairs(tmp_path / "pairs", views=1, val_rows=(0,), train_rows=(4,))
    q = _write_query(tmp_path / "q.jsonl", pairs, lambda d: -d)
    lines = q.read_text().splitlines()
    (tmp_path / "short.jsonl").write_text("\n".join(lines[1:]) + "\n")
    with pytest.raises(QueryError, match="no line for 1 val views"):
        score(pairs, tmp_path / "short.jsonl")
    (tmp_path / "broken.jsonl").write_text(lines[0] + "\n{not json\n")
    with pytest.raises(QueryError, match="broken.jsonl line 2"):
        score(pairs, tmp_path / "broken.jsonl")
    assert main(["--pairs", str(pairs), "--query", str(q), "--label", "perfect"]) == 0
    table = capsys.readouterr().out
    assert "| split | perfect |" in table and "100.0" in table


def test_the_fitted_temperature_recovers_the_one_that_drew_the_answers():
    """Views whose right tile is drawn from softmax(s / 0.05): the fit finds 0.05 back (within sampling
    noise), and a sharper or flatter truth moves it the same way."""
    from vimgeo.cache_eval import fit_temperature

    rng = np.random.default_rng(0)

    def windows(t: float) -> list[tuple[np.ndarray, int]]:
        out = []
        for _ in range(3000):
            s = rng.normal(0.5, 0.1, size=40)
            p = np.exp((s - s.max()) / t)
            out.append((s, int(rng.choice(40, p=p / p.sum()))))
        return out

    fitted = fit_temperature(windows(0.05))
    assert abs(fitted - 0.05) < 0.005, fitted
    assert fit_temperature(windows(0.02)) < fitted < fit_temperature(windows(0.2))
