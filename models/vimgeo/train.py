"""Train VimGeo on University-1652 (or any folder in its layout, such as a `vimgeo sim pairs` folder).

    python -m vimgeo.train --config paper --data /data/University-1652            # one GPU or CPU
    torchrun --nproc_per_node 4 -m vimgeo.train --config paper --data /data/U1652   # several GPUs (DDP)
    python -m vimgeo.train --config paper --data ... --resume auto                  # continue the last run

A run folder ``<out_dir>/<name>/`` holds ``config.json``, ``metrics.jsonl`` (one JSON object per logged step
and per evaluation), ``metrics.png``, ``last.pt`` (written atomically every ``checkpoint_every`` steps and at
each epoch end; resuming continues mid-epoch at the exact batch) and ``final.pt``. Every checkpoint carries
the config and the resolved backbone config, so ``vimgeo.model.build_model_from_checkpoint`` needs nothing
else.

Evaluation every ``eval_every`` epochs and at the end: on University-1652 (``<data>/test``) both directions
and protocols (``vimgeo.evaluate``); on a pair folder (``<data>/val``, written by ``vimgeo sim pairs``) the
validation drone views against the validation tiles (``vimgeo.geo_eval``: R@1/5/10, AP, localisation error).
A pair folder is north-up in both branches, so there the satellite branch gets the drone branch's
augmentation (no random 90-degree rotation; set ``flip_prob = 0`` too, as ``configs/demo.toml`` does).
``metrics.png`` plots the training loss and the evaluation R@1 against epochs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import random
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader
from tqdm import tqdm

from vimgeo.atomic import atomic_open
from vimgeo.config import TrainConfig, load_config, save_config
from vimgeo.dataset import NeighbourBatchSampler, TrainPairs, UniqueIdBatchSampler
from vimgeo.losses import VimGeoLoss
from vimgeo.model import VimGeo, build_model
from vimgeo.transforms import build_transforms, mixup_batch

# ----------------------------------------------------------------------------- pure helpers


def lr_at(step: int, total_steps: int, warmup_steps: int, peak: float, floor: float) -> float:
    """Linear warm-up to ``peak`` over ``warmup_steps``, then cosine decay to ``floor`` at ``total_steps``."""
    if warmup_steps > 0 and step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return floor + 0.5 * (peak - floor) * (1.0 + math.cos(math.pi * progress))


_NO_DECAY_SUFFIXES = ("A_log", "A_b_log", ".D", ".D_b", "pos_embed", "cls_token", "logit_scale")


def param_groups(named_params, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: no weight decay on norms, biases and the SSM's A/D (as Vim trains them)."""
    decay, no_decay = [], []
    for name, p in named_params:
        if not p.requires_grad:
            continue
        if p.ndim <= 1 or name.endswith(_NO_DECAY_SUFFIXES):
            no_decay.append(p)
        else:
            decay.append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def capture_rng() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def tile_positions_ecef(pairs_root: Path, ids: list[str]) -> np.ndarray:
    """``[len(ids), 3]`` Earth-centred positions (metres, WGS84) of the training tiles ``ids`` from the pair
    folder's ``samples.csv`` (``geo_eval.ecef_m``). An id without a row raises, naming it."""
    from vimgeo.geo_eval import ecef_m, read_samples

    centres = {s.id: (s.tile_lat, s.tile_lon) for s in read_samples(pairs_root) if s.split == "train"}
    missing = [i for i in ids if i not in centres]
    if missing:
        names = ", ".join(missing[:5])
        raise ValueError(f"{pairs_root / 'samples.csv'}: no train rows for tile id(s) {names}")
    return ecef_m([centres[i][0] for i in ids], [centres[i][1] for i in ids])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ----------------------------------------------------------------------------- distributed


@dataclasses.dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed() -> Dist:
    """torchrun sets RANK/WORLD_SIZE/LOCAL_RANK; without them this is a single process."""
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return Dist()
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend)
    d = Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    if torch.cuda.is_available():
        torch.cuda.set_device(d.local_rank)
    return d


# ----------------------------------------------------------------------------- metrics


