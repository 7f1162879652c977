"""Training run configuration: one dataclass per run, loaded from a TOML file plus command-line overrides.

A run's config is written into its run folder and into every checkpoint, so a checkpoint alone says how it
was made. Config files live in ``models/configs/``; a file may name a ``base`` file whose values it overrides
(the ablations are one line away from the paper's main run). Values are checked once, here, at load time.

Where the VimGeo paper is silent (optimiser, schedule, batch size), the defaults follow Sample4Geo's
University-1652 recipe, the training code the paper's comparison tables come from; each such field says so.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vimgeo.atomic import atomic_write_text

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"

AUGMENTATIONS = ("traditional", "augmix")


@dataclass
class TrainConfig:
    name: str = "vimgeo-small-384"  # run name; the run folder is <out_dir>/<name>
    # --- model
    backbone: str = "small"  # named Vim config in vimgeo.model.CONFIGS ("test", "tiny", "small")
    img_size: int = 384  # input side in pixels, both branches (the paper's best: 384)
    share_weights: bool = True  # one encoder for drone and satellite (the paper's best)
    proj_dim: int | None = None  # optional linear projection of the embedding (dimension ablation)
    pretrained: str | None = None  # official Vim ImageNet checkpoint (.pth); None = random init
    drop_path_rate: float = 0.1  # stochastic depth in the backbone
    scan_impl: str = "auto"  # selective scan: "auto" (CUDA kernel on GPU, else chunked), "ref", "chunked"
    # --- data
    data: str = ""  # University-1652 root (the folder holding train/ and test/); set with --data
    augmentation: str = "traditional"  # "traditional" (the paper's) or "augmix" (ablation)
    mixup_alpha: float = 0.0  # MixUp Beta(alpha, alpha) on pairs; 0 disables (ablation uses 0.2)
    flip_prob: float = 0.5  # joint horizontal flip of a drone/satellite pair
    num_workers: int = 4  # DataLoader workers per process
    # spatial hard negatives (a `vimgeo sim pairs` folder only): batches made of groups of this many
    # neighbouring tiles (vimgeo.dataset.NeighbourBatchSampler); 1 = plain unique-id batches
    neighbour_group: int = 1
    # --- loss
    losses: dict[str, float] = field(default_factory=lambda: {"infonce": 1.0, "dice": 1.0, "kl": 1.0})
    label_smoothing: float = 0.1  # InfoNCE label smoothing (paper: 0.1)
    init_temperature: float = 0.07  # InfoNCE temperature at start (learnable; logit scale 1/0.07)
    # --- optimisation (paper silent: Sample4Geo's University-1652 recipe, scaled for a Mamba backbone)
    epochs: int = 1  # passes over the drone images
    batch_size: int = 24  # pairs per step per process; building ids are unique within a batch
    lr: float = 1e-4  # peak AdamW learning rate
    min_lr: float = 1e-6  # cosine floor
    weight_decay: float = 0.05  # AdamW; not applied to norms, biases, A_log, D, pos_embed, cls_token
    warmup_epochs: float = 0.1  # linear warm-up length in epochs
    grad_clip: float | None = 1.0  # max global grad norm; None disables
    amp: bool = True  # mixed precision on CUDA (bfloat16 where supported, else float16); ignored on CPU
    max_steps: int | None = None  # stop after this many optimiser steps (tests, smoke runs)
    seed: int = 1
    # --- bookkeeping
    out_dir: str = "runs"  # parent of the run folder
    log_every: int = 10  # steps between metric lines
    checkpoint_every: int = 500  # steps between mid-epoch checkpoints (last.pt), plus one per epoch
    eval_every: int = 1  # epochs between evaluations on the test split; 0 = only at the end
    eval_batch_size: int = 64

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{source}: unknown field(s) {', '.join(unknown)}")
        if values.get("pretrained") == "":  # TOML has no null: "" means "no checkpoint"
            values = {**values, "pretrained": None}
        cfg = cls(**values)
        cfg.validate(source)
        return cfg

    def validate(self, source: str = "config") -> None:
        def bad(fld: str, why: str) -> ValueError:
            return ValueError(f"{source}: field '{fld}' {why}")

        from vimgeo.losses import LOSS_NAMES  # late: these import torch
        from vimgeo.model import CONFIGS

        if self.backbone not in CONFIGS:
            raise bad("backbone", f"must be one of {sorted(CONFIGS)}, got {self.backbone!r}")
        if self.img_size <= 0:
            raise bad("img_size", f"must be positive, got {self.img_size}")
        patch = CONFIGS[self.backbone].patch_size
        if self.img_size % patch:
            raise bad("img_size", f"must be a multiple of the patch size {patch}, got {self.img_size}")
        if self.augmentation not in AUGMENTATIONS:
            raise bad("augmentation", f"must be one of {AUGMENTATIONS}, got {self.augmentation!r}")
        if not self.losses:
            raise bad("losses", "must name at least one loss")
        for name, weight in self.losses.items():
            if name not in LOSS_NAMES:
                raise bad("losses", f"names unknown loss {name!r} (known: {', '.join(LOSS_NAMES)})")
            if weight < 0:
                raise bad("losses", f"weight of {name!r} must be >= 0, got {weight}")
        if self.proj_dim is not None and self.proj_dim <= 0:
            raise bad("proj_dim", f"must be positive or absent, got {self.proj_dim}")
        if self.batch_size < 2:
            raise bad("batch_size", "must be at least 2 (contrastive loss needs negatives)")
        for fld in ("epochs", "log_every", "checkpoint_every", "eval_batch_size", "neighbour_group"):
            if getattr(self, fld) <= 0:
                raise bad(fld, f"must be positive, got {getattr(self, fld)}")
        if not 0 <= self.flip_prob <= 1:
            raise bad("flip_prob", f"must be in [0, 1], got {self.flip_prob}")
        if self.mixup_alpha < 0:
            raise bad("mixup_alpha", f"must be >= 0, got {self.mixup_alpha}")
        if not 0 < self.min_lr <= self.lr:
            raise bad("min_lr", f"must be in (0, lr={self.lr}], got {self.min_lr}")


def resolve_config_path(name_or_path: str) -> Path:
    """A config given by name (``paper``) or by path (``configs/paper.toml``)."""
    p = Path(name_or_path)
    if p.suffix == ".toml" and p.exists():
        return p
    candidate = CONFIG_DIR / f"{name_or_path}.toml"
    if candidate.exists():
        return candidate
    known = ", ".join(sorted(f.stem for f in CONFIG_DIR.glob("*.toml")))
    raise FileNotFoundError(f"no config {name_or_path!r} (not a file, and not one of: {known})")


def _read_toml(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    if path in seen:
        raise ValueError(f"{path}: 'base' chain loops back to itself")
    try:
        values = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{path}: malformed TOML: {e}") from e
    base = values.pop("base", None)
    if base is None:
        return values
    merged = _read_toml(resolve_config_path(base), (*seen, path))
    merged.update(values)
    return merged


def parse_override(text: str) -> tuple[str, Any]:
    """``key=value`` from the command line; the value is read as TOML (so ``lr=3e-4``, ``losses={infonce=1}``)
    and falls back to a plain string."""
    if "=" not in text:
        raise ValueError(f"override {text!r} is not key=value")
    key, raw = text.split("=", 1)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key.strip(), value


def load_config(name_or_path: str, overrides: list[str] | None = None) -> TrainConfig:
    path = resolve_config_path(name_or_path)
    values = _read_toml(path)
    for text in overrides or []:
        key, value = parse_override(text)
        values[key] = value
    return TrainConfig.from_dict(values, source=str(path))


def save_config(cfg: TrainConfig, path: Path) -> None:
    atomic_write_text(path, json.dumps(cfg.to_dict(), indent=2, sort_keys=True) + "\n")
