"""A tiny VimGeo training run on a generated University-1652 layout.

The loss falls, evaluation runs end to end, checkpoints carry their config, and a run resumed mid-way
continues from the saved step."""

import json

import pytest
import torch

from vimgeo.config import load_config
from vimgeo.model import build_model_from_checkpoint
from vimgeo.train import lr_at, param_groups, train


def _cfg(tmp_path, data, **extra):
    overrides = [f'data="{data}"', f'out_dir="{tmp_path}"'] + [f"{k}={v}" for k, v in extra.items()]
    return load_config("test", overrides)


def test_tiny_training_loss_falls_and_evaluation_runs(tiny_university, tmp_path):
    cfg = _cfg(tmp_path, tiny_university)
    summary = train(cfg, device="cpu")
    run = tmp_path / cfg.name
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if r["kind"] == "train"]
    assert len(losses) == summary["step"] >= 20
    first, last = sum(losses[:4]) / 4, sum(losses[-4:]) / 4
    assert last < 0.8 * first, f"loss did not fall: first {first:.3f}, last {last:.3f}"

    evals = [r for r in records if r["kind"] == "eval"]
    assert len(evals) == 1
    metrics = evals[0]["metrics"]
    for direction in ("drone->satellite", "satellite->drone"):
        for protocol in ("official", "sample4geo"):
            m = metrics[direction][protocol]
            assert set(m) >= {"R@1", "R@5", "R@10", "AP"}
            assert 0.0 <= m["R@1"] <= m["R@5"] <= m["R@10"] <= 100.0
    assert (run / "metrics.png").stat().st_size > 0
    assert json.loads((run / "config.json").read_text())["backbone"] == "test"

    model = build_model_from_checkpoint(run / "final.pt")
    x = torch.rand(2, 3, cfg.img_size, cfg.img_size)
    emb = model.encode(x)
    assert torch.allclose(emb.norm(dim=-1), torch.ones(2), atol=1e-5)


def test_resume_continues_from_saved_step(tiny_university, tmp_path):
    # 3 steps, checkpointing each step; then resume to 5 and compare with an uninterrupted 5-step run.
    common = {"checkpoint_every": 1, "epochs": 2}
    first = train(_cfg(tmp_path / "a", tiny_university, max_steps=3, **common), device="cpu")
    assert first["step"] == 3
    resumed = train(_cfg(tmp_path / "a", tiny_university, max_steps=5, **common), device="cpu", resume="auto")
    straight = train(_cfg(tmp_path / "b", tiny_university, max_steps=5, **common), device="cpu")
    assert resumed["step"] == straight["step"] == 5
    a = torch.load(tmp_path / "a" / "vimgeo-test" / "final.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "b" / "vimgeo-test" / "final.pt", weights_only=False)["model"]
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-5), f"resumed run diverged at {key}"


def test_lr_schedule_warms_up_then_decays_to_floor():
    assert lr_at(0, 100, 10, 1.0, 0.01) == pytest.approx(0.1)
    assert lr_at(9, 100, 10, 1.0, 0.01) == pytest.approx(1.0)
    assert lr_at(10, 100, 10, 1.0, 0.01) == pytest.approx(1.0)
    assert lr_at(100, 100, 10, 1.0, 0.01) == pytest.approx(0.01)
    mid = lr_at(55, 100, 10, 1.0, 0.01)
    assert mid == pytest.approx(0.01 + 0.99 * 0.5)


def test_no_weight_decay_on_norms_biases_and_ssm_parameters():
    named = [
        ("layers.0.mixer.in_proj.weight", torch.nn.Parameter(torch.zeros(4, 4))),
        ("layers.0.mixer.A_log", torch.nn.Parameter(torch.zeros(4, 2))),
        ("layers.0.mixer.A_b_log", torch.nn.Parameter(torch.zeros(4, 2))),
        ("layers.0.mixer.D", torch.nn.Parameter(torch.zeros(4))),
        ("pos_embed", torch.nn.Parameter(torch.zeros(1, 5, 4))),
        ("layers.0.norm.weight", torch.nn.Parameter(torch.zeros(4))),
    ]
    decay, no_decay = param_groups(named, 0.05)
    assert len(decay["params"]) == 1 and decay["weight_decay"] == 0.05
    assert len(no_decay["params"]) == 5 and no_decay["weight_decay"] == 0.0
