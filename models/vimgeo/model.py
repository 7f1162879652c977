"""Vision Mamba (Vim, hustvl/Vim) backbone and the VimGeo cross-view encoder.

Reads top to bottom: the config, the blocks (RMSNorm comes from torch; ``DropPath``, ``PatchEmbed``, the
bidirectional "v2" Mamba mixer, the pre-norm ``Block``), the backbone ``Vim``, the two-branch ``VimGeo``,
``checkpoint_filter_fn`` for the official Vim ImageNet checkpoints, and the named configs.

Usage::

    model = VimGeo(get_config("small", img_size=384))
    model.load_pretrained("vim_s_midclstok_80p5acc.pth")  # official ImageNet weights, pos_embed resized
    drone_emb, sat_emb = model(drone=drone_images, satellite=satellite_images)  # [B, 384] each, unit norm

Parameter names equal the official checkpoints' (``layers.N.mixer.in_proj.weight``, ``...conv1d_b.weight``,
``...A_b_log``, ``norm_f.weight``, ``pos_embed``, ...), so the backbone loads them strictly. Unlike the
reference, whose non-CUDA path silently runs only the forward scan, both directions always run here: the
backward direction scans with ``reverse=True`` after an anti-causal conv, which equals the reference's
flip -> causal conv -> scan -> flip exactly.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import pickle
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from vimgeo.scan import IMPLS, selective_scan

if TYPE_CHECKING:
    from vimgeo.config import TrainConfig

__all__ = [
    "CONFIGS",
    "BidirectionalMamba",
    "Block",
    "Vim",
    "VimConfig",
    "VimGeo",
    "backbone_config",
    "build_model",
    "build_model_from_checkpoint",
    "checkpoint_filter_fn",
    "get_config",
    "read_checkpoint",
    "resample_pos_embed",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VimConfig:
    img_size: int = 224  # input side in pixels (square images); VimGeo trains at 384
    patch_size: int = 16  # side and stride of the patch embedding
    in_chans: int = 3  # input channels
    embed_dim: int = 192  # token width E (tiny 192, small 384)
    depth: int = 24  # number of Mamba blocks
    d_state: int = 16  # SSM state size N per channel
    expand: int = 2  # inner width D = expand * E
    d_conv: int = 4  # depthwise conv kernel before each scan
    dt_rank: int | str = "auto"  # rank of the step-size projection; "auto" = ceil(E / 16)
    rms_norm: bool = True  # RMSNorm (official checkpoints) or LayerNorm
    residual_in_fp32: bool = True  # keep the residual stream in float32 under mixed precision
    norm_eps: float = 1e-5  # epsilon of every norm
    drop_path_rate: float = 0.0  # stochastic depth, rising linearly to this value over the blocks
    scan_impl: str = "auto"  # selective scan: "auto", "ref", "chunked", "cuda" (see vimgeo.scan)
    # Preprocessing contract that travels with the weights (ImageNet statistics of the Vim checkpoints).
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)  # per-channel mean subtracted after scaling to [0, 1]
    std: tuple[float, ...] = (0.229, 0.224, 0.225)  # per-channel std divided by
    interpolation: str = "bicubic"  # resize filter for inputs

    def __post_init__(self):
        # Checkpoints and JSON round-trip tuples as lists; keep the config hashable and comparable.
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        if self.img_size <= 0 or self.patch_size <= 0 or self.img_size % self.patch_size:
            raise ValueError(
                f"img_size ({self.img_size}) must be a positive multiple of patch_size ({self.patch_size})"
            )
        if self.dt_rank != "auto" and not (isinstance(self.dt_rank, int) and self.dt_rank > 0):
            raise ValueError(f"dt_rank must be 'auto' or a positive int, got {self.dt_rank!r}")
        if self.scan_impl not in IMPLS:
            raise ValueError(f"scan_impl must be one of {IMPLS}, got {self.scan_impl!r}")
        if len(self.mean) != self.in_chans or len(self.std) != self.in_chans:
            raise ValueError(f"mean and std need {self.in_chans} values (in_chans)")

    @property
    def d_inner(self) -> int:
        return self.expand * self.embed_dim

    @property
    def dt_rank_value(self) -> int:
        return math.ceil(self.embed_dim / 16) if self.dt_rank == "auto" else int(self.dt_rank)

    @property
    def grid_size(self) -> tuple[int, int]:
        side = self.img_size // self.patch_size
        return side, side

    @property
    def num_patches(self) -> int:
        return self.grid_size[0] * self.grid_size[1]

    @property
    def token_position(self) -> int:
        """Index of the class token in the sequence: the middle of the M patches, M // 2."""
        return self.num_patches // 2


