"""University-1652 layout, pairs, the unique-id batch sampler, transforms and MixUp."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vimgeo.dataset import GalleryFolder, NeighbourBatchSampler, TrainPairs, UniqueIdBatchSampler
from vimgeo.transforms import IMAGENET_MEAN, IMAGENET_STD, RandomRot90, build_transforms, mixup_batch

EVAL_TF, _ = build_transforms(32, train=False)


def ids_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir())


# --- synthetic layout ---------------------------------------------------------------------------------------


def test_synthetic_set_has_the_official_layout(tiny_university, tiny_sizes):
    root, sizes = tiny_university, tiny_sizes
    n_train, n_test, n_dis, per = (
        sizes["n_train"],
        sizes["n_test"],
        sizes["n_distractors"],
        sizes["drones_per_id"],
    )
    train_ids = [f"{i:04d}" for i in range(1, n_train + 1)]
    test_ids = [f"{i:04d}" for i in range(n_train + 1, n_train + n_test + 1)]
    distractors = [f"{i:04d}" for i in range(n_train + n_test + 1, n_train + n_test + n_dis + 1)]
    assert ids_in(root / "train" / "drone") == train_ids == ids_in(root / "train" / "satellite")
    assert ids_in(root / "train" / "street") == train_ids and ids_in(root / "train" / "google") == train_ids
    assert ids_in(root / "test" / "query_drone") == test_ids == ids_in(root / "test" / "query_satellite")
    assert ids_in(root / "test" / "gallery_satellite") == test_ids + distractors
    assert ids_in(root / "test" / "gallery_drone") == test_ids + distractors
    for bid in train_ids:
        assert [p.name for p in (root / "train" / "satellite" / bid).iterdir()] == [f"{bid}.jpg"]
        drones = sorted(p.name for p in (root / "train" / "drone" / bid).iterdir())
        assert drones == [f"image-{k:02d}.jpeg" for k in range(1, per + 1)]
    with Image.open(root / "train" / "drone" / "0001" / "image-01.jpeg") as img:
        assert img.format == "JPEG" and img.size == (sizes["size"], sizes["size"])


def test_synthetic_set_is_deterministic(tmp_path):
    from vimgeo.dataset import make_synthetic_university1652

    a = make_synthetic_university1652(tmp_path / "a", n_train=2, n_test=1, n_distractors=1, drones_per_id=1)
    b = make_synthetic_university1652(tmp_path / "b", n_train=2, n_test=1, n_distractors=1, drones_per_id=1)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)


# --- TrainPairs and GalleryFolder ---------------------------------------------------------------------------


def test_train_pairs_one_item_per_drone_image(tiny_university, tiny_sizes):
    sizes = tiny_sizes
    pairs = TrainPairs(tiny_university, EVAL_TF, EVAL_TF, flip_prob=0.0)
    assert len(pairs) == sizes["n_train"] * sizes["drones_per_id"]
    assert pairs.ids == [f"{i:04d}" for i in range(1, sizes["n_train"] + 1)]
    assert Counter(pairs.labels) == dict.fromkeys(range(sizes["n_train"]), sizes["drones_per_id"])
    drone, sat, label = pairs[5]
    assert drone.shape == sat.shape == (3, 32, 32) and drone.dtype == torch.float32
    drone_path, sat_path, _ = pairs.samples[5]
    assert label == 1 and drone_path.parent.name == sat_path.parent.name == "0002"
    assert sat_path.name == "0002.jpg"  # street/google never used
    assert all("drone" in str(d) and "satellite" in str(s) for d, s, _ in pairs.samples)


def test_joint_flip_flips_both_and_is_reproducible(tiny_university):
    plain = TrainPairs(tiny_university, EVAL_TF, EVAL_TF, flip_prob=0.0)
    flipped = TrainPairs(tiny_university, EVAL_TF, EVAL_TF, flip_prob=1.0)
    d0, s0, _ = plain[3]
    d1, s1, _ = flipped[3]
    assert torch.allclose(d1, d0.flip(-1), atol=1e-5) and torch.allclose(s1, s0.flip(-1), atol=1e-5)
    half = TrainPairs(tiny_university, EVAL_TF, EVAL_TF, flip_prob=0.5, seed=3)
    first = [torch.equal(half[i][0], plain[i][0]) for i in range(len(half))]
    assert first == [torch.equal(half[i][0], plain[i][0]) for i in range(len(half))]  # same seed+epoch
    assert 0 < sum(first) < len(first)
    half.set_epoch(1)
    assert first != [torch.equal(half[i][0], plain[i][0]) for i in range(len(half))]


def test_gallery_folder_reads_labels_and_paths(tiny_university, tiny_sizes):
    sizes = tiny_sizes
    gallery = GalleryFolder(tiny_university / "test" / "gallery_satellite", EVAL_TF)
    n = sizes["n_test"] + sizes["n_distractors"]
    assert len(gallery) == n and gallery.labels == list(range(sizes["n_train"] + 1, sizes["n_train"] + n + 1))
    assert [p.parent.name for p in gallery.paths] == [f"{lab:04d}" for lab in gallery.labels]
    x, label = gallery[0]
    assert x.shape == (3, 32, 32) and label == gallery.labels[0]


def test_missing_or_malformed_folders_are_named(tmp_path, tiny_university):
    with pytest.raises(FileNotFoundError, match="train/drone"):
        TrainPairs(tmp_path, EVAL_TF, EVAL_TF)
    (tmp_path / "train" / "drone" / "0001").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="train/satellite"):
        TrainPairs(tmp_path, EVAL_TF, EVAL_TF)
    with pytest.raises(FileNotFoundError, match="query_drone"):
        GalleryFolder(tmp_path / "test" / "query_drone", EVAL_TF)
    empty = tmp_path / "test" / "gallery_drone"
    empty.mkdir(parents=True)
    with pytest.raises(ValueError, match="gallery_drone"):
        GalleryFolder(empty, EVAL_TF)
    (empty / "north").mkdir()
    with pytest.raises(ValueError, match="north"):
        GalleryFolder(empty, EVAL_TF)
    # a building with drone views but no satellite tile
    Image.new("RGB", (8, 8)).save(tmp_path / "train" / "drone" / "0001" / "image-01.jpeg")
    (tmp_path / "train" / "satellite").mkdir()
    with pytest.raises(ValueError, match="0001"):
        TrainPairs(tmp_path, EVAL_TF, EVAL_TF)


# --- UniqueIdBatchSampler -----------------------------------------------------------------------------------

# 9 buildings with uneven numbers of drone images (as in the real set), shuffled item order
LABELS = list(np.random.default_rng(0).permutation(np.repeat(np.arange(9), [5, 5, 4, 4, 4, 3, 3, 2, 1])))


def test_batches_have_unique_ids_and_cover_every_item():
    sampler = UniqueIdBatchSampler(LABELS, batch_size=4, seed=1)
    batches = list(sampler)
    assert len(batches) == len(sampler) and all(len(b) == 4 for b in batches)
    assert all(len({LABELS[i] for i in b}) == len(b) for b in batches)
    visited = [i for b in batches for i in b]
    assert len(visited) == len(set(visited))
    assert len(visited) == len(LABELS) - len(LABELS) % 4  # 31 items: 7 full batches, 3 left over


def test_drop_last_false_visits_everything_once():
    batches = list(UniqueIdBatchSampler(LABELS, batch_size=4, seed=1, drop_last=False))
    assert sorted(i for b in batches for i in b) == list(range(len(LABELS)))
    assert all(len({LABELS[i] for i in b}) == len(b) for b in batches)


def test_sampler_is_deterministic_per_seed_and_epoch():
    a, b = UniqueIdBatchSampler(LABELS, 4, seed=5), UniqueIdBatchSampler(LABELS, 4, seed=5)
    assert list(a) == list(b)
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first
    assert list(UniqueIdBatchSampler(LABELS, 4, seed=6)) != first
    ordered = UniqueIdBatchSampler(LABELS, 4, shuffle=False)
    assert list(ordered) == list(UniqueIdBatchSampler(LABELS, 4, shuffle=False, seed=9))


def test_ddp_shares_are_disjoint_equal_in_number_and_globally_unique():
    world = 2
    shards = [list(UniqueIdBatchSampler(LABELS, 2, seed=3, rank=r, world_size=world)) for r in range(world)]
    assert len(shards[0]) == len(shards[1]) > 0
    seen = [set(i for b in s for i in b) for s in shards]
    assert not seen[0] & seen[1]
    for step in zip(*shards, strict=True):  # one optimiser step: all ranks' batches together
        merged = [i for b in step for i in b]
        assert len({LABELS[i] for i in merged}) == len(merged) == 2 * world
    assert len(seen[0] | seen[1]) == len(LABELS) - len(LABELS) % 4
    # the same global plan as a single process with the global batch size
    single = list(UniqueIdBatchSampler(LABELS, 4, seed=3))
    assert [sorted(a + b) for a, b in zip(*shards, strict=True)] == [sorted(b) for b in single]


def test_ddp_tail_without_drop_last_gives_every_rank_the_same_number_of_batches():
    shards = [
        list(UniqueIdBatchSampler(LABELS, 3, seed=0, drop_last=False, rank=r, world_size=3)) for r in range(3)
    ]
    assert len({len(s) for s in shards}) == 1 and all(all(b for b in s) for s in shards)


def test_sampler_rejects_batches_larger_than_the_number_of_ids():
    with pytest.raises(ValueError, match="distinct building ids"):
        UniqueIdBatchSampler(LABELS, batch_size=5, world_size=2)
    with pytest.raises(ValueError, match="rank"):
        UniqueIdBatchSampler(LABELS, batch_size=2, rank=2, world_size=2)


# --- NeighbourBatchSampler --------------------------------------------------------------------------------

# 24 tiles, 3 views each, on two "orthophotos" far apart: tiles 0-11 on a line at x = 10 m * i, tiles 12-23
# on a line 1000 km away; tile 5's position is unknown.
GEO_LABELS = list(np.random.default_rng(1).permutation(np.repeat(np.arange(24), 3)))
GEO_POS = np.array([[10.0 * (i % 12) + (1e6 if i >= 12 else 0.0), 0.0] for i in range(24)])
GEO_POS[5] = np.nan


def test_neighbour_batches_are_unique_cover_every_item_and_group_neighbours():
    sampler = NeighbourBatchSampler(GEO_LABELS, GEO_POS, batch_size=8, group=4, seed=2)
    batches = list(sampler)
    assert len(batches) == len(sampler) == len(GEO_LABELS) // 8 and all(len(b) == 8 for b in batches)
    visited = [i for b in batches for i in b]
    assert sorted(visited) == list(range(len(GEO_LABELS)))  # 72 items, 9 full batches, nothing left
    for b in batches:
        labels = [GEO_LABELS[i] for i in b]
        assert len(set(labels)) == len(labels)
    # groups of neighbours: in the first batch of an epoch every tile has another batch tile within 30 m
    # (its group), and no group mixes the two orthophotos, so each side holds whole groups (4 or 8 tiles)
    first = [GEO_LABELS[i] for i in batches[0]]
    for lab in first:
        if lab != 5:
            others = [o for o in first if o not in (lab, 5)]
            assert min(abs(GEO_POS[o, 0] - GEO_POS[lab, 0]) for o in others) <= 30.0
    assert sum(lab >= 12 for lab in first) % 4 == 0


def test_neighbour_batches_hold_more_near_pairs_than_random_batches():
    def near_pairs(batches):
        count = 0
        for b in batches:
            labels = [GEO_LABELS[i] for i in b]
            count += sum(abs(GEO_POS[p, 0] - GEO_POS[q, 0]) <= 20.0 for p in labels for q in labels if p < q)
        return count

    geo = list(NeighbourBatchSampler(GEO_LABELS, GEO_POS, batch_size=8, group=4, seed=3))
    plain = list(UniqueIdBatchSampler(GEO_LABELS, batch_size=8, seed=3))
    assert near_pairs(geo) > 1.5 * near_pairs(plain)  # 74 vs 43 at these seeds


def test_neighbour_sampler_is_deterministic_and_checks_its_arguments():
    a = NeighbourBatchSampler(GEO_LABELS, GEO_POS, 8, 4, seed=5)
    assert list(a) == list(NeighbourBatchSampler(GEO_LABELS, GEO_POS, 8, 4, seed=5))
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first
    with pytest.raises(ValueError, match="positions"):
        NeighbourBatchSampler(GEO_LABELS, GEO_POS[:10], 8, 4)
    with pytest.raises(ValueError, match="group"):
        NeighbourBatchSampler(GEO_LABELS, GEO_POS, 8, 0)


# --- transforms and MixUp -----------------------------------------------------------------------------------


def test_eval_transform_resizes_and_normalises():
    img = Image.new("RGB", (50, 40), (255, 128, 0))
    x = EVAL_TF(img)
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    want = [(v / 255 - m) / s for v, m, s in zip((255, 128, 0), IMAGENET_MEAN, IMAGENET_STD, strict=True)]
    assert torch.allclose(x.mean(dim=(1, 2)), torch.tensor(want), atol=1e-4)


@pytest.mark.parametrize("kind", ["traditional", "augmix"])
def test_train_transforms_give_fixed_size_tensors(kind):
    torch.manual_seed(0)
    drone_tf, sat_tf = build_transforms((48, 32), kind=kind)
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (70, 60, 3), dtype=np.uint8))
    for _ in range(5):
        for tf in (drone_tf, sat_tf):
            x = tf(img)
            assert x.shape == (3, 48, 32) and torch.isfinite(x).all()
    with pytest.raises(ValueError, match="'cutmix'"):
        build_transforms(32, kind="cutmix")


def test_satellite_rotation_takes_all_four_quarter_turns():
    torch.manual_seed(0)
    x = torch.arange(16.0).reshape(1, 4, 4)
    rot = RandomRot90()
    seen = {tuple(rot(x).flatten().tolist()) for _ in range(40)}
    assert seen == {tuple(torch.rot90(x, k, dims=(-2, -1)).flatten().tolist()) for k in range(4)}


def test_mixup_targets_are_the_shared_content_of_the_mixed_pairs():
    torch.manual_seed(0)
    drone, sat = torch.randn(6, 3, 4, 4), torch.randn(6, 3, 4, 4)
    d1, s1, t1 = mixup_batch(drone, sat, alpha=0.4, generator=torch.Generator().manual_seed(7))
    d2, s2, t2 = mixup_batch(drone, sat, alpha=0.4, generator=torch.Generator().manual_seed(7))
    assert torch.equal(d1, d2) and torch.equal(s1, s2) and torch.equal(t1, t2)
    # recover the mixing matrix A (drone_m = A @ drone) by least squares; satellites use the same A
    a = torch.linalg.lstsq(drone.flatten(1).T, d1.flatten(1).T).solution.T  # [6, 6]
    assert torch.allclose(a @ sat.flatten(1), s1.flatten(1), atol=1e-4)
    assert torch.allclose(a.sum(1), torch.ones(6), atol=1e-4) and (a.diagonal() >= 0.5 - 1e-4).all()
    assert ((a.abs() > 1e-4).sum(1) <= 2).all()  # each item: itself plus one partner
    assert torch.allclose(t1, a @ a.T, atol=1e-4)
    assert torch.allclose(t1, t1.T) and torch.allclose(t1.sum(1), torch.ones(6), atol=1e-6)
    same_d, same_s, eye = mixup_batch(drone, sat, alpha=0.0)
    assert same_d is drone and same_s is sat and torch.equal(eye, torch.eye(6))
