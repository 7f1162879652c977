"""Losses on crafted embeddings whose values are known by hand."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vimgeo.losses import DiceLoss, InfoNCE, KLLoss, SoftMarginTripletLoss, VimGeoLoss
from vimgeo.transforms import mixup_batch


def aligned(b: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Drone and satellite embeddings that are the same orthonormal basis: cos = identity."""
    eye = torch.eye(b)
    return eye.clone(), eye.clone()


def embeddings_with_sim(sim: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """q = I and g = sim.T, so q @ g.T == sim (not unit vectors; the losses do not renormalise)."""
    return torch.eye(sim.shape[0]), sim.T.clone()


def test_infonce_minimum_is_the_label_smoothing_entropy():
    b, ls = 4, 0.1
    hi, lo = 1 - ls + ls / b, ls / b  # smoothed target: diagonal and off-diagonal mass
    loss_fn = InfoNCE(label_smoothing=ls)
    # the scale at which softmax(scale * I) equals the smoothed target exactly
    with torch.no_grad():
        loss_fn.logit_scale.fill_(math.log(math.log(hi / lo)))
    loss = loss_fn(*aligned(b))
    entropy = -(hi * math.log(hi) + (b - 1) * lo * math.log(lo))
    assert loss.item() == pytest.approx(entropy, rel=1e-5)


def test_infonce_scale_is_clamped_at_100_and_stops_gradient():
    b, ls = 4, 0.1
    loss_fn = InfoNCE(label_smoothing=ls)
    with torch.no_grad():
        loss_fn.logit_scale.fill_(math.log(1000.0))
    assert loss_fn.scale().item() == pytest.approx(100.0)
    loss = loss_fn(*aligned(b))
    # CE of row softmax(100 * e_i) against the smoothed target, same for columns
    expected = math.log(math.exp(100) + b - 1) - (1 - ls + ls / b) * 100
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    loss.backward()
    assert loss_fn.logit_scale.grad.item() == 0.0


def test_infonce_is_symmetric_cross_entropy_and_identity_targets_match_none():
    torch.manual_seed(0)
    q, g = F.normalize(torch.randn(5, 8), dim=1), F.normalize(torch.randn(5, 8), dim=1)
    loss_fn = InfoNCE(label_smoothing=0.0, init_temperature=0.07)
    logits = (q @ g.T) / 0.07
    labels = torch.arange(5)
    expected = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))
    assert loss_fn(q, g).item() == pytest.approx(expected.item(), rel=1e-5)
    assert loss_fn(q, g, torch.eye(5)).item() == pytest.approx(expected.item(), rel=1e-5)


def test_gradient_reaches_logit_scale():
    torch.manual_seed(1)
    q, g = F.normalize(torch.randn(6, 8), dim=1), F.normalize(torch.randn(6, 8), dim=1)
    loss_fn = InfoNCE()
    loss_fn(q, g).backward()
    grad = loss_fn.logit_scale.grad
    assert grad is not None and torch.isfinite(grad) and grad.abs() > 0
    fixed = InfoNCE(learnable=False)
    assert list(fixed.parameters()) == [] and "logit_scale" in dict(fixed.named_buffers())


def test_dice_is_zero_for_identity_and_one_minus_1_over_b_for_uniform():
    b = 4
    assert DiceLoss()(*aligned(b), scale=torch.tensor(100.0)).item() == pytest.approx(0.0, abs=1e-6)
    same = torch.zeros(b, 3)
    same[:, 0] = 1.0  # every drone equally similar to every satellite: P uniform
    loss = DiceLoss(eps=0.0)(same, same)
    assert loss.item() == pytest.approx(1 - 1 / b, rel=1e-6)  # 1 - 2 * (1/b) / (1 + 1)


def test_kl_is_zero_when_both_directions_agree():
    assert KLLoss()(*aligned(5)).item() == pytest.approx(0.0, abs=1e-7)


