"""The Vim backbone and VimGeo: shapes, the middle class token, both scan directions, parameter counts."""

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from vimgeo.model import CONFIGS, BidirectionalMamba, Vim, VimConfig, VimGeo, get_config
from vimgeo.scan import selective_scan

pytestmark = pytest.mark.usefixtures("one_torch_thread")


CFG = get_config("test")  # 32 px, patch 8: 16 patches + class token, embed 32, depth 2


def images(batch=2, cfg=CFG, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, cfg.in_chans, cfg.img_size, cfg.img_size, generator=g)


def built(cfg=CFG, seed=0, **kwargs):
    torch.manual_seed(seed)
    return VimGeo(cfg, **kwargs).eval()


def test_shapes_and_unit_norm():
    model = built()
    x = images(3)
    backbone = model.backbone
    assert backbone.forward_features(x).shape == (3, CFG.embed_dim)
    assert backbone.forward_tokens(x).shape == (3, CFG.num_patches + 1, CFG.embed_dim)
    emb = model.encode(x)
    assert emb.shape == (3, model.embedding_dim)
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(3))
    drone, sat = model(drone=x)
    assert sat is None and drone.shape == (3, CFG.embed_dim)
    drone, sat = model(satellite=x)
    assert drone is None
    drone, sat = model(drone=x, satellite=x[:2])
    torch.testing.assert_close(drone[:2], sat, rtol=1e-5, atol=1e-6)  # shared encoder, same images


