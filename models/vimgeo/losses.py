"""Training losses for drone/satellite retrieval.

Every loss takes a batch of L2-normalised embeddings ``q[B, E]`` (drone) and ``g[B, E]`` (satellite) whose
true pairs sit on the diagonal (``q[i]`` and ``g[i]`` show the same building; the batch sampler keeps building
ids unique so every off-diagonal pair is a true negative). An optional ``targets[B, B]`` soft target matrix
(rows sum to 1; ``None`` means the identity) carries MixUp's partial matches, see ``transforms.mixup_batch``.

Modules, each usable alone:

- ``InfoNCE``: symmetric cross-entropy over the scaled cosine similarities; owns the learnable temperature.
- ``DiceLoss``: Dice overlap between the drone-to-satellite softmax and the target matrix.
- ``KLLoss``: symmetric KL between the drone-to-satellite and satellite-to-drone softmax distributions.
- ``SoftMarginTripletLoss``: soft-margin triplet on cosine similarities (University-1652 / LPN style).
- ``VimGeoLoss``: the weighted sum the config names (paper: InfoNCE + Dice + KL), one shared temperature.

All logits are ``scale * q @ g.T`` with ``scale = exp(logit_scale)`` clamped at 100 (as CLIP does), so the
Dice and KL terms see the same sharpness InfoNCE learns. Every forward has the same signature
``(q, g, targets=None, scale=None) -> scalar``; ``scale`` is only read by the terms that need logits.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

MAX_LOGIT_SCALE = 100.0  # CLIP's cap on exp(logit_scale): temperature never below 0.01
LOSS_NAMES = ("infonce", "dice", "kl", "triplet")


def _check_pair(q: Tensor, g: Tensor, targets: Tensor | None) -> None:
    if q.ndim != 2 or q.shape != g.shape:
        raise ValueError(
            f"q and g must both be [B, E] with equal shapes, got {tuple(q.shape)} and {tuple(g.shape)}"
        )
    b = q.shape[0]
    if targets is not None and targets.shape != (b, b):
        raise ValueError(f"targets must be [B, B] = [{b}, {b}], got {tuple(targets.shape)}")


def _identity_targets(b: int, like: Tensor) -> Tensor:
    return torch.eye(b, dtype=like.dtype, device=like.device)


def _default_scale(init_temperature: float) -> float:
    return min(1.0 / init_temperature, MAX_LOGIT_SCALE)


def _logits(q: Tensor, g: Tensor, targets: Tensor | None, scale: Tensor | float) -> Tensor:
    """Checked ``scale * q @ g.T``, ``[B, B]`` indexed drone i x satellite j."""
    _check_pair(q, g, targets)
    return scale * (q @ g.T)


class InfoNCE(nn.Module):
    """Symmetric InfoNCE with label smoothing and a learnable temperature.

    ``logits = exp(logit_scale) * q @ g.T``, ``logit_scale = log(1 / T)`` initialised at ``log(1 / 0.07)``;
    ``exp(logit_scale)`` is clamped at 100 in the forward pass (gradient stops while clamped).

        loss = 0.5 * (CE_ls(logits, targets) + CE_ls(logits.T, targets.T))

    where ``CE_ls(x, t) = mean_i sum_j -t'_ij log softmax_j(x_i)`` with the label-smoothed target
    ``t' = (1 - ls) * t + ls / B``: drone-to-satellite rows and satellite-to-drone columns averaged.
    With ``targets=None`` the target is the identity. The minimum over logits is the entropy of ``t'``,
    not zero, when ``ls > 0``.
    """

    def __init__(self, label_smoothing: float = 0.1, init_temperature: float = 0.07, learnable: bool = True):
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        if init_temperature <= 0:
            raise ValueError(f"init_temperature must be positive, got {init_temperature}")
        self.label_smoothing = label_smoothing
        init = torch.tensor(math.log(1.0 / init_temperature), dtype=torch.float32)
        if learnable:
            self.logit_scale = nn.Parameter(init)
        else:
            self.register_buffer("logit_scale", init)

    def scale(self) -> Tensor:
        """exp(logit_scale) clamped at 100: the multiplier on cosine similarities (1 / temperature)."""
        return self.logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)

    @property
    def temperature(self) -> float:
        return 1.0 / float(self.scale().detach())

    def forward(
        self, q: Tensor, g: Tensor, targets: Tensor | None = None, scale: Tensor | None = None
    ) -> Tensor:
        # ``scale`` is accepted for a uniform signature; InfoNCE always uses its own.
        logits = _logits(q, g, targets, self.scale())
        if targets is None:
            labels = torch.arange(q.shape[0], device=q.device)
            rows = F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
            cols = F.cross_entropy(logits.T, labels, label_smoothing=self.label_smoothing)
        else:
            t = targets.to(logits.dtype)
            rows = F.cross_entropy(logits, t, label_smoothing=self.label_smoothing)
            cols = F.cross_entropy(logits.T, t.T, label_smoothing=self.label_smoothing)
        return 0.5 * (rows + cols)


class DiceLoss(nn.Module):
    """Dice loss between the drone-to-satellite softmax and the target matrix, per row then averaged.

    ``P = softmax_j(scale * q @ g.T)`` (row i: drone i's distribution over the batch's satellites),
    ``G = targets`` (identity by default):

        loss = mean_i [ 1 - (2 * sum_j P_ij G_ij + eps) / (sum_j P_ij + sum_j G_ij + eps) ]

    Both rows sum to 1, so a row's term is ``1 - (2 P_ii + eps) / (2 + eps)`` with identity targets: 0 when
    drone i puts all its mass on its own satellite, 1 when it puts none there. ``scale`` defaults to
    ``1 / init_temperature`` when used alone; ``VimGeoLoss`` passes InfoNCE's learned one.
    """

    def __init__(self, eps: float = 1e-6, init_temperature: float = 0.07):
        super().__init__()
        self.eps = eps
        self.default_scale = _default_scale(init_temperature)

    def forward(
        self, q: Tensor, g: Tensor, targets: Tensor | None = None, scale: Tensor | None = None
    ) -> Tensor:
        logits = _logits(q, g, targets, self.default_scale if scale is None else scale)
        p = logits.softmax(dim=1)  # [B, B] rows sum to 1
        t = _identity_targets(q.shape[0], p) if targets is None else targets.to(p.dtype)
        overlap = (p * t).sum(dim=1)  # [B]
        dice = (2 * overlap + self.eps) / (p.sum(dim=1) + t.sum(dim=1) + self.eps)
        return (1 - dice).mean()


class KLLoss(nn.Module):
    """Symmetric KL between the two retrieval directions' softmax distributions.

    With ``L = scale * q @ g.T`` indexed ``[drone i, satellite j]``:

        P_ij = exp(L_ij) / sum_k exp(L_ik)     drone i's distribution over satellites (rows of P sum to 1)
        Q_ij = exp(L_ij) / sum_k exp(L_kj)     satellite j's distribution over drones, i.e. softmax over the
                                              rows of L.T, transposed back (columns of Q sum to 1)

        loss = 0.5 / B * sum_ij [ P_ij log(P_ij / Q_ij) + Q_ij log(Q_ij / P_ij) ]
             = 0.5 * (KL(P/B || Q/B) + KL(Q/B || P/B))

    Both ``P/B`` and ``Q/B`` are joint distributions over the B*B (drone, satellite) pairs (P with a uniform
    drone marginal, Q with a uniform satellite marginal), so each KL is a proper, non-negative divergence;
    summing over j and averaging over rows i is the 1/B. It is zero exactly when both directions agree on
    every pair, e.g. for a symmetric L with equal row sums of exp(L). Targets are not used.
    """

    def __init__(self, init_temperature: float = 0.07):
        super().__init__()
        self.default_scale = _default_scale(init_temperature)

    def forward(
        self, q: Tensor, g: Tensor, targets: Tensor | None = None, scale: Tensor | None = None
    ) -> Tensor:
        logits = _logits(q, g, targets, self.default_scale if scale is None else scale)
        log_p = logits.log_softmax(dim=1)  # [B, B] drone -> satellite
        log_q = logits.log_softmax(dim=0)  # [B, B] satellite -> drone, indexed [drone, satellite]
        sym = (log_p.exp() - log_q.exp()) * (log_p - log_q)  # P log(P/Q) + Q log(Q/P), elementwise
        return 0.5 * sym.sum(dim=1).mean()


class SoftMarginTripletLoss(nn.Module):
    """Soft-margin triplet loss on cosine similarities, both directions.

    For anchor drone i: ``s_pos = cos(q_i, g_i)``; ``s_neg`` = the hardest negative ``max_j cos(q_i, g_j)``
    (``hard_negative=True``) or every negative in turn (``False``, then the mean over negatives); negatives
    are the pairs whose target is 0 (all off-diagonal pairs without MixUp). Then

        l_i = log(1 + exp(alpha * (s_neg - s_pos)))

    which is the University-1652 / LPN soft margin ``log(1 + exp(alpha * (d_pos - d_neg)))`` written with
    similarities instead of distances (``d = 1 - cos``). The same is done with satellite anchors (columns),
    and the loss is the mean of the two directions' means over anchors. Anchors without negatives are skipped.
    """

    def __init__(self, alpha: float = 10.0, hard_negative: bool = True):
        super().__init__()
        if alpha <= 0:
            raise ValueError(f"alpha must be positive, got {alpha}")
        self.alpha = alpha
        self.hard_negative = hard_negative

    def _one_direction(self, sim: Tensor, negative: Tensor) -> Tensor:
        # sim, negative: [B, B], anchors on rows
        pos = sim.diagonal()  # [B]
        has_neg = negative.any(dim=1)  # [B]
        if not has_neg.any():
            return sim.sum() * 0.0
        if self.hard_negative:
            neg = sim.masked_fill(~negative, float("-inf")).amax(dim=1)  # [B]
            per_anchor = F.softplus(self.alpha * (neg - pos))
        else:
            terms = F.softplus(self.alpha * (sim - pos[:, None]))  # [B, B]
            per_anchor = (terms * negative).sum(dim=1) / negative.sum(dim=1).clamp(min=1)
        return per_anchor[has_neg].mean()

    def forward(
        self, q: Tensor, g: Tensor, targets: Tensor | None = None, scale: Tensor | None = None
    ) -> Tensor:
        _check_pair(q, g, targets)
        sim = q @ g.T  # [B, B] cosine similarities
        if targets is None:
            negative = ~torch.eye(q.shape[0], dtype=torch.bool, device=q.device)
        else:
            negative = targets <= 0
        return 0.5 * (self._one_direction(sim, negative) + self._one_direction(sim.T, negative.T))


class VimGeoLoss(nn.Module):
    """Weighted sum of named losses sharing one learnable temperature.

    ``weights`` maps loss names (``"infonce"``, ``"dice"``, ``"kl"``, ``"triplet"``) to weights, e.g. the
    paper's ``{"infonce": 1, "dice": 1, "kl": 1}``. The InfoNCE module (always built, so its ``logit_scale``
    exists even when InfoNCE's weight is 0) owns the temperature; Dice and KL use its current scale, so their
    gradients also reach ``logit_scale``. ``forward(q, g, targets=None) -> (total, {name: value})``, values
    are detached scalars, one per named loss (weight 0 included, for ablation logs).

    ``logit_scale`` is a parameter of this module: give ``loss.parameters()`` to the optimiser.
    """

    def __init__(
        self,
        weights: dict[str, float],
        label_smoothing: float = 0.1,
        init_temperature: float = 0.07,
        triplet_alpha: float = 10.0,
    ):
        super().__init__()
        if not weights:
            raise ValueError("VimGeoLoss needs at least one named loss")
        for name, w in weights.items():
            if name not in LOSS_NAMES:
                raise ValueError(f"unknown loss {name!r} (known: {', '.join(LOSS_NAMES)})")
            if not math.isfinite(w) or w < 0:
                raise ValueError(f"weight of loss {name!r} must be finite and >= 0, got {w}")
        self.weights = dict(weights)
        self.infonce = InfoNCE(label_smoothing=label_smoothing, init_temperature=init_temperature)
        self.terms = nn.ModuleDict({"infonce": self.infonce})
        if "dice" in weights:
            self.terms["dice"] = DiceLoss(init_temperature=init_temperature)
        if "kl" in weights:
            self.terms["kl"] = KLLoss(init_temperature=init_temperature)
        if "triplet" in weights:
            self.terms["triplet"] = SoftMarginTripletLoss(alpha=triplet_alpha)

    @property
    def logit_scale(self) -> Tensor:
        return self.infonce.logit_scale

    @property
    def temperature(self) -> float:
        return self.infonce.temperature

    def forward(
        self, q: Tensor, g: Tensor, targets: Tensor | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        scale = self.infonce.scale()
        total = q.new_zeros(())
        parts: dict[str, Tensor] = {}
        for name, w in self.weights.items():
            value = self.terms[name](q, g, targets, scale)
            total = total + w * value
            parts[name] = value.detach()
        return total, parts