class MetricsLog:
    """Appends JSON lines to ``metrics.jsonl`` (main process only) and redraws ``metrics.png``."""

    def __init__(self, run_dir: Path, enabled: bool, steps_per_epoch: int | None = None):
        self.path = run_dir / "metrics.jsonl"
        self.png = run_dir / "metrics.png"
        self.enabled = enabled
        self.steps_per_epoch = steps_per_epoch  # x axis in epochs when known, else in steps

    def write(self, record: dict[str, Any]) -> None:
        if self.enabled:
            with self.path.open("a") as f:
                f.write(json.dumps(record) + "\n")

    def records(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    def plot(self) -> None:
        if not self.enabled:
            return
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        recs = self.records()
        steps = [r for r in recs if r.get("kind") == "train"]
        evals = [r for r in recs if r.get("kind") == "eval"]
        per = self.steps_per_epoch

        def x(r: dict[str, Any]) -> float:
            return r["step"] / per if per else r["step"]

        fig, ax = plt.subplots(1, 2, figsize=(11, 4))
        if steps:
            ax[0].plot([x(r) for r in steps], [r["loss"] for r in steps], label="total", alpha=0.5)
            for part in ("infonce", "dice", "kl", "triplet"):
                if part in steps[0]:
                    ax[0].plot([x(r) for r in steps], [r[part] for r in steps], label=part, alpha=0.4)
            by_epoch: dict[int, list[float]] = {}
            for r in steps:
                by_epoch.setdefault(r["epoch"], []).append(r["loss"])
            if per and len(by_epoch) > 1:
                ax[0].plot(
                    [e + 1 for e in by_epoch],
                    [sum(v) / len(v) for v in by_epoch.values()],
                    marker="o",
                    color="black",
                    label="total, epoch mean",
                )
        ax[0].set(xlabel="epoch" if per else "step", ylabel="loss", title="training loss")
        if steps:
            ax[0].legend()
        val = [r for r in evals if r.get("split") == "val"]
        if val:  # a pair folder: validation drone views against validation tiles
            ax[1].plot([x(r) for r in val], [r["metrics"]["R@1"] for r in val], marker="o", label="R@1")
            ax[1].plot([x(r) for r in val], [r["metrics"]["R@5"] for r in val], marker="s", label="R@5")
            ax[1].set(xlabel="epoch" if per else "step", ylabel="%", title="validation (drone->tile)")
        else:
            for key in ("drone->satellite", "satellite->drone"):
                pts = [r for r in evals if key in r["metrics"]]
                if pts:
                    ax[1].plot(
                        [x(r) for r in pts],
                        [r["metrics"][key]["official"]["R@1"] for r in pts],
                        marker="o",
                        label=f"{key} R@1 (official)",
                    )
            ax[1].set(xlabel="epoch" if per else "step", ylabel="%", title="test R@1")
        if evals:
            ax[1].legend()
        fig.tight_layout()
        with atomic_open(self.png) as f:
            fig.savefig(f, format="png", dpi=100)
        plt.close(fig)


# ----------------------------------------------------------------------------- training


def train(cfg: TrainConfig, device: str | None = None, resume: str | None = None) -> dict[str, Any]:
    """Run one training job; returns a summary (final step, last losses, evaluation metrics)."""
    d = init_distributed()
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dev.type == "cuda" and d.world_size > 1:
        dev = torch.device("cuda", d.local_rank)
    if not cfg.data:
        raise ValueError("no dataset: pass --data PATH (the University-1652 root holding train/ and test/)")
    data_root = Path(cfg.data)
    run_dir = Path(cfg.out_dir) / cfg.name
    if d.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.json")
    log = MetricsLog(run_dir, d.is_main)
    pairs_layout = (data_root / "val").is_dir()  # a `vimgeo sim pairs` folder: north-up, validation split
    seed_everything(cfg.seed + d.rank)

    model = build_model(cfg).to(dev)
    if cfg.pretrained:
        if not Path(cfg.pretrained).exists():
            raise FileNotFoundError(
                f"pretrained checkpoint {cfg.pretrained} not found (config field 'pretrained'; "
                'download the official Vim-S checkpoint or set pretrained="" for random init)'
            )
        model.load_pretrained(cfg.pretrained)
    criterion = VimGeoLoss(
        cfg.losses, label_smoothing=cfg.label_smoothing, init_temperature=cfg.init_temperature
    )
    criterion.to(dev)

    mean, std = model.config.mean, model.config.std
    drone_tf, sat_tf = build_transforms(
        cfg.img_size, mean, std, kind=cfg.augmentation, train=True, interpolation=model.config.interpolation
    )
    if pairs_layout:  # both views north-up: a rotated tile would no longer match its drone view
        sat_tf = drone_tf
    dataset = TrainPairs(data_root, drone_tf, sat_tf, flip_prob=cfg.flip_prob, seed=cfg.seed)
    sampler_args = dict(shuffle=True, seed=cfg.seed, drop_last=True, rank=d.rank, world_size=d.world_size)
    if cfg.neighbour_group > 1:
        if not pairs_layout:
            raise ValueError(
                f"config field 'neighbour_group' ({cfg.neighbour_group}) needs tile positions: "
                f"{data_root} is not a `vimgeo sim pairs` folder (no val/ split, no samples.csv)"
            )
        positions = tile_positions_ecef(data_root, dataset.ids)
        sampler = NeighbourBatchSampler(
            dataset.labels, positions, cfg.batch_size, cfg.neighbour_group, **sampler_args
        )
    else:
        sampler = UniqueIdBatchSampler(dataset.labels, cfg.batch_size, **sampler_args)
    steps_per_epoch = len(sampler)
    log.steps_per_epoch = steps_per_epoch
    if steps_per_epoch == 0:
        raise ValueError(
            f"{data_root}: too few buildings ({len(set(dataset.labels))}) for batch_size {cfg.batch_size}"
        )
    total_steps = steps_per_epoch * cfg.epochs
    if cfg.max_steps is not None:
        total_steps = min(total_steps, cfg.max_steps)
    warmup_steps = int(cfg.warmup_epochs * steps_per_epoch)

    params = param_groups(model.named_parameters(), cfg.weight_decay)
    params += param_groups((("loss." + n, p) for n, p in criterion.named_parameters()), 0.0)
    optimizer = torch.optim.AdamW(params, lr=cfg.lr)
    use_amp = cfg.amp and dev.type == "cuda"
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)

    step = 0
    ckpt_path = run_dir / "last.pt"
    if resume:
        path = ckpt_path if resume == "auto" else Path(resume)
        if path.exists():
            state = torch.load(path, map_location=dev, weights_only=False)
            model.load_state_dict(state["model"])
            criterion.load_state_dict(state["loss"])
            optimizer.load_state_dict(state["optimizer"])
            scaler.load_state_dict(state["scaler"])
            step = state["step"]
            restore_rng(state["rng"])
            if d.is_main:
                print(f"resumed from {path} at step {step}")
        elif resume != "auto":
            raise FileNotFoundError(f"--resume {resume}: no such checkpoint")

    ddp_model = model
    if d.world_size > 1:
        ddp_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[d.local_rank] if dev.type == "cuda" else None
        )

    def checkpoint(path: Path) -> None:
        if not d.is_main:
            return
        with atomic_open(path) as f:
            torch.save(
                {
                    "config": cfg.to_dict(),
                    "backbone": dataclasses.asdict(model.config),
                    "model": model.state_dict(),
                    "loss": criterion.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scaler": scaler.state_dict(),
                    "step": step,
                    "rng": capture_rng(),
                },
                f,
            )

    bar = tqdm(total=total_steps, initial=step, disable=not d.is_main, desc=cfg.name, dynamic_ncols=True)
    last: dict[str, float] = {}
    started = time.perf_counter()
    ddp_model.train()
    while step < total_steps:
        epoch, skip = divmod(step, steps_per_epoch)
        sampler.set_epoch(epoch)
        dataset.set_epoch(epoch)  # per-epoch joint flips
        # Resuming mid-epoch: the sampler is deterministic per (seed, epoch); drop the batches already done.
        batches = list(sampler)[skip:]
        # Its own generator, so creating the loader does not draw from the global RNG the augmentations use
        # (a resumed run then sees the same random stream as an uninterrupted one when num_workers = 0).
        loader = DataLoader(
            dataset,
            batch_sampler=batches,
            generator=torch.Generator().manual_seed(cfg.seed * 1000 + epoch),
            num_workers=cfg.num_workers,
            pin_memory=dev.type == "cuda",
            persistent_workers=False,
        )
        for drone, sat, _labels in loader:
            if step >= total_steps:
                break
            lr = lr_at(step, total_steps, warmup_steps, cfg.lr, cfg.min_lr)
            for group in optimizer.param_groups:
                group["lr"] = lr
            drone, sat = drone.to(dev, non_blocking=True), sat.to(dev, non_blocking=True)
            targets = None
            if cfg.mixup_alpha > 0:
                drone, sat, targets = mixup_batch(drone, sat, cfg.mixup_alpha)
            autocast = torch.autocast("cuda", dtype=amp_dtype) if use_amp else nullcontext()
            with autocast:
                q, g = ddp_model(drone, sat)
            loss, parts = criterion(q.float(), g.float(), targets)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if cfg.grad_clip:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            step += 1
            last = {"loss": loss.item(), **{k: float(v) for k, v in parts.items()}}
            bar.update(1)
            bar.set_postfix(loss=f"{last['loss']:.4f}", lr=f"{lr:.2e}")
            if step % cfg.log_every == 0 or step == total_steps:
                temperature = float(criterion.temperature)
                log.write(
                    {
                        "kind": "train",
                        "step": step,
                        "epoch": epoch,
                        "lr": lr,
                        "temperature": temperature,
                        "elapsed_s": time.perf_counter() - started,
                        **last,
                    }
                )
            if step % cfg.checkpoint_every == 0:
                checkpoint(ckpt_path)
        epoch_done = step % steps_per_epoch == 0
        if epoch_done:
            checkpoint(ckpt_path)
        finished = step >= total_steps
        if d.is_main and (finished or (cfg.eval_every and epoch_done and (epoch + 1) % cfg.eval_every == 0)):
            if (data_root / "test").exists():
                metrics = run_evaluation(model, cfg, dev)
                log.write({"kind": "eval", "step": step, "epoch": epoch, "metrics": metrics})
                print_metrics(metrics)
            elif pairs_layout:
                metrics = run_validation(model, cfg, dev)
                log.write({"kind": "eval", "split": "val", "step": step, "epoch": epoch, "metrics": metrics})
                print_validation(epoch, metrics)
            ddp_model.train()
        log.plot()
    bar.close()
    checkpoint(run_dir / "final.pt")
    if d.world_size > 1:
        dist.destroy_process_group()
    evals = [r for r in log.records() if r.get("kind") == "eval"]
    last_eval = evals[-1]["metrics"] if evals else None
    return {"step": step, "last": last, "eval": last_eval, "run_dir": str(run_dir)}