def test_class_token_sits_in_the_middle():
    model = built()
    backbone = model.backbone
    M = CFG.num_patches
    assert backbone.token_position == M // 2 == 8
    x = images()
    # The embedding is the class-token position of the final token stream.
    torch.testing.assert_close(backbone.forward_features(x), backbone.forward_tokens(x)[:, M // 2])
    # Without blocks the stream is just the inserted tokens plus pos_embed: the class token lands at M // 2.
    backbone.layers = torch.nn.ModuleList()
    tokens = backbone.forward_tokens(x)
    patches = backbone.patch_embed(x)
    pos = backbone.pos_embed[0]
    norm = backbone.norm_f
    torch.testing.assert_close(tokens[:, M // 2], norm(backbone.cls_token[0, 0] + pos[M // 2]).expand(2, -1))
    torch.testing.assert_close(tokens[:, : M // 2], norm(patches[:, : M // 2] + pos[: M // 2]))
    torch.testing.assert_close(tokens[:, M // 2 + 1 :], norm(patches[:, M // 2 :] + pos[M // 2 + 1 :]))


def reference_v2_mixer(mixer: BidirectionalMamba, hidden: torch.Tensor) -> torch.Tensor:
    """The reference v2 mixer written the reference's way: the backward branch flips the sequence, runs the
    forward computation (causal conv: pad both sides by K - 1, keep the first L outputs) and flips back."""
    L = hidden.shape[1]
    xz = (hidden @ mixer.in_proj.weight.T).transpose(1, 2)

    def branch(xz, conv, x_proj, dt_proj, A_log, D):
        x, z = xz.chunk(2, dim=1)
        x = F.silu(conv(x)[..., :L])
        dt, B, C = (x.transpose(1, 2) @ x_proj.weight.T).split(
            [mixer.dt_rank, mixer.d_state, mixer.d_state], -1
        )
        dt = (dt @ dt_proj.weight.T).transpose(1, 2)
        return selective_scan(
            x, dt, -torch.exp(A_log), B.transpose(1, 2), C.transpose(1, 2), D, z=z,
            delta_bias=dt_proj.bias, delta_softplus=True, impl="ref",
        )  # fmt: skip

    out = branch(xz, mixer.conv1d, mixer.x_proj, mixer.dt_proj, mixer.A_log, mixer.D)
    out_b = branch(xz.flip(-1), mixer.conv1d_b, mixer.x_proj_b, mixer.dt_proj_b, mixer.A_b_log, mixer.D_b)
    return ((out + out_b.flip(-1)).transpose(1, 2) / 2) @ mixer.out_proj.weight.T


@pytest.mark.parametrize("impl", ["ref", "chunked"])
def test_mixer_equals_reference_flip_semantics(impl):
    torch.manual_seed(0)
    mixer = BidirectionalMamba(dataclasses.replace(CFG, scan_impl=impl))
    with torch.no_grad():  # make the backward branch differ clearly from the forward one
        for p in (mixer.conv1d_b.weight, mixer.x_proj_b.weight, mixer.dt_proj_b.weight):
            p.add_(torch.randn_like(p) * 0.3)
    hidden = torch.randn(2, 17, CFG.embed_dim)
    torch.testing.assert_close(mixer(hidden), reference_v2_mixer(mixer, hidden), rtol=1e-5, atol=1e-6)


BACKWARD_PARAMS = ["conv1d_b.weight", "conv1d_b.bias", "x_proj_b.weight", "dt_proj_b.weight",
                   "dt_proj_b.bias", "A_b_log", "D_b"]  # fmt: skip
FORWARD_PARAMS = [name.replace("_b", "") for name in BACKWARD_PARAMS]


@pytest.mark.parametrize("name", BACKWARD_PARAMS + FORWARD_PARAMS)
def test_each_direction_contributes(name):
    model = built()
    x = images()
    before = model.encode(x)
    with torch.no_grad():
        p = model.backbone.layers[0].mixer.get_parameter(name)
        p.add_(torch.sign(torch.randn_like(p)))
    assert (model.encode(x) - before).abs().max() > 1e-5, f"changing {name} did not change the output"


def test_first_token_sees_the_last_one():
    # Only the backward scan carries information from later tokens to earlier ones.
    torch.manual_seed(0)
    mixer = BidirectionalMamba(CFG)
    hidden = torch.randn(1, 17, CFG.embed_dim, requires_grad=True)
    mixer(hidden)[0, 0].sum().backward()
    assert hidden.grad[0, -1].abs().sum() > 0
    hidden.grad = None
    mixer(hidden)[0, -1].sum().backward()
    assert hidden.grad[0, 0].abs().sum() > 0


def test_ref_and_chunked_models_agree():
    chunked = built(dataclasses.replace(CFG, scan_impl="chunked"))
    ref = built(dataclasses.replace(CFG, scan_impl="ref"))
    ref.load_state_dict(chunked.state_dict())
    x = images()
    outs, grads = [], []
    for model in (chunked, ref):
        model.zero_grad()
        y = model.encode(x)
        (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
        outs.append(y.detach())
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-5, atol=1e-6)
    for name in grads[1]:
        scale = grads[1][name].abs().max().clamp(min=1e-8)
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-4, atol=1e-5 * scale, msg=name)


def test_share_weights_and_projection_param_counts():
    def count(model):
        return sum(p.numel() for p in model.parameters())

    shared = count(built())
    separate = count(built(share_weights=False))
    assert separate == 2 * shared
    E = CFG.embed_dim
    assert count(built(proj_dim=16)) == shared + E * 16 + 16
    assert count(built(share_weights=False, proj_dim=16)) == 2 * (shared + E * 16 + 16)


def test_projection_and_separate_branches():
    model = built(share_weights=False, proj_dim=16)
    assert model.embedding_dim == 16
    x = images()
    drone, sat = model(drone=x, satellite=x)
    assert drone.shape == sat.shape == (2, 16)
    torch.testing.assert_close(drone.norm(dim=-1), torch.ones(2))
    assert (drone - sat).abs().max() > 1e-3  # different weights per branch
    torch.testing.assert_close(drone, model.encode(x, "drone"))
    torch.testing.assert_close(sat, model.encode(x, "satellite"))
    with pytest.raises(ValueError, match="branch"):
        model.encode(x, "street")


# Exact counts without the classification head; the paper's Vim-S "26 M" includes the 385,000-parameter
# ImageNet head. pos_embed grows with the image: (577 - 197) * 384 = 145,920 more at 384 px.
EXPECTED_PARAMS = {("small", 224): 25_411_584, ("small", 384): 25_557_504, ("tiny", 224): 6_955_008}


@pytest.mark.parametrize("name,img", list(EXPECTED_PARAMS))
def test_paper_sizes_param_count(name, img):
    with torch.device("meta"):
        model = VimGeo(get_config(name, img_size=img))
    n = sum(p.numel() for p in model.parameters())
    assert n == EXPECTED_PARAMS[name, img]
    if name == "small":
        assert 25.3e6 < n < 25.7e6  # the paper's 26.0 M less the 0.385 M head


def test_small_matches_the_paper_architecture():
    cfg = get_config("small", img_size=384)
    assert (cfg.embed_dim, cfg.depth, cfg.patch_size, cfg.d_state, cfg.expand, cfg.d_conv) == (
        384, 24, 16, 16, 2, 4)  # fmt: skip
    assert cfg.dt_rank_value == 24 and cfg.d_inner == 768
    assert (cfg.num_patches, cfg.token_position) == (576, 288)


def test_initialisation_follows_the_reference():
    torch.manual_seed(0)
    mixer = Vim(CFG).layers[0].mixer
    N = CFG.d_state
    for A_log in (mixer.A_log, mixer.A_b_log):
        torch.testing.assert_close(A_log.exp(), torch.arange(1.0, N + 1).expand(CFG.d_inner, N))
    assert (mixer.D == 1).all() and (mixer.D_b == 1).all()
    for dt_proj in (mixer.dt_proj, mixer.dt_proj_b):
        dt = F.softplus(dt_proj.bias)
        assert dt.min() >= 1e-3 * 0.999 and dt.max() <= 0.1 * 1.001
        assert dt_proj.weight.abs().max() <= CFG.dt_rank_value**-0.5
    bound = 1 / math.sqrt(CFG.d_inner) / math.sqrt(CFG.depth)  # kaiming-uniform bound, scaled by depth
    assert mixer.out_proj.weight.abs().max() <= bound


def test_drop_path_is_stochastic_in_training_only():
    model = built(dataclasses.replace(CFG, drop_path_rate=0.5))
    x = images(8)
    model.train()
    torch.manual_seed(1)
    a = model.encode(x)
    torch.manual_seed(2)
    b = model.encode(x)
    assert (a - b).abs().max() > 1e-4
    model.eval()
    torch.testing.assert_close(model.encode(x), model.encode(x))


def test_wrong_input_size_is_refused():
    with pytest.raises(ValueError, match="32x32"):
        built().encode(torch.zeros(1, 3, 48, 48))


def test_config_contract():
    cfg = get_config("small", img_size=384)
    assert cfg.img_size == 384 and CONFIGS["small"].img_size == 224
    assert (cfg.mean, cfg.std, cfg.interpolation) == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "bicubic")
    # Round trip through a checkpoint's plain dict (lists where tuples were) gives the same config.
    as_dict = dataclasses.asdict(cfg)
    as_dict.update(mean=list(cfg.mean), std=list(cfg.std))
    assert VimConfig(**as_dict) == cfg
    with pytest.raises(KeyError, match="known"):
        get_config("huge")
    with pytest.raises(ValueError, match="multiple of patch_size"):
        get_config("small", img_size=200)
    with pytest.raises(ValueError, match="scan_impl"):
        get_config("test", scan_impl="triton")


def test_summary_counts_match_the_paper():
    from vimgeo.summary import count_flops, count_parameters

    with torch.device("meta"):
        tiny = VimGeo(get_config("tiny"))
    assert count_parameters(tiny) == EXPECTED_PARAMS["tiny", 224]
    flops = count_flops(tiny, 224)
    assert flops.total == flops.matmul_conv + flops.scan and flops.scan > 0
    assert 1.45e9 < flops.total / 2 < 1.6e9  # Vim-Ti: 1.5 G multiply-accumulates ("FLOPs" in the Vim paper)
