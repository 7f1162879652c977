"""ONNX export: the portable form matches PyTorch in ONNX Runtime, the custom form holds one SelectiveScan
node per scan with the right attributes, the batch dimension is dynamic, the manifest is exact, files are
written whole, and the committed golden fixtures still match the model code."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from datetime import datetime
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

import vimgeo
from vimgeo import export
from vimgeo.scan import selective_scan

FIXTURES = Path(__file__).resolve().parents[2] / "tests" / "fixtures"


def _session(path_or_bytes) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    opts.inter_op_num_threads = 1
    data = path_or_bytes.read_bytes() if isinstance(path_or_bytes, Path) else path_or_bytes
    return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])


def _torch_embed(model, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model.encode(torch.from_numpy(x), branch="drone").numpy()


@pytest.fixture(scope="module")
def test_exports(tmp_path_factory):
    """The "test" config through the CLI: custom from --config, portable from a training checkpoint."""
    from vimgeo.config import TrainConfig

    out = tmp_path_factory.mktemp("export")
    assert export.main(["--config", "test", "--out-dir", str(out), "--name", "m-custom", "--seed", "3"]) == 0

    model = export.random_vimgeo("test", seed=3)
    cfg = TrainConfig(backbone="test", img_size=model.config.img_size, name="export-test")
    ckpt = {
        "config": cfg.to_dict(),
        "backbone": dataclasses.asdict(model.config),
        "model": model.state_dict(),
        "step": 7,
    }
    torch.save(ckpt, out / "final.pt")
    evaluation = {"kind": "eval", "step": 7, "metrics": {"drone->satellite": {"official": {"R@1": 50.0}}}}
    (out / "metrics.jsonl").write_text(
        json.dumps({"kind": "train", "step": 7}) + "\n" + json.dumps(evaluation)
    )
    args = ["--checkpoint", str(out / "final.pt"), "--out-dir", str(out), "--name", "m-portable"]
    assert export.main([*args, "--scan-form", "portable"]) == 0
    return out, model


# ----------------------------------------------------------------------------- parity


def test_portable_matches_pytorch_with_dynamic_batch(test_exports):
    out, model = test_exports
    session = _session(out / "m-portable.onnx")
    size = model.config.img_size
    x = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(0)).numpy()
    for batch in (1, 3):
        (got,) = session.run(["embedding"], {"image": x[:batch]})
        want = _torch_embed(model, x[:batch])
        assert got.shape == (batch, model.embedding_dim)
        assert np.abs(got - want).max() <= 1e-4
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize(
    "depth",
    [
        4,
        pytest.param(
            24, marks=pytest.mark.skipif(not os.environ.get("VIMGEO_SLOW_TESTS"), reason="slow (30 s)")
        ),
    ],
)
def test_portable_tiny_matches_pytorch(tmp_path, depth):
    """Vim-Ti's widths (E 192, D 384, N 16, dt_rank 12) at 64 px; all 24 blocks with VIMGEO_SLOW_TESTS=1."""
    model = export.random_vimgeo("tiny", seed=1, img_size=64, depth=depth)
    export.export_vimgeo(model, tmp_path, "tiny", scan_form="portable")
    session = _session(tmp_path / "tiny.onnx")
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1)).numpy()
    (got,) = session.run(["embedding"], {"image": x})
    assert np.abs(got - _torch_embed(model, x)).max() <= 1e-4


# ----------------------------------------------------------------------------- graph structure