# ------------------------------------------------------------------------------------------------ blocks


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch of a sample with probability ``p`` (training)."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


class PatchEmbed(nn.Module):
    """Non-overlapping patches to tokens: ``[B, C, H, W] -> [B, M, E]``."""

    def __init__(self, cfg: VimConfig):
        super().__init__()
        self.img_size = cfg.img_size
        self.proj = nn.Conv2d(cfg.in_chans, cfg.embed_dim, kernel_size=cfg.patch_size, stride=cfg.patch_size)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-2:] != (self.img_size, self.img_size):
            raise ValueError(
                f"input is {tuple(x.shape[-2:])} pixels, the model takes {self.img_size}x{self.img_size} "
                "(the position embedding is fixed to that grid)"
            )
        return self.proj(x).flatten(2).transpose(1, 2)


def _make_norm(cfg: VimConfig) -> nn.Module:
    if cfg.rms_norm:
        return nn.RMSNorm(cfg.embed_dim, eps=cfg.norm_eps)
    return nn.LayerNorm(cfg.embed_dim, eps=cfg.norm_eps)


def _init_dt_proj(dt_proj: nn.Linear, dt_min=1e-3, dt_max=1e-1, dt_floor=1e-4) -> None:
    """Weights uniform in +-rank^-0.5; bias = softplus^-1(dt) with dt log-uniform in [dt_min, dt_max]."""
    bound = dt_proj.in_features**-0.5
    nn.init.uniform_(dt_proj.weight, -bound, bound)
    log_dt = torch.rand(dt_proj.out_features) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
    dt = log_dt.exp().clamp(min=dt_floor)
    with torch.no_grad():
        dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus


def _s4d_real_log(d_inner: int, d_state: int) -> nn.Parameter:
    """``A_log`` with ``A = -exp(A_log) = -(1, 2, ..., N)`` for every channel (S4D-Real)."""
    a = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(d_inner, 1)
    p = nn.Parameter(torch.log(a))
    p._no_weight_decay = True
    return p


def _ones(d_inner: int) -> nn.Parameter:
    p = nn.Parameter(torch.ones(d_inner))
    p._no_weight_decay = True
    return p


