"""Retrieval metrics on crafted similarity matrices, the evaluation loop, the picture and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from vimgeo import evaluate as evaluate_module
from vimgeo.evaluate import METRIC_KEYS, evaluate, main, retrieval_metrics, retrieval_picture


def test_single_positive_ranks():
    # query 0 (label 1) finds its match at rank 0; query 1 (label 2) at rank 2 (0-based)
    sim = torch.tensor([[0.9, 0.1, 0.2, 0.3], [0.8, 0.7, 0.6, 0.1]])
    m = retrieval_metrics(sim, [1, 2], [1, 3, 2, 4], "official")
    assert m["R@1"] == pytest.approx(50.0)
    assert m["R@5"] == pytest.approx(100.0) and m["R@10"] == pytest.approx(100.0)
    # AP of a single hit at rank r: (old + new) / 2 = (0 / r + 1 / (r + 1)) / 2 -> query 1: (0 + 1/3) / 2
    assert m["AP"] == pytest.approx(100 * (1.0 + 1 / 6) / 2)


def test_multiple_positives_ap_follows_the_official_trapezoid():
    # positives (label 7) at 0-based ranks 0 and 2 of 4
    sim = np.array([[0.9, 0.8, 0.7, 0.6]])
    m = retrieval_metrics(sim, [7], [7, 1, 7, 2], "official")
    # hit 1: precision 1/1, before 1.0 -> 1; hit 2: precision 2/3, before 1/2 -> 7/12; weight 1/2 each
    assert m["AP"] == pytest.approx(100 * 0.5 * (1 + 7 / 12))
    assert m["R@1"] == pytest.approx(100.0)
    # positives at ranks 1 and 3
    m = retrieval_metrics(sim, [7], [1, 7, 2, 7], "official")
    assert m["AP"] == pytest.approx(
        100 * 0.5 * ((0 + 1 / 2) / 2 + (1 / 3 + 2 / 4) / 2)
    )  # before hit 2: 1 of 3
    assert m["R@1"] == 0.0


def test_distractor_outranks_the_match_only_under_the_official_protocol():
    # gallery: label 9 is a distractor building (no query has it); it beats query 0's true match
    sim = torch.tensor([[0.5, 0.9, 0.1], [0.2, 0.3, 0.8]])
    q_labels, g_labels = [1, 2], [1, 9, 2]
    official = retrieval_metrics(sim, q_labels, g_labels, "official")
    s4g = retrieval_metrics(sim, q_labels, g_labels, "sample4geo")
    assert official["R@1"] == pytest.approx(50.0)
    assert official["AP"] == pytest.approx(100 * ((0 + 1 / 2) / 2 + 1.0) / 2)
    assert s4g["R@1"] == pytest.approx(100.0)
    assert s4g["AP"] == pytest.approx(100.0)


def test_top1_percent_uses_round_of_one_percent_plus_one_and_the_full_gallery():
    # G = 150: round(1.5) = 2 -> recall within the first 3 ranks (CMC[2] in the reference code)
    g = 150
    g_labels = list(range(100, 100 + g))
    sim = torch.linspace(1.0, 0.0, g).repeat(2, 1)  # gallery item r is ranked r
    q_labels = [g_labels[2], g_labels[3]]  # matches at rank 2 (inside) and rank 3 (outside)
    official = retrieval_metrics(sim, q_labels, g_labels, "official")
    assert official["R@top1%"] == pytest.approx(50.0)
    assert official["R@1"] == 0.0 and official["R@5"] == pytest.approx(100.0)
    # sample4geo drops all but the two matching items, yet k still comes from G = 150
    s4g = retrieval_metrics(sim, q_labels, g_labels, "sample4geo")
    assert s4g["R@1"] == pytest.approx(50.0) and s4g["R@top1%"] == pytest.approx(100.0)
    # G = 250: Python rounds 2.5 to 2 -> k = 3 as well; G = 49 -> round(0.49) = 0 -> k = 1 (R@1)
    m = retrieval_metrics(torch.linspace(1.0, 0.0, 49)[None], [4], list(range(49)), "official")
    assert m["R@top1%"] == 0.0 and m["R@5"] == pytest.approx(100.0)


def test_query_without_positive_counts_as_a_miss():
    sim = torch.tensor([[0.9, 0.1], [0.5, 0.4]])
    m = retrieval_metrics(sim, [1, 5], [1, 2], "official")
    assert m["R@1"] == pytest.approx(50.0) and m["R@10"] == pytest.approx(50.0)
    assert m["AP"] == pytest.approx(50.0)


def _reference(sim: np.ndarray, ql: np.ndarray, gl: np.ndarray, protocol: str) -> dict[str, float]:
    """A plain per-query loop over the official definitions, to check the vectorised version."""
    g_full = sim.shape[1]
    if protocol == "sample4geo":
        keep = np.isin(gl, ql)
        sim, gl = sim[:, keep], gl[keep]
    k_top1 = round(0.01 * g_full) + 1
    hits = {"R@1": 0, "R@5": 0, "R@10": 0, "R@top1%": 0}
    ap_total = 0.0
    for i in range(len(ql)):
        ranked = gl[np.argsort(-sim[i], kind="stable")]
        rows = [r for r, lab in enumerate(ranked) if lab == ql[i]]
        if not rows:
            continue
        for name, k in zip(hits, (1, 5, 10, k_top1), strict=True):
            hits[name] += rows[0] < k
        ap = 0.0
        for j, r in enumerate(rows):
            before = j / r if r else 1.0
            ap += ((j + 1) / (r + 1) + before) / 2 / len(rows)
        ap_total += ap
    out = {k: 100 * v / len(ql) for k, v in hits.items()}
    out["AP"] = 100 * ap_total / len(ql)
    return out


@pytest.mark.parametrize("protocol", ["official", "sample4geo"])
def test_vectorised_metrics_match_a_plain_loop(protocol):
    rng = np.random.default_rng(0)
    gl = rng.integers(0, 40, 260)  # several positives per label, some labels never queried
    ql = rng.integers(0, 30, 70)
    sim = rng.normal(size=(70, 260)).astype(np.float32)
    got = retrieval_metrics(sim, ql, gl, protocol)
    want = _reference(sim, ql, gl, protocol)
    assert set(got) == set(METRIC_KEYS)
    for key in METRIC_KEYS:
        assert got[key] == pytest.approx(want[key], abs=1e-9), key


def test_unknown_protocol_and_bad_shape():
    with pytest.raises(ValueError, match="'cvusa'"):
        retrieval_metrics(torch.zeros(1, 1), [0], [0], "cvusa")
    with pytest.raises(ValueError, match="sim must be"):
        retrieval_metrics(torch.zeros(2, 3), [0], [0, 1, 2], "official")


class PooledColour(torch.nn.Module):
    """A stand-in encoder: the normalised 4x4 average-pooled image (no training needed)."""

    def __init__(self):
        super().__init__()
        self.calls: list[tuple[str, int]] = []

    def encode(self, x: torch.Tensor, branch: str) -> torch.Tensor:
        self.calls.append((branch, x.shape[0]))
        return F.normalize(F.adaptive_avg_pool2d(x, 4).flatten(1), dim=1)


def test_evaluate_end_to_end_on_the_synthetic_set(tiny_university):
    model = PooledColour().train()
    metrics = evaluate(model, tiny_university, img_size=32, batch_size=16)
    assert model.training  # mode restored
    assert set(metrics) == {"drone->satellite", "satellite->drone"}
    for by_protocol in metrics.values():
        assert set(by_protocol) == {"official", "sample4geo"}
        for m in by_protocol.values():
            assert set(m) == set(METRIC_KEYS) and all(0.0 <= v <= 100.0 for v in m.values())
        assert by_protocol["sample4geo"]["AP"] >= by_protocol["official"]["AP"]
    # each of the four test folders embedded once: 24 + 36 drone images, 6 + 9 satellite tiles
    seen: dict[str, int] = {}
    for branch, n in model.calls:
        seen[branch] = seen.get(branch, 0) + n
    assert seen == {"drone": 24 + 36, "satellite": 6 + 9}
    # the synthetic matches are learnable: even pooled colour beats chance (1 in 9 buildings) by far
    assert metrics["drone->satellite"]["official"]["R@1"] > 50.0


def test_retrieval_picture_is_written_atomically(tmp_path):
    paths = []
    for i, colour in enumerate(["red", "green", "blue"]):
        p = tmp_path / f"{i}.png"
        Image.new("RGB", (20, 30), colour).save(p)
        paths.append(p)
    sim = torch.tensor([[0.9, 0.1, 0.5], [0.2, 0.3, 0.8]])
    out = retrieval_picture(paths[:2], paths, sim, [0, 2], [0, 1, 2], tmp_path / "sub" / "pic.png", k=2)
    assert out.is_file() and sorted(p.name for p in out.parent.iterdir()) == ["pic.png"]
    with Image.open(out) as img:
        assert img.size[0] > img.size[1] > 0  # 2 rows of (query + 2 results)


def test_cli_writes_metrics_and_pictures(tiny_university, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(evaluate_module, "build_model_from_checkpoint", lambda ckpt: PooledColour())
    ckpt = tmp_path / "run" / "last.pt"
    ckpt.parent.mkdir()
    torch.save({"config": {"img_size": 32, "backbone": "test"}, "model": {}}, ckpt)
    assert (
        main(
            [
                "--data",
                str(tiny_university),
                "--checkpoint",
                str(ckpt),
                "--device",
                "cpu",
                "--num-workers",
                "0",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "drone->satellite" in printed and "sample4geo" in printed
    out = Path(ckpt.parent / "eval")
    report = json.loads((out / "metrics.json").read_text())
    assert report["img_size"] == 32 and set(report["metrics"]) == {"drone->satellite", "satellite->drone"}
    assert (out / "retrieval_drone_to_satellite.png").is_file()
    assert (out / "retrieval_satellite_to_drone.png").is_file()


def test_cli_rejects_a_checkpoint_without_config(tmp_path, monkeypatch):
    monkeypatch.setattr(evaluate_module, "build_model_from_checkpoint", lambda ckpt: PooledColour())
    ckpt = tmp_path / "bare.pt"
    torch.save({"model": {}}, ckpt)
    with pytest.raises(ValueError, match="config"):
        main(["--data", str(tmp_path), "--checkpoint", str(ckpt)])
