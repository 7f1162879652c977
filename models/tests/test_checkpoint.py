"""Loading official Vim checkpoints: key names, the wrapper and head, pos_embed resizing, clear refusals."""

import argparse
import dataclasses
import fractions

import pytest
import torch
import torch.nn.functional as F

from vimgeo.model import Vim, VimGeo, checkpoint_filter_fn, get_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")


OLD = get_config("test")  # 32 px, patch 8: a 4 x 4 grid, 16 patches, class token at 8 (the "224" file)
NEW = dataclasses.replace(OLD, img_size=48)  # 6 x 6 grid, 36 patches, class token at 18 (the "384" model)


def official_state_dict(cfg, num_classes=10, seed=0):
    """A state dict with the official Vim (v2, middle class token) key names and shapes, written from the
    architecture's numbers rather than from our model, plus the classification head."""
    g = torch.Generator().manual_seed(seed)
    E, Di, N, K = cfg.embed_dim, cfg.d_inner, cfg.d_state, cfg.d_conv
    R, P, M = cfg.dt_rank_value, cfg.patch_size, cfg.num_patches
    shapes = {
        "cls_token": (1, 1, E),
        "pos_embed": (1, M + 1, E),
        "patch_embed.proj.weight": (E, cfg.in_chans, P, P),
        "patch_embed.proj.bias": (E,),
        "norm_f.weight": (E,),
        "head.weight": (num_classes, E),
        "head.bias": (num_classes,),
    }
    for i in range(cfg.depth):
        p = f"layers.{i}."
        shapes[p + "norm.weight"] = (E,)
        shapes[p + "mixer.in_proj.weight"] = (2 * Di, E)
        shapes[p + "mixer.out_proj.weight"] = (E, Di)
        for s in ("", "_b"):
            shapes[p + f"mixer.conv1d{s}.weight"] = (Di, 1, K)
            shapes[p + f"mixer.conv1d{s}.bias"] = (Di,)
            shapes[p + f"mixer.x_proj{s}.weight"] = (R + 2 * N, Di)
            shapes[p + f"mixer.dt_proj{s}.weight"] = (Di, R)
            shapes[p + f"mixer.dt_proj{s}.bias"] = (Di,)
            shapes[p + f"mixer.A{s}_log"] = (Di, N)
            shapes[p + f"mixer.D{s}"] = (Di,)
    return {k: torch.randn(*shape, generator=g) for k, shape in shapes.items()}


def test_our_names_are_the_official_names():
    official = official_state_dict(OLD)
    ours = Vim(OLD).state_dict()
    assert set(ours) == set(official) - {"head.weight", "head.bias"}
    for k, v in ours.items():
        assert tuple(v.shape) == tuple(official[k].shape), k


def test_load_into_a_bigger_grid():
    official = official_state_dict(OLD)
    E = OLD.embed_dim
    # pos_embed: a per-channel constant over the patch grid (must survive resizing), a distinct class entry.
    constant = torch.linspace(-1, 1, E)
    pos = constant.expand(1, OLD.num_patches + 1, E).clone()
    pos[0, OLD.token_position] = 7.0
    official["pos_embed"] = pos
    checkpoint = {"model": official, "epoch": 299, "args": argparse.Namespace(lr=1e-3)}

    model = VimGeo(NEW)
    result = model.load_pretrained(checkpoint)
    assert result.missing_keys == [] and result.unexpected_keys == []

    loaded = model.backbone.state_dict()
    new_pos = loaded["pos_embed"][0]
    assert new_pos.shape == (NEW.num_patches + 1, E) == (37, E)
    assert NEW.token_position == 18 and OLD.token_position == 8
    torch.testing.assert_close(new_pos[18], torch.full((E,), 7.0))  # class entry at the NEW middle
    patches = torch.cat((new_pos[:18], new_pos[19:]))
    torch.testing.assert_close(patches, constant.expand(36, E), rtol=0, atol=1e-5)
    for k, v in loaded.items():
        if k != "pos_embed":
            torch.testing.assert_close(v, official[k], rtol=0, atol=0, msg=k)


def test_pos_embed_grid_is_bicubic_resized_around_the_class_token():
    official = official_state_dict(OLD)
    filtered = checkpoint_filter_fn({"model": official}, Vim(NEW))
    old, new = official["pos_embed"][0], filtered["pos_embed"][0]
    old_grid = torch.cat((old[:8], old[9:])).T.reshape(1, -1, 4, 4)
    expected = F.interpolate(old_grid, size=(6, 6), mode="bicubic", align_corners=False)
    expected = expected.reshape(-1, 36).T
    torch.testing.assert_close(torch.cat((new[:18], new[19:])), expected)
    torch.testing.assert_close(new[18], old[8])


def test_same_grid_loads_unchanged_and_strict():
    official = official_state_dict(OLD)
    model = Vim(OLD)
    model.load_state_dict(checkpoint_filter_fn(official, model), strict=True)
    torch.testing.assert_close(model.pos_embed, official["pos_embed"], rtol=0, atol=0)


def test_wrong_shape_names_the_key():
    official = official_state_dict(OLD)
    official["layers.1.mixer.x_proj_b.weight"] = torch.zeros(3, OLD.d_inner)
    with pytest.raises(ValueError, match=r"layers\.1\.mixer\.x_proj_b\.weight"):
        VimGeo(NEW).load_pretrained({"model": official})


def test_other_patch_size_is_refused():
    official = official_state_dict(dataclasses.replace(OLD, patch_size=16))
    with pytest.raises(ValueError, match=r"patch_embed\.proj\.weight"):
        VimGeo(NEW).load_pretrained(official)


def test_missing_key_is_refused():
    official = official_state_dict(OLD)
    del official["layers.0.mixer.A_b_log"]  # e.g. a one-directional checkpoint
    with pytest.raises(ValueError, match=r"A_b_log"):
        VimGeo(NEW).load_pretrained(official)


def test_projection_is_the_only_missing_part():
    model = VimGeo(NEW, proj_dim=16)
    result = model.load_pretrained(official_state_dict(OLD))
    assert sorted(result.missing_keys) == ["proj.bias", "proj.weight"] and result.unexpected_keys == []


def test_separate_branches_both_load(tmp_path):
    official = official_state_dict(OLD)
    official = {f"module.{k}": v for k, v in official.items()}  # saved from DistributedDataParallel
    path = tmp_path / "vim_t.pth"
    torch.save({"model": official, "args": argparse.Namespace(model="vim_tiny"), "epoch": 3}, path)
    model = VimGeo(NEW, share_weights=False)
    model.load_pretrained(path)
    key = "layers.1.mixer.dt_proj_b.bias"
    for backbone in (model.backbone, model.backbone_satellite):
        torch.testing.assert_close(backbone.state_dict()[key], official[f"module.{key}"])


def test_unreadable_file_is_a_clear_error(tmp_path):
    path = tmp_path / "odd.pth"
    torch.save({"model": {}, "extra": fractions.Fraction(1, 3)}, path)  # not plain data
    with pytest.raises(ValueError, match="odd.pth"):
        VimGeo(NEW).load_pretrained(path)