class BidirectionalMamba(nn.Module):
    """Vim's "v2" bidirectional Mamba mixer: ``[B, L, E] -> [B, L, E]``.

    One input projection gives ``x`` and the gate ``z``; a forward and a backward branch each run their own
    depthwise conv, ``x_proj`` (step rank + B + C), ``dt_proj``, ``A`` and ``D`` and a selective scan gated by
    ``silu(z)``; the two outputs are averaged and projected back. The backward branch (``*_b``) is the
    reference's flip -> causal conv -> scan -> flip, computed without flipping: an anti-causal conv and a
    reverse scan.
    """

    def __init__(self, cfg: VimConfig):
        super().__init__()
        E, Di, N, R, K = cfg.embed_dim, cfg.d_inner, cfg.d_state, cfg.dt_rank_value, cfg.d_conv
        self.d_state, self.dt_rank = N, R
        self.scan_impl = cfg.scan_impl  # may be changed on a built model (e.g. "ref" to compare)
        self.in_proj = nn.Linear(E, 2 * Di, bias=False)

        def conv() -> nn.Conv1d:  # weights applied by _direction; padding here only mirrors the reference
            return nn.Conv1d(Di, Di, kernel_size=K, groups=Di, padding=K - 1, bias=True)

        self.conv1d, self.conv1d_b = conv(), conv()
        self.x_proj = nn.Linear(Di, R + 2 * N, bias=False)
        self.x_proj_b = nn.Linear(Di, R + 2 * N, bias=False)
        self.dt_proj, self.dt_proj_b = nn.Linear(R, Di), nn.Linear(R, Di)
        _init_dt_proj(self.dt_proj)
        _init_dt_proj(self.dt_proj_b)
        self.A_log, self.A_b_log = _s4d_real_log(Di, N), _s4d_real_log(Di, N)
        self.D, self.D_b = _ones(Di), _ones(Di)
        self.out_proj = nn.Linear(Di, E, bias=False)
        # GPT-2 style: the residual-branch output projection scaled by 1 / sqrt(depth).
        with torch.no_grad():
            self.out_proj.weight /= math.sqrt(cfg.depth)

    def forward(self, hidden: Tensor) -> Tensor:
        xz = self.in_proj(hidden).transpose(1, 2)  # [B, 2 Di, L]
        x, z = xz.chunk(2, dim=1)  # [B, Di, L] each
        y = self._direction(x, z, self.conv1d, self.x_proj, self.dt_proj, self.A_log, self.D, reverse=False)
        y_b = self._direction(
            x, z, self.conv1d_b, self.x_proj_b, self.dt_proj_b, self.A_b_log, self.D_b, reverse=True
        )
        return self.out_proj(((y + y_b) / 2).transpose(1, 2))  # [B, L, E]

    def _direction(
        self,
        x: Tensor,
        z: Tensor,
        conv: nn.Conv1d,
        x_proj: nn.Linear,
        dt_proj: nn.Linear,
        A_log: Tensor,
        D: Tensor,
        reverse: bool,
    ) -> Tensor:
        k = conv.kernel_size[0]
        if reverse:  # causal conv of the flipped sequence, flipped back == anti-causal conv, kernel reversed
            x = F.conv1d(F.pad(x, (0, k - 1)), conv.weight.flip(-1), conv.bias, groups=conv.groups)
        else:
            x = F.conv1d(F.pad(x, (k - 1, 0)), conv.weight, conv.bias, groups=conv.groups)
        x = F.silu(x)  # [B, Di, L]
        dt, B, C = x_proj(x.transpose(1, 2)).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = F.linear(dt, dt_proj.weight).transpose(1, 2)  # [B, Di, L]; the bias is added inside the scan
        return selective_scan(
            x,
            dt,
            -torch.exp(A_log.float()),
            B.transpose(1, 2),  # [B, N, L]
            C.transpose(1, 2),
            D.float(),
            z=z,
            delta_bias=dt_proj.bias.float(),
            delta_softplus=True,
            reverse=reverse,
            impl=self.scan_impl,
        )


class Block(nn.Module):
    """Add -> norm -> mixer, returning ``(mixer output, residual)``; the residual stream stays in float32.

    This is the reference's (fused) pre-norm layout: the residual add of block i happens at the start of
    block i + 1 (and in ``Vim`` after the last block), with that block's drop path.
    """

    def __init__(self, cfg: VimConfig, drop_path: float):
        super().__init__()
        self.residual_in_fp32 = cfg.residual_in_fp32
        self.mixer = BidirectionalMamba(cfg)
        self.norm = _make_norm(cfg)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, hidden: Tensor, residual: Tensor | None) -> tuple[Tensor, Tensor]:
        residual = hidden if residual is None else residual + self.drop_path(hidden)
        if self.residual_in_fp32:
            residual = residual.float()
        hidden = self.mixer(self.norm(residual.to(self.norm.weight.dtype)))
        return hidden, residual


# ------------------------------------------------------------------------------------------------- model


def _lecun_normal_(w: Tensor) -> None:
    fan_in = w[0].numel()
    std = math.sqrt(1.0 / fan_in) / 0.87962566103423978  # std of a unit normal truncated at +-2
    nn.init.trunc_normal_(w, std=std, a=-2 * std, b=2 * std)