def test_custom_graph_has_one_node_per_scan(test_exports):
    out, model = test_exports
    m = onnx.load(out / "m-custom.onnx")
    onnx.checker.check_model(m, full_check=True)
    opsets = {o.domain: o.version for o in m.opset_import}
    assert opsets[""] == 17 and opsets["vimgeo"] == 1

    scans = [n for n in m.graph.node if n.op_type == "SelectiveScan"]
    assert len(scans) == 2 * model.config.depth
    assert all(n.domain == "vimgeo" for n in scans)
    initializers = {t.name: t for t in m.graph.initializer}
    reverse = []
    for node in scans:
        attrs = {a.name: a for a in node.attribute}
        assert set(attrs) == {"delta_softplus", "reverse"}
        assert all(a.type == onnx.AttributeProto.INT for a in attrs.values())
        assert attrs["delta_softplus"].i == 1
        reverse.append(attrs["reverse"].i)
        assert len(node.input) == 8 and all(node.input), "u, delta, A, B, C, D, z, delta_bias all present"
        A = numpy_helper.to_array(initializers[node.input[2]])  # folded: a weight, negative
        assert A.shape == (model.config.d_inner, model.config.d_state) and (A < 0).all()
    assert reverse == [0, 1] * model.config.depth  # each block: its forward scan, then its backward scan

    (inp,), (outp,) = m.graph.input, m.graph.output
    size = model.config.img_size
    assert inp.name == "image" and outp.name == "embedding"
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert dims[1:] == [3, size, size] and isinstance(dims[0], str)
    odims = [d.dim_param or d.dim_value for d in outp.type.tensor_type.shape.dim]
    assert odims[1] == model.embedding_dim and odims[0] == dims[0]


def test_portable_graph_uses_standard_ops_only(test_exports):
    out, _ = test_exports
    m = onnx.load(out / "m-portable.onnx")
    onnx.checker.check_model(m, full_check=True)
    assert {n.domain for n in m.graph.node} <= {"", "ai.onnx"}
    assert [o.domain for o in m.opset_import if o.domain not in ("", "ai.onnx")] == []
    for scan in (n for n in m.graph.node if n.op_type == "Scan"):
        body = helper.get_attribute_value(next(a for a in scan.attribute if a.name == "body"))
        assert "MatMul" not in {n.op_type for n in body.node}  # tract 0.23 hangs on it
        assert not any(a.name.endswith("directions") for a in scan.attribute)  # tract ignores them


@pytest.mark.parametrize("opset", [17, 18])
@pytest.mark.parametrize("reverse", [0, 1])
@pytest.mark.parametrize("optional", ["all", "none"])
def test_lowered_scan_matches_reference(opset, reverse, optional):
    """One SelectiveScan node, rewritten to standard ops, against vimgeo.scan's exact loop."""
    g = torch.Generator().manual_seed(reverse + 2 * opset)
    b, d, n, length = 2, 6, 4, 9
    t = {
        "u": torch.randn(b, d, length, generator=g),
        "delta": torch.randn(b, d, length, generator=g),
        "A": -torch.rand(d, n, generator=g) * 2,
        "B": torch.randn(b, n, length, generator=g),
        "C": torch.randn(b, n, length, generator=g),
        "D": torch.randn(d, generator=g),
        "z": torch.randn(b, d, length, generator=g),
        "delta_bias": torch.randn(d, generator=g),
    }
    t["delta"][0, 0, 0] = 30.0  # above softplus's threshold: the linear branch
    softplus = optional == "all"
    names = list(t) if optional == "all" else ["u", "delta", "A", "B", "C"]
    shapes = {k: list(v.shape) for k, v in t.items()}
    shapes["u"][0] = "batch"
    node = helper.make_node(
        "SelectiveScan",
        names,
        ["y"],
        domain="vimgeo",
        name="ss",
        delta_softplus=int(softplus),
        reverse=reverse,
    )
    graph = helper.make_graph(
        [node],
        "one_scan",
        [helper.make_tensor_value_info(k, TensorProto.FLOAT, shapes[k]) for k in names],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shapes["u"])],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid("vimgeo", 1)], ir_version=8
    )
    lowered = export.lower_selective_scan(model)
    onnx.checker.check_model(lowered, full_check=True)
    (got,) = _session(lowered.SerializeToString()).run(None, {k: t[k].numpy() for k in names})
    kwargs = {k: t[k] for k in names[5:]}
    want = selective_scan(
        *(t[k] for k in names[:5]), **kwargs, delta_softplus=softplus, reverse=bool(reverse), impl="ref"
    )
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- manifest and files


