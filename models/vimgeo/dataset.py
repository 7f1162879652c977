"""University-1652 in its official directory layout, plus a tiny synthetic stand-in for tests.

Layout (the folder names are the official ones; each ``<id>`` is a zero-padded building id like ``0839``)::

    root/train/drone/<id>/image-01.jpeg ...     ~54 drone views per building
    root/train/satellite/<id>/<id>.jpg          one satellite tile per building
    root/train/street/, root/train/google/      not used
    root/test/query_drone/<id>/                 drone -> satellite: queries
    root/test/gallery_satellite/<id>/           ... gallery (includes distractor buildings)
    root/test/query_satellite/<id>/             satellite -> drone: queries
    root/test/gallery_drone/<id>/               ... gallery (includes distractor buildings)

- ``TrainPairs``: one item per drone image, with its building's satellite tile (Sample4Geo's pairing).
- ``UniqueIdBatchSampler``: batches in which no building id repeats (every off-diagonal pair is a true
  negative for the contrastive loss), covering every drone image once per epoch where possible, DDP-aware.
- ``NeighbourBatchSampler``: the same, with each batch built from groups of neighbouring tiles (hard
  negatives), for pair folders whose tiles have positions.
- ``GalleryFolder``: a query or gallery folder for evaluation, labels = integer building ids.
- ``make_synthetic_university1652``: writes a tiny learnable dataset in exactly that layout.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from torch import Tensor
from torch.utils.data import Dataset, Sampler

from vimgeo.transforms import JointHorizontalFlip

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
TEST_FOLDERS = ("query_drone", "gallery_satellite", "query_satellite", "gallery_drone")


def _require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise FileNotFoundError(f"University-1652 {what} folder not found: {path}")
    return path


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _id_folders(folder: Path) -> list[Path]:
    """Sub-folders of ``folder`` (one per building), sorted by name; ValueError if none."""
    subs = sorted(p for p in folder.iterdir() if p.is_dir())
    if not subs:
        raise ValueError(f"no building-id sub-folders in {folder}")
    return subs


def _load_rgb(path: Path) -> Image.Image:
    with Image.open(path) as img:
        return img.convert("RGB")


class TrainPairs(Dataset):
    """(drone image, its building's satellite tile) pairs from ``root/train``.

    Items: ``(drone_tensor, sat_tensor, label)`` where ``label`` indexes ``self.ids`` (the sorted building
    ids). ``self.labels[i]`` is item i's label, for ``UniqueIdBatchSampler``. A pair is flipped left-right
    together with probability ``flip_prob``, decided by ``(seed, epoch, index)`` (call ``set_epoch``).
    If a building has several satellite images the first by name is used (the official set has one).
    """

    def __init__(
        self,
        root: str | Path,
        drone_tf: Callable[[Image.Image], Tensor],
        sat_tf: Callable[[Image.Image], Tensor],
        flip_prob: float = 0.5,
        seed: int = 0,
    ):
        root = Path(root)
        drone_dir = _require_dir(root / "train" / "drone", "train/drone")
        sat_dir = _require_dir(root / "train" / "satellite", "train/satellite")
        self.ids: list[str] = []
        self.samples: list[tuple[Path, Path, int]] = []  # (drone path, satellite path, label)
        for folder in _id_folders(drone_dir):
            drones = _images(folder)
            if not drones:
                continue
            sat_folder = sat_dir / folder.name
            sats = _images(sat_folder) if sat_folder.is_dir() else []
            if not sats:
                raise ValueError(
                    f"building {folder.name} has drone images but no satellite image in {sat_folder}"
                )
            label = len(self.ids)
            self.ids.append(folder.name)
            self.samples.extend((d, sats[0], label) for d in drones)
        if not self.samples:
            raise ValueError(f"no drone images under {drone_dir}")
        self.labels = [s[2] for s in self.samples]
        self.drone_tf, self.sat_tf = drone_tf, sat_tf
        self.flip = JointHorizontalFlip(flip_prob)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor, int]:
        drone_path, sat_path, label = self.samples[index]
        drone, sat = _load_rgb(drone_path), _load_rgb(sat_path)
        rng = np.random.default_rng((self.seed, self.epoch, index))
        drone, sat = self.flip(drone, sat, rng)
        return self.drone_tf(drone), self.sat_tf(sat), label


class UniqueIdBatchSampler(Sampler[list[int]]):
    """Batches of dataset indices in which no label (building id) appears twice.

    Each epoch plans global batches of ``batch_size * world_size`` distinct labels and gives rank r the r-th
    slice of each, so the ranks' shares are disjoint, every rank gets the same number of batches (DDP steps
    in lock-step), and labels stay unique across the whole global batch (features may be all-gathered).

    Planning is greedy: each global batch takes the labels with the most items left (random tie-break),
    which yields the largest possible number of full batches, so every item is visited once per epoch
    except at most a remainder that cannot form a unique-id batch. With ``drop_last=False`` that remainder
    still comes, in smaller (still unique) batches split evenly over the ranks, down to batches of
    ``world_size`` items (a smaller tail would leave a rank without a batch and stall DDP; it is dropped).
    ``batch_size`` is per rank. Deterministic in ``(seed, epoch)``; call ``set_epoch``.
    """

    def __init__(
        self,
        labels: Sequence[int],
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = True,
        rank: int = 0,
        world_size: int = 1,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
        self.labels = np.asarray(labels, dtype=np.int64)
        n_labels = len(np.unique(self.labels))
        if drop_last and n_labels < batch_size * world_size:
            raise ValueError(
                f"a batch of {batch_size} x {world_size} rank(s) needs that many distinct building ids, "
                f"but the dataset has only {n_labels}"
            )
        self.batch_size, self.shuffle, self.seed, self.drop_last = batch_size, shuffle, seed, drop_last
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self._plan_cache: tuple[int, list[list[int]]] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _queue_labels(self) -> Sequence[int]:
        """The labels that get a queue, in queue order: batches are lists of queue indices."""
        return np.unique(self.labels)

    def _choose(
        self, alive: np.ndarray, remaining: np.ndarray, want: int, rng: np.random.Generator
    ) -> np.ndarray:
        """The ``want`` queues (of those ``alive``) that give one item each to the next global batch."""
        # most items left first; ties broken at random (shuffle) or by label order
        tie = rng.random(len(alive)) if self.shuffle else -np.arange(len(alive)) / (len(alive) + 1)
        order = np.lexsort((-tie, -remaining[alive]))
        return alive[order[:want]]

    def _global_batches(self) -> list[list[int]]:
        rng = np.random.default_rng((self.seed, self.epoch))
        queues = []  # per label: its item indices, in visiting order
        for lab in self._queue_labels():
            idx = np.flatnonzero(self.labels == lab)
            queues.append(list(rng.permutation(idx) if self.shuffle else idx))
        remaining = np.array([len(q) for q in queues], dtype=np.int64)
        heads = np.zeros(len(queues), dtype=np.int64)
        size = self.batch_size * self.world_size
        batches = []
        while True:
            alive = np.flatnonzero(remaining > 0)
            if len(alive) < (size if self.drop_last else self.world_size):
                break
            chosen = self._choose(alive, remaining, min(size, len(alive)), rng)
            if self.shuffle:
                chosen = rng.permutation(chosen)
            batches.append([int(queues[c][heads[c]]) for c in chosen])
            heads[chosen] += 1
            remaining[chosen] -= 1
        return batches

    def _plan(self) -> list[list[int]]:
        if self._plan_cache is None or self._plan_cache[0] != self.epoch:
            shares = []
            for batch in self._global_batches():
                # even split: slice sizes differ by at most one, none empty (a batch has >= world_size items)
                bounds = np.linspace(0, len(batch), self.world_size + 1).round().astype(int)
                shares.append(batch[bounds[self.rank] : bounds[self.rank + 1]])
            self._plan_cache = (self.epoch, shares)
        return self._plan_cache[1]

    def __iter__(self) -> Iterator[list[int]]:
        yield from (list(b) for b in self._plan())

    def __len__(self) -> int:
        return len(self._plan())


class NeighbourBatchSampler(UniqueIdBatchSampler):
    """Unique-id batches made of spatial neighbourhoods: hard negatives for the contrastive loss (GPS
    sampling, as Sample4Geo does on VIGOR).

    With random batches nearly every negative tile is far away and easy; what a tile cache actually has
    to tell apart are the neighbouring tiles, which overlap the right one by half. So each global batch is
    built from groups of ``group`` labels: a seed label (most items left first, random tie-break, as the
    parent) plus the ``group - 1`` labels nearest to it (``positions``, metres, one row per label; labels
    with a non-finite position, or on another orthophoto, are made far by the caller) that still have items
    and are not in the batch yet. Labels stay unique within a batch and every item is still visited once
    per epoch where possible. Deterministic in ``(seed, epoch)``.
    """

    def __init__(self, labels: Sequence[int], positions: np.ndarray, batch_size: int, group: int, **kw):
        super().__init__(labels, batch_size, **kw)
        positions = np.asarray(positions, dtype=np.float64)
        n_labels = int(self.labels.max()) + 1 if len(self.labels) else 0
        if positions.ndim != 2 or positions.shape[0] != n_labels:
            raise ValueError(f"positions must be [{n_labels} labels, dims], got shape {positions.shape}")
        if group < 1:
            raise ValueError(f"group must be >= 1, got {group}")
        self.positions, self.group = positions, group
        diff = positions[:, None, :] - positions[None, :, :]
        dist = np.sqrt((diff * diff).sum(axis=-1))
        dist[~np.isfinite(dist)] = np.inf  # an unknown position is far from everything
        np.fill_diagonal(dist, -1.0)  # ... but a label is always its own nearest
        self._near = np.argsort(dist, axis=1, kind="stable")  # per label: labels by distance, itself first

    def _queue_labels(self) -> Sequence[int]:
        return range(len(self._near))  # queue index == label, as ``_near`` is indexed

    def _choose(
        self, alive: np.ndarray, remaining: np.ndarray, want: int, rng: np.random.Generator
    ) -> np.ndarray:
        taken = np.zeros(len(remaining), dtype=bool)
        chosen: list[int] = []
        while len(chosen) < want:
            free = alive[~taken[alive]]
            tie = rng.random(len(free)) if self.shuffle else -np.arange(len(free)) / (len(free) + 1)
            seed_label = int(free[np.lexsort((-tie, -remaining[free]))[0]])
            added = 0
            for lab in self._near[seed_label]:  # the seed itself first (distance 0)
                if added == self.group or len(chosen) == want:
                    break
                if remaining[lab] > 0 and not taken[lab]:
                    taken[lab] = True
                    chosen.append(int(lab))
                    added += 1
        return np.array(chosen, dtype=np.int64)


class GalleryFolder(Dataset):
    """All images under ``folder/<id>/`` for evaluation: items ``(tensor, building_id)``.

    ``labels[i]`` is ``int(<id>)`` and ``paths[i]`` the image file, in folder-then-file name order.
    """

    def __init__(self, folder: str | Path, tf: Callable[[Image.Image], Tensor]):
        folder = _require_dir(Path(folder), "evaluation")
        self.folder, self.tf = folder, tf
        self.paths: list[Path] = []
        self.labels: list[int] = []
        for sub in _id_folders(folder):
            try:
                label = int(sub.name)
            except ValueError:
                raise ValueError(f"building folder name is not an integer id: {sub}") from None
            images = _images(sub)
            self.paths.extend(images)
            self.labels.extend([label] * len(images))
        if not self.paths:
            raise ValueError(f"no images under {folder}")

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return self.tf(_load_rgb(self.paths[index])), self.labels[index]


# ---------------------------------------------------------------------------------------------------------
# Synthetic University-1652


def _satellite_tile(rng: np.random.Generator, size: int) -> Image.Image:
    """A distinct random 'orthophoto': coloured ground, a few buildings (rectangles) and trees (ellipses)."""
    base = tuple(int(v) for v in rng.integers(40, 200, 3))
    img = Image.new("RGB", (size, size), base)
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(6, 11))):
        x0, y0 = rng.integers(0, size, 2)
        w, h = rng.integers(size // 8, size // 2, 2)
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        box = [int(x0), int(y0), int(x0 + w), int(y0 + h)]
        (draw.rectangle if rng.random() < 0.6 else draw.ellipse)(box, fill=colour)
    arr = np.asarray(img, dtype=np.float32) + rng.normal(0, 6, (size, size, 3))  # ground texture
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8))


def _drone_view(tile: Image.Image, rng: np.random.Generator, size: int) -> Image.Image:
    """A perturbed view of a tile: small rotation, random crop, colour shift, blur, noise."""
    view = tile.rotate(float(rng.uniform(-15, 15)), resample=Image.Resampling.BILINEAR, expand=False)
    side = int(size * rng.uniform(0.65, 0.9))
    x0, y0 = (int(v) for v in rng.integers(0, size - side + 1, 2))
    view = view.crop((x0, y0, x0 + side, y0 + side)).resize((size, size), Image.Resampling.BILINEAR)
    if rng.random() < 0.5:
        view = view.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 1.2))))
    arr = np.asarray(view, dtype=np.float32)
    arr = arr * rng.uniform(0.85, 1.15, 3) + rng.uniform(-15, 15, 3) + rng.normal(0, 5, arr.shape)
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8))


def make_synthetic_university1652(
    root: str | Path,
    n_train: int = 8,
    n_test: int = 6,
    n_distractors: int = 3,
    drones_per_id: int = 4,
    size: int = 64,
    seed: int = 0,
) -> Path:
    """Write a tiny dataset in the official University-1652 layout and return ``root``.

    Building ids ``0001..`` (4 digits): the first ``n_train`` are the training split, the next ``n_test``
    the test split, the last ``n_distractors`` appear only in ``gallery_satellite`` and ``gallery_drone``
    (the real set's 250 extra buildings). Each building gets a distinct random tile (``<id>.jpg``); its
    drone images (``image-NN.jpeg``) are perturbed views of that tile, so the match is learnable. As in the
    real set, ``query_drone`` and ``gallery_drone`` hold the same test drone images, ``query_satellite``
    and ``gallery_satellite`` the same tiles. ``train/street`` and ``train/google`` get one image each.
    """
    if min(n_train, n_test, drones_per_id, size) < 1 or n_distractors < 0:
        raise ValueError("n_train, n_test, drones_per_id and size must be >= 1, n_distractors >= 0")
    root = Path(root)
    rng = np.random.default_rng(seed)
    n_total = n_train + n_test + n_distractors
    ids = [f"{i:04d}" for i in range(1, n_total + 1)]
    train_ids = ids[:n_train]
    test_ids = ids[n_train : n_train + n_test]

    def save(img: Image.Image, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        img.save(path, quality=95)

    for bid in ids:
        tile = _satellite_tile(rng, size)
        drones = [_drone_view(tile, rng, size) for _ in range(drones_per_id)]
        if bid in train_ids:
            splits = [("train", "satellite", "train", "drone")]
            save(tile, root / "train" / "street" / bid / "0.jpg")
            save(tile.transpose(Image.Transpose.FLIP_TOP_BOTTOM), root / "train" / "google" / bid / "0.png")
        elif bid in test_ids:
            splits = [
                ("test", "query_satellite", "test", "query_drone"),
                ("test", "gallery_satellite", "test", "gallery_drone"),
            ]
        else:
            splits = [("test", "gallery_satellite", "test", "gallery_drone")]
        for sat_split, sat_name, drone_split, drone_name in splits:
            save(tile, root / sat_split / sat_name / bid / f"{bid}.jpg")
            for k, view in enumerate(drones, start=1):
                save(view, root / drone_split / drone_name / bid / f"image-{k:02d}.jpeg")
    return root