class Vim(nn.Module):
    """Vision Mamba backbone with a middle class token: ``[B, C, H, W] -> [B, E]``."""

    def __init__(self, cfg: VimConfig):
        super().__init__()
        self.config = cfg
        E = cfg.embed_dim
        self.patch_embed = PatchEmbed(cfg)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, E))
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.num_patches + 1, E))
        # Block i adds the output of block i - 1, so it carries that block's drop rate; the last block's
        # output is added after the loop (the reference's layout).
        rates = [cfg.drop_path_rate * i / max(cfg.depth - 1, 1) for i in range(cfg.depth)]
        self.layers = nn.ModuleList(Block(cfg, r) for r in [0.0, *rates][: cfg.depth])
        last = rates[-1] if rates else 0.0
        self.drop_path = DropPath(last) if last > 0 else nn.Identity()
        self.norm_f = _make_norm(cfg)

        _lecun_normal_(self.patch_embed.proj.weight)
        nn.init.zeros_(self.patch_embed.proj.bias)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)

    @property
    def token_position(self) -> int:
        return self.config.token_position

    def no_weight_decay(self) -> set[str]:
        """Parameter names that the reference trains without weight decay (besides biases and norms)."""
        return {"pos_embed", "cls_token"}

    def _residual_stream(self, x: Tensor) -> Tensor:
        """``[B, C, H, W]`` -> the un-normalised token stream after the last block, ``[B, M + 1, E]``."""
        x = self.patch_embed(x)  # [B, M, E]
        pos = self.token_position
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        x = torch.cat((x[:, :pos], cls, x[:, pos:]), dim=1) + self.pos_embed  # class token at M // 2
        hidden, residual = x, None
        for layer in self.layers:
            hidden, residual = layer(hidden, residual)
        residual = hidden if residual is None else residual + self.drop_path(hidden)
        return residual.to(self.norm_f.weight.dtype)

    def forward_tokens(self, x: Tensor) -> Tensor:
        """All tokens after the final norm, ``[B, M + 1, E]``; the class token sits at ``token_position``."""
        return self.norm_f(self._residual_stream(x))

    def forward_features(self, x: Tensor) -> Tensor:
        """The class token after the final norm (not L2-normalised), ``[B, E]``."""
        return self.norm_f(self._residual_stream(x)[:, self.token_position])

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_features(x)


class VimGeo(nn.Module):
    """Cross-view geo-localization encoder: drone and satellite images to L2-normalised embeddings.

    One ``Vim`` shared by both branches (the paper's best), or one per branch (``share_weights=False``, the
    paper's ablation); an optional linear projection to ``proj_dim`` (the dimension ablation), per branch
    like the backbone. ``config`` is the backbone's ``VimConfig``, which carries the preprocessing contract.
    """

    BRANCHES = ("drone", "satellite")

    def __init__(self, backbone: VimConfig, share_weights: bool = True, proj_dim: int | None = None):
        super().__init__()
        if proj_dim is not None and proj_dim <= 0:
            raise ValueError(f"proj_dim must be positive or None, got {proj_dim}")
        self.config = backbone
        self.share_weights = share_weights
        self.proj_dim = proj_dim
        self.backbone = Vim(backbone)
        self.backbone_satellite = None if share_weights else Vim(backbone)
        self.proj = self._projection()
        self.proj_satellite = None if share_weights else self._projection()

    def _projection(self) -> nn.Linear | None:
        if self.proj_dim is None:
            return None
        proj = nn.Linear(self.config.embed_dim, self.proj_dim)
        nn.init.trunc_normal_(proj.weight, std=0.02)
        nn.init.zeros_(proj.bias)
        return proj

    @property
    def embedding_dim(self) -> int:
        return self.config.embed_dim if self.proj_dim is None else self.proj_dim

    def _branch(self, branch: str) -> tuple[Vim, nn.Linear | None]:
        if branch not in self.BRANCHES:
            raise ValueError(f"branch must be one of {self.BRANCHES}, got {branch!r}")
        if branch == "satellite" and not self.share_weights:
            return self.backbone_satellite, self.proj_satellite
        return self.backbone, self.proj

    def encode(self, x: Tensor, branch: str = "drone") -> Tensor:
        """``[B, C, H, W]`` images of one branch -> ``[B, embedding_dim]`` unit-norm embeddings."""
        backbone, proj = self._branch(branch)
        feats = backbone.forward_features(x)
        if proj is not None:
            feats = proj(feats)
        return F.normalize(feats, dim=-1)

    def forward(
        self, drone: Tensor | None = None, satellite: Tensor | None = None
    ) -> tuple[Tensor | None, Tensor | None]:
        """Embed either or both views; a missing view gives ``None``."""
        if self.share_weights and drone is not None and satellite is not None:
            both = self.encode(torch.cat((drone, satellite)))  # one pass through the shared encoder
            return both[: drone.shape[0]], both[drone.shape[0] :]
        return (
            None if drone is None else self.encode(drone, "drone"),
            None if satellite is None else self.encode(satellite, "satellite"),
        )

    def load_pretrained(self, path_or_state_dict: str | Path | Mapping[str, Any]):
        """Load official Vim ImageNet weights into the backbone(s), resizing ``pos_embed`` to this grid.

        Accepts a checkpoint path (``.pth``/``.pt`` or ``.safetensors``) or its loaded dict. Every backbone
        parameter must come from the checkpoint; only the projection may stay missing. Returns the
        ``(missing_keys, unexpected_keys)`` of the load.
        """
        state = path_or_state_dict
        if not isinstance(state, Mapping):
            state = read_checkpoint(state)
        full: dict[str, Tensor] = {}
        for prefix in ("backbone", "backbone_satellite"):
            backbone = getattr(self, prefix)
            if backbone is not None:
                filtered = checkpoint_filter_fn(state, backbone)
                full.update({f"{prefix}.{k}": v for k, v in filtered.items()})
        result = self.load_state_dict(full, strict=False)
        allowed = {k for k in self.state_dict() if k.startswith(("proj.", "proj_satellite."))}
        missing = [k for k in result.missing_keys if k not in allowed]
        if missing or result.unexpected_keys:
            raise ValueError(
                f"pretrained weights do not fit the backbone: missing {_preview(missing)}, "
                f"unexpected {_preview(result.unexpected_keys)}"
            )
        log.info(
            "loaded pretrained Vim weights; missing (new) keys: %s, unexpected keys: %s",
            result.missing_keys,
            result.unexpected_keys,
        )
        return result