def test_kl_hand_computed_2x2():
    sim = torch.tensor([[1.0, 0.0], [0.5, 0.0]])
    e = math.e
    # rows: drone i over satellites; columns: satellite j over drones (indexed [i, j])
    p = [[e / (e + 1), 1 / (e + 1)], [e**0.5 / (e**0.5 + 1), 1 / (e**0.5 + 1)]]
    q = [[e / (e + e**0.5), 0.5], [e**0.5 / (e + e**0.5), 0.5]]
    expected = (
        0.5
        / 2
        * sum(
            (p[i][j] - q[i][j]) * (math.log(p[i][j]) - math.log(q[i][j])) for i in range(2) for j in range(2)
        )
    )
    loss = KLLoss()(*embeddings_with_sim(sim), scale=torch.tensor(1.0))
    assert expected > 0
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_triplet_hand_computed():
    sim = torch.tensor([[0.9, 0.5], [0.2, 0.8]])
    q, g = embeddings_with_sim(sim)
    sp = lambda x: math.log1p(math.exp(x))  # noqa: E731
    rows = (sp(10 * (0.5 - 0.9)) + sp(10 * (0.2 - 0.8))) / 2  # drone anchors
    cols = (sp(10 * (0.2 - 0.9)) + sp(10 * (0.5 - 0.8))) / 2  # satellite anchors
    assert SoftMarginTripletLoss(alpha=10)(q, g).item() == pytest.approx(0.5 * (rows + cols), rel=1e-5)

    sim3 = torch.tensor([[0.9, 0.5, 0.1], [0.0, 0.8, 0.0], [0.3, 0.0, 0.7]])
    q3, g3 = embeddings_with_sim(sim3)
    row_terms = [
        (sp(2 * (0.5 - 0.9)) + sp(2 * (0.1 - 0.9))) / 2,
        sp(2 * -0.8),
        (sp(2 * -0.4) + sp(2 * -0.7)) / 2,
    ]
    col_terms = [
        (sp(2 * -0.9) + sp(2 * -0.6)) / 2,
        (sp(2 * -0.3) + sp(2 * -0.8)) / 2,
        (sp(2 * -0.6) + sp(2 * -0.7)) / 2,
    ]
    expected = 0.5 * (sum(row_terms) / 3 + sum(col_terms) / 3)
    loss = SoftMarginTripletLoss(alpha=2, hard_negative=False)(q3, g3)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_vimgeo_loss_combines_weights_with_one_shared_scale():
    torch.manual_seed(2)
    q, g = F.normalize(torch.randn(6, 8), dim=1), F.normalize(torch.randn(6, 8), dim=1)
    weights = {"infonce": 1.0, "dice": 0.5, "kl": 2.0, "triplet": 0.25}
    loss_fn = VimGeoLoss(weights)
    with torch.no_grad():
        loss_fn.logit_scale.fill_(math.log(20.0))  # not the Dice/KL default, so sharing is visible
    total, parts = loss_fn(q, g)
    assert set(parts) == set(weights)
    s = torch.tensor(20.0)
    alone = {
        "infonce": InfoNCE(init_temperature=1 / 20)(q, g),
        "dice": DiceLoss()(q, g, scale=s),
        "kl": KLLoss()(q, g, scale=s),
        "triplet": SoftMarginTripletLoss()(q, g),
    }
    for name, value in alone.items():
        assert parts[name].item() == pytest.approx(value.item(), rel=1e-5), name
    assert total.item() == pytest.approx(sum(weights[n] * alone[n].item() for n in weights), rel=1e-5)
    assert [p for p in loss_fn.parameters()] == [loss_fn.logit_scale]


def test_dice_and_kl_alone_still_train_the_temperature():
    torch.manual_seed(3)
    q, g = F.normalize(torch.randn(6, 8), dim=1), F.normalize(torch.randn(6, 8), dim=1)
    loss_fn = VimGeoLoss({"dice": 1.0, "kl": 1.0})
    total, parts = loss_fn(q, g)
    total.backward()
    assert set(parts) == {"dice", "kl"}
    assert loss_fn.logit_scale.grad is not None and loss_fn.logit_scale.grad.abs() > 0


def test_vimgeo_loss_rejects_unknown_and_negative():
    with pytest.raises(ValueError, match="'arcface'"):
        VimGeoLoss({"infonce": 1.0, "arcface": 1.0})
    with pytest.raises(ValueError, match="'dice'"):
        VimGeoLoss({"dice": -1.0})
    with pytest.raises(ValueError):
        VimGeoLoss({})


def test_soft_targets_from_mixup_give_soft_cross_entropy():
    torch.manual_seed(4)
    gen = torch.Generator().manual_seed(0)
    base = F.normalize(torch.randn(6, 16), dim=1)
    drone_m, sat_m, targets = mixup_batch(base, base.clone(), alpha=0.4, generator=gen)
    assert not torch.equal(targets, torch.eye(6))
    q, g = F.normalize(drone_m, dim=1), F.normalize(sat_m, dim=1)
    total, parts = VimGeoLoss({"infonce": 1.0, "dice": 1.0, "kl": 1.0, "triplet": 1.0})(q, g, targets)
    assert torch.isfinite(total) and all(torch.isfinite(v) for v in parts.values())
    logits = (q @ g.T) / 0.07
    rows = -(targets * logits.log_softmax(dim=1)).sum(dim=1).mean()
    cols = -(targets.T * logits.T.log_softmax(dim=1)).sum(dim=1).mean()
    got = InfoNCE(label_smoothing=0.0)(q, g, targets)
    assert got.item() == pytest.approx(0.5 * (rows + cols).item(), rel=1e-5)
