"""The selective scan: the chunked form and its hand-written backward against the sequential reference."""

import itertools

import pytest
import torch

from vimgeo.scan import cuda_kernel_available, selective_scan

pytestmark = pytest.mark.usefixtures("one_torch_thread")


NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


def make_inputs(batch=2, dim=6, length=29, n=4, dtype=torch.float32, seed=0, delta_scale=0.5):
    g = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=dtype)

    return {
        "u": randn(batch, dim, length),
        "delta": randn(batch, dim, length) * delta_scale,
        "A": -torch.exp(randn(dim, n)),
        "B": randn(batch, n, length),
        "C": randn(batch, n, length),
        "D": randn(dim),
        "z": randn(batch, dim, length),
        "delta_bias": randn(dim) * 0.5,
    }


def run(inputs, impl, **kwargs):
    """Output and the gradients of a fixed random projection of it, for every input that requires grad."""
    leaves = {k: (v.clone().requires_grad_() if v is not None else None) for k, v in inputs.items()}
    y = selective_scan(**leaves, impl=impl, **kwargs)
    weight = torch.randn(y.shape, generator=torch.Generator().manual_seed(1), dtype=y.dtype)
    (y * weight).sum().backward()
    grads = {k: v.grad for k, v in leaves.items() if v is not None}
    return y.detach(), grads


def assert_close_rel(actual, expected, rtol, name=""):
    """Element-wise closeness relative to the tensor's scale (values near zero get the scale's tolerance)."""
    scale = expected.abs().max().clamp(min=1e-12)
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=rtol * scale, msg=lambda m: f"{name}: {m}")


OPTIONS = list(itertools.product([False, True], repeat=4))  # (D, z, delta_bias, softplus)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("use_D,use_z,use_bias,softplus", OPTIONS)
def test_chunked_matches_reference(reverse, use_D, use_z, use_bias, softplus):
    inputs = make_inputs()
    for name, used in (("D", use_D), ("z", use_z), ("delta_bias", use_bias)):
        if not used:
            inputs[name] = None
    kwargs = {"delta_softplus": softplus, "reverse": reverse}
    y_ref, g_ref = run(inputs, "ref", **kwargs)
    y, g = run(inputs, "chunked", chunk_size=8, **kwargs)
    assert_close_rel(y, y_ref, 1e-5, "output")
    assert g.keys() == g_ref.keys()
    for name in g_ref:
        assert_close_rel(g[name], g_ref[name], 1e-5, f"grad {name}")


@pytest.mark.parametrize("chunk_size", [1, 3, 29, 64, None])
@pytest.mark.parametrize("reverse", [False, True])
def test_chunk_sizes_agree(chunk_size, reverse):
    inputs = make_inputs(length=29)
    y_ref, g_ref = run(inputs, "ref", delta_softplus=True, reverse=reverse)
    y, g = run(inputs, "chunked", delta_softplus=True, reverse=reverse, chunk_size=chunk_size)
    assert_close_rel(y, y_ref, 1e-5, "output")
    for name in g_ref:
        assert_close_rel(g[name], g_ref[name], 1e-5, f"grad {name}")


@pytest.mark.parametrize("impl", ["ref", "chunked"])
def test_reverse_equals_flip_forward_flip(impl):
    inputs = make_inputs()
    flipped = {k: (v.flip(-1) if k in ("u", "delta", "B", "C", "z") else v) for k, v in inputs.items()}
    y_rev = selective_scan(**inputs, delta_softplus=True, reverse=True, impl=impl)
    y_flip = selective_scan(**flipped, delta_softplus=True, reverse=False, impl=impl).flip(-1)
    torch.testing.assert_close(y_rev, y_flip, rtol=1e-5, atol=1e-6)


def test_reverse_really_scans_backwards():
    # With u nonzero only at the last position, a forward scan sees nothing before it; a reverse scan
    # carries it to every earlier position.
    inputs = make_inputs()
    inputs["u"] = torch.zeros_like(inputs["u"])
    inputs["u"][..., -1] = 1.0
    inputs["D"] = None
    fwd = selective_scan(**inputs, delta_softplus=True, impl="chunked")
    rev = selective_scan(**inputs, delta_softplus=True, reverse=True, impl="chunked")
    assert fwd[..., :-1].abs().max() == 0
    assert rev[..., :-1].abs().amin(dim=(0, 1)).gt(0).all()


@pytest.mark.parametrize("reverse", [False, True])
def test_chunked_backward_gradcheck(reverse):
    inputs = make_inputs(batch=1, dim=3, length=11, n=2, dtype=torch.float64)
    leaves = [inputs[k].requires_grad_() for k in NAMES]

    def fn(*args):
        return selective_scan(*args, delta_softplus=True, reverse=reverse, impl="chunked", chunk_size=4)

    assert torch.autograd.gradcheck(fn, leaves)