# -------------------------------------------------------------------------------------------- checkpoints


def _preview(keys: list[str], limit: int = 8) -> str:
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return f"{keys[:limit]}{more}"


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint file without running pickled code (``weights_only``).

    The official Vim ``.pth`` files also hold the training ``args`` (an ``argparse.Namespace``), which is
    allowed; anything else that is not plain data is refused with a ValueError.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:  # something other than plain data: say which file and what to do
        raise ValueError(
            f"{path}: cannot read as a weights-only checkpoint ({e}); re-save just the weights, e.g. "
            "torch.save(torch.load(path, weights_only=False)['model'], 'weights.pth'), from a trusted file"
        ) from e


def resample_pos_embed(pos_embed: Tensor, new_grid: tuple[int, int]) -> Tensor:
    """Resize a middle-class-token position embedding ``[1, M + 1, E]`` to a new square-or-not patch grid.

    The class token's entry is taken out at the old middle index ``M // 2``, the ``sqrt(M) x sqrt(M)`` patch
    grid is resized bicubically, and the class entry goes back in at the new middle index.
    """
    if pos_embed.dim() != 3 or pos_embed.shape[0] != 1:
        raise ValueError(f"pos_embed must be [1, M + 1, E], got shape {tuple(pos_embed.shape)}")
    m_old = pos_embed.shape[1] - 1
    side = math.isqrt(m_old)
    if side * side != m_old:
        raise ValueError(f"pos_embed: checkpoint has {m_old} patch positions, not a square grid")
    pos_old, pos_new = m_old // 2, (new_grid[0] * new_grid[1]) // 2
    cls = pos_embed[:, pos_old : pos_old + 1]
    patches = torch.cat((pos_embed[:, :pos_old], pos_embed[:, pos_old + 1 :]), dim=1)  # [1, M, E]
    dtype = patches.dtype
    patches = patches.float().reshape(1, side, side, -1).permute(0, 3, 1, 2)  # [1, E, side, side]
    patches = F.interpolate(patches, size=new_grid, mode="bicubic", align_corners=False)
    patches = patches.flatten(2).transpose(1, 2).to(dtype)  # [1, M_new, E]
    return torch.cat((patches[:, :pos_new], cls, patches[:, pos_new:]), dim=1)