def test_manifest_is_exact(test_exports):
    out, model = test_exports
    for name, form in (("m-custom", "custom"), ("m-portable", "portable")):
        manifest = json.loads((out / f"{name}.json").read_text())
        assert tuple(manifest) == export.MANIFEST_KEYS
        data = (out / f"{name}.onnx").read_bytes()
        size = model.config.img_size
        assert manifest["format"] == "vimgeo-model" and manifest["format_version"] == 1
        assert manifest["name"] == name and manifest["onnx_file"] == f"{name}.onnx"
        assert manifest["onnx_sha256"] == hashlib.sha256(data).hexdigest()
        assert manifest["model_version"] == vimgeo.__version__
        assert manifest["scan_form"] == form and manifest["opset"] == 17
        expected_ops = [{"domain": "vimgeo", "op": "SelectiveScan", "version": 1}] if form == "custom" else []
        assert manifest["custom_ops"] == expected_ops
        assert manifest["exporter"] == {
            "tool": "vimgeo.export",
            "version": vimgeo.__version__,
            "torch": torch.__version__,
            "onnx": onnx.__version__,
        }
        assert manifest["input"] == {
            "name": "image",
            "layout": "NCHW",
            "color": "RGB",
            "height": size,
            "width": size,
            "dtype": "float32",
            "scale": 255.0,
            "mean": [0.485, 0.456, 0.406],
            "std": [0.229, 0.224, 0.225],
            "interpolation": "bicubic",
        }
        assert manifest["output"] == {"name": "embedding", "dim": model.embedding_dim, "normalized": True}
        arch = manifest["architecture"]
        assert arch["depth"] == model.config.depth and arch["img_size"] == model.config.img_size
        assert arch["share_weights"] is True and arch["proj_dim"] is None
        assert manifest["branch"] == "drone"
        datetime.strptime(manifest["created"], "%Y-%m-%dT%H:%M:%SZ")
    assert json.loads((out / "m-custom.json").read_text())["training"] is None
    training = json.loads((out / "m-portable.json").read_text())["training"]
    assert training["checkpoint_sha256"] == hashlib.sha256((out / "final.pt").read_bytes()).hexdigest()
    assert training["config"]["backbone"] == "test" and training["step"] == 7
    assert training["metrics"]["metrics"]["drone->satellite"]["official"]["R@1"] == 50.0
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]


# ----------------------------------------------------------------------------- committed golden fixtures


@pytest.mark.skipif(not (FIXTURES / "golden.json").exists(), reason="no golden fixtures")
def test_golden_fixtures_are_current():
    """The committed fixtures still describe what the model code computes."""
    from PIL import Image

    from vimgeo import fixtures

    golden = json.loads((FIXTURES / "golden.json").read_text())
    model = fixtures.fixture_model()
    session = _session(FIXTURES / f"{fixtures.FIXTURE_NAME}-portable.onnx")
    for form in export.SCAN_FORMS:
        manifest = json.loads((FIXTURES / golden["model"]["manifests"][form]).read_text())
        data = (FIXTURES / manifest["onnx_file"]).read_bytes()
        assert manifest["onnx_sha256"] == hashlib.sha256(data).hexdigest()
    contract = manifest["input"]
    for record in golden["images"]:
        x = fixtures.preprocess(Image.open(FIXTURES / record["file"]), contract)
        assert x.astype(np.float64).sum() == pytest.approx(record["input_sum"], rel=1e-9)
        want = np.asarray(record["embedding"], dtype=np.float32)
        stale = "golden fixtures are stale: rerun `python -m vimgeo.export fixtures --out ../tests/fixtures`"
        assert np.abs(_torch_embed(model, x)[0] - want).max() <= 1e-5, stale
        (got,) = session.run(["embedding"], {"image": x})
        assert np.abs(got[0] - want).max() <= golden["tolerance"]