def run_evaluation(model: VimGeo, cfg: TrainConfig, dev: torch.device) -> dict[str, Any]:
    from vimgeo.evaluate import evaluate

    model.eval()
    with torch.no_grad():
        return evaluate(
            model,
            Path(cfg.data),
            cfg.img_size,
            model.config.mean,
            model.config.std,
            batch_size=cfg.eval_batch_size,
            device=str(dev),
            num_workers=cfg.num_workers,
        )


def run_validation(model: VimGeo, cfg: TrainConfig, dev: torch.device) -> dict[str, Any]:
    """Validation drone views against validation tiles of a pair folder (``vimgeo.geo_eval``)."""
    from vimgeo.geo_eval import evaluate_model

    with torch.no_grad():
        return evaluate_model(
            model, cfg.data, "val", batch_size=cfg.eval_batch_size, device=dev, num_workers=cfg.num_workers
        )


def print_validation(epoch: int, m: dict[str, Any]) -> None:
    e = m["error"]
    print(
        f"epoch {epoch + 1} val: R@1 {m['R@1']:.2f}  R@5 {m['R@5']:.2f}  AP {m['AP']:.2f}  "
        f"median error {e['median_m']:.2f} m  under one stride {e['under_stride_%']:.1f} %"
    )


def print_metrics(metrics: dict[str, Any]) -> None:
    for direction, by_protocol in metrics.items():
        for protocol, m in by_protocol.items():
            cells = "  ".join(f"{k} {v:6.2f}" for k, v in m.items())
            print(f"{direction:18s} {protocol:10s} {cells}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m vimgeo.train", description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="paper", help="config name in models/configs/ or a .toml path")
    ap.add_argument("--data", help="University-1652 root (train/, test/) or a pair folder (train/, val/)")
    ap.add_argument("--out", help="parent folder of the run folder (default: config's out_dir)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    ap.add_argument("--resume", help="'auto' (the run folder's last.pt, if any) or a checkpoint path")
    ap.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda when available)")
    args = ap.parse_args(argv)
    overrides = list(args.set)
    if args.data:
        overrides.append(f"data={json.dumps(args.data)}")
    if args.out:
        overrides.append(f"out_dir={json.dumps(args.out)}")
    cfg = load_config(args.config, overrides)
    summary = train(cfg, device=args.device, resume=args.resume)
    print(json.dumps({k: v for k, v in summary.items() if k != "eval"}))


if __name__ == "__main__":
    main()