def checkpoint_filter_fn(state_dict: Mapping[str, Any], model: Vim) -> dict[str, Tensor]:
    """Map an official Vim checkpoint (optionally wrapped under ``"model"``) onto ``model``'s keys.

    Drops the classification head and any key the model lacks (logged), resizes ``pos_embed`` to the
    model's grid, and raises a ValueError naming the key on any other shape mismatch (e.g. a different
    patch size or width).
    """
    for wrapper in ("model", "state_dict"):
        if isinstance(state_dict.get(wrapper), Mapping):
            state_dict = state_dict[wrapper]
            break
    target = model.state_dict()
    out: dict[str, Tensor] = {}
    dropped: list[str] = []
    for key, value in state_dict.items():
        key = key.removeprefix("module.")  # saved from DistributedDataParallel
        if key not in target:
            dropped.append(key)
            continue
        want = tuple(target[key].shape)
        if key == "pos_embed" and tuple(value.shape) != want:
            if value.shape[-1] != want[-1]:
                raise ValueError(f"pos_embed: checkpoint width {value.shape[-1]}, model width {want[-1]}")
            value = resample_pos_embed(value, model.config.grid_size)
        elif tuple(value.shape) != want:
            raise ValueError(
                f"checkpoint tensor '{key}' has shape {tuple(value.shape)}, the model expects {want} "
                "(a different Vim size or patch size?)"
            )
        out[key] = value
    unknown = [k for k in dropped if not k.startswith("head.")]
    if unknown:
        log.warning("checkpoint keys with no place in the model were dropped: %s", _preview(unknown))
    return out


# ---------------------------------------------------------------------------------------- named configs

CONFIGS: dict[str, VimConfig] = {
    # A few thousand parameters: runs in milliseconds, for tests.
    "test": VimConfig(img_size=32, patch_size=8, embed_dim=32, depth=2, d_state=8),
    # Vim-Ti (about 7 M parameters).
    "tiny": VimConfig(embed_dim=192, depth=24),
    # Vim-S, the VimGeo paper's backbone (about 26 M parameters with the ImageNet head).
    "small": VimConfig(embed_dim=384, depth=24),
    # The demo model (configs/demo.toml): width 128, 6 blocks, 128 px (64 patches); trains from scratch on a
    # few thousand orthophoto pairs on a 2-core CPU in about half an hour. Not a University-1652 model.
    "demo": VimConfig(img_size=128, embed_dim=128, depth=6),
}


def get_config(name: str, **overrides: Any) -> VimConfig:
    """A named config with fields replaced, e.g. ``get_config("small", img_size=384)``."""
    if name not in CONFIGS:
        raise KeyError(f"unknown Vim config {name!r}; known: {sorted(CONFIGS)}")
    return dataclasses.replace(CONFIGS[name], **overrides)


# ------------------------------------------------------------------------------ models of training runs


def backbone_config(cfg: TrainConfig) -> VimConfig:
    """The backbone config a training config names (``vimgeo.config.TrainConfig``)."""
    return get_config(
        cfg.backbone, img_size=cfg.img_size, drop_path_rate=cfg.drop_path_rate, scan_impl=cfg.scan_impl
    )


def build_model(cfg: TrainConfig) -> VimGeo:
    """A freshly initialised VimGeo for a training config."""
    return VimGeo(backbone_config(cfg), share_weights=cfg.share_weights, proj_dim=cfg.proj_dim)


def build_model_from_checkpoint(ckpt: dict[str, Any] | str | Path, map_location: str = "cpu") -> VimGeo:
    """A VimGeo with the weights of a training checkpoint (the dict, or its path), in eval mode."""
    from vimgeo.config import TrainConfig  # late: vimgeo.config checks its values against CONFIGS above

    if not isinstance(ckpt, dict):
        ckpt = torch.load(ckpt, map_location=map_location, weights_only=False)
    for key in ("config", "backbone", "model"):
        if key not in ckpt:
            raise ValueError(f"checkpoint lacks '{key}': not a vimgeo training checkpoint")
    cfg = TrainConfig.from_dict(ckpt["config"], source="checkpoint config")
    vim_cfg = VimConfig(**{**ckpt["backbone"], "drop_path_rate": 0.0})
    model = VimGeo(vim_cfg, share_weights=cfg.share_weights, proj_dim=cfg.proj_dim)
    model.load_state_dict(ckpt["model"], strict=True)
    return model.eval()