@pytest.mark.parametrize("reverse", [False, True])
def test_stable_with_strong_decay(reverse):
    # Steps up to ~40 with |A| up to ~20: a chunk's summed log decay reaches thousands, which a cumsum /
    # exp(-cumsum) factorisation would overflow; the chunked scan must stay finite and exact.
    inputs = make_inputs(length=150, delta_scale=20.0)
    inputs["A"] = inputs["A"] * 5
    y_ref, g_ref = run(inputs, "ref", delta_softplus=True, reverse=reverse)
    y, g = run(inputs, "chunked", delta_softplus=True, reverse=reverse, chunk_size=32)
    assert torch.isfinite(y).all()
    assert_close_rel(y, y_ref, 1e-5, "output")
    for name in g_ref:
        assert torch.isfinite(g[name]).all(), name
        assert_close_rel(g[name], g_ref[name], 1e-5, f"grad {name}")


def test_softplus_is_linear_above_20():
    # mamba_ssm's softplus (like torch's default) returns its input above 20 (gradient exactly 1); below, it
    # is log(1 + e^x). Visible in float64: softplus(20.5) would be 20.5 + 1.2e-9. With one position, N = 1
    # and B = C = u = 1, the output is dt itself.
    for value, expected, slope in ((20.5, 20.5, 1.0), (19.5, 19.5 + 3.4e-9, 1 - 3.4e-9)):
        delta = torch.full((1, 1, 1), value, dtype=torch.float64, requires_grad=True)
        ones = torch.ones(1, 1, 1, dtype=torch.float64)
        y = selective_scan(
            ones,
            delta,
            torch.zeros(1, 1, dtype=torch.float64),
            ones,
            ones,
            delta_softplus=True,
            impl="chunked",
        )
        y.sum().backward()
        if value > 20:
            assert y.item() == expected and delta.grad.item() == slope
        else:
            assert y.item() == pytest.approx(expected, rel=0, abs=1e-10) and y.item() != value
            assert delta.grad.item() == pytest.approx(slope, rel=0, abs=1e-10) and delta.grad.item() < 1


def test_low_precision_inputs_compute_in_float32():
    half = {k: v.to(torch.bfloat16) for k, v in make_inputs().items()}
    y16 = selective_scan(**half, delta_softplus=True, impl="chunked")
    assert y16.dtype == torch.bfloat16
    y32_from_half = selective_scan(
        **{k: v.float() for k, v in half.items()}, delta_softplus=True, impl="chunked"
    )
    torch.testing.assert_close(y16, y32_from_half.to(torch.bfloat16))


def test_autocast_does_not_lower_the_scan_precision():
    inputs = make_inputs()
    expected, g_expected = run(inputs, "chunked", delta_softplus=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, g = run(inputs, "chunked", delta_softplus=True)
    assert y.dtype == torch.float32
    assert_close_rel(y, expected, 1e-6, "output")
    for name in g_expected:
        assert_close_rel(g[name], g_expected[name], 1e-6, f"grad {name}")


def test_no_grad_path_equals_grad_path():
    inputs = make_inputs()
    with torch.no_grad():
        y_plain = selective_scan(**inputs, delta_softplus=True, impl="chunked")
    y_grad, _ = run(inputs, "chunked", delta_softplus=True)
    torch.testing.assert_close(y_plain, y_grad, rtol=0, atol=0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU selection")
def test_auto_is_chunked_on_cpu():
    inputs = make_inputs()
    auto = selective_scan(**inputs, delta_softplus=True, impl="auto")
    chunked = selective_scan(**inputs, delta_softplus=True, impl="chunked")
    torch.testing.assert_close(auto, chunked, rtol=0, atol=0)


@pytest.mark.skipif(cuda_kernel_available() and torch.cuda.is_available(), reason="kernel usable here")
def test_cuda_impl_refuses_clearly():
    with pytest.raises(RuntimeError, match="cuda"):
        selective_scan(**make_inputs(), impl="cuda")


def test_bad_arguments():
    inputs = make_inputs()
    with pytest.raises(ValueError, match="impl"):
        selective_scan(**inputs, impl="fast")
    with pytest.raises(ValueError, match="chunk_size"):
        selective_scan(**inputs, impl="chunked", chunk_size=0)
    bad = dict(inputs, B=inputs["B"][:, :, :-1])
    with pytest.raises(ValueError, match="B must have shape"):
        selective_scan(**bad)
