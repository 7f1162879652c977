"""ONNX export of the drone encoder, with the manifest the onboard runtime checks at load.

    python -m vimgeo.export --config small --img-size 384 --out-dir ../target/bench-models --name small
    python -m vimgeo.export --checkpoint runs/paper/final.pt --out-dir out --name u1652 --scan-form portable
    python -m vimgeo.export fixtures --out ../tests/fixtures      # Rust golden fixtures (vimgeo.fixtures)
    python -m vimgeo.export convnext --img-size 384 --out ../target/bench-models      # benchmark baseline

The graph maps ``image`` float32 [batch, 3, H, W] (batch dynamic; H, W fixed) to ``embedding`` [batch, E],
L2-normalised inside the graph. ``<name>.onnx`` and ``<name>.json`` (the manifest, ``MANIFEST_KEYS``) are each
written atomically, the ONNX file first, so a manifest never names a file that is not complete.

The selective scan, the op ONNX lacks, is exported in one of two forms:

- ``custom`` (default): one ``vimgeo.SelectiveScan`` node (domain ``vimgeo``, version 1) per scan, inputs
  ``u[B,D,L] delta[B,D,L] A[D,N] B[B,N,L] C[B,N,L] D[D] z[B,D,L] delta_bias[D]``, int attributes
  ``delta_softplus`` and ``reverse``, output ``y[B,D,L] = (scan + D*u) * silu(z)``. The runtime ships the
  kernel (ONNX Runtime custom op, tract op). ``A = -exp(A_log)`` is always folded into a constant
  initializer ``[D, N]`` (``_fold_scan_decay``), so the kernel may treat it as a weight.
- ``portable``: each of those nodes rewritten into standard ops (``lower_selective_scan``), so stock ONNX
  Runtime, TensorRT and tract run the file unchanged. ``dA = exp(delta*A)`` and ``dBu = delta*u*B`` are
  computed for all steps up front; an ONNX ``Scan`` loops only the recurrence ``h = dA_t*h + dBu_t``,
  ``y_t = sum_n(h*C_t)`` with Mul + ReduceSum (tract 0.23 hangs optimising a Scan body that holds a MatMul).
  A reverse scan flips its inputs with ``Gather`` rather than ``scan_input_directions``, which tract ignores.

How the custom node gets into the graph: for the duration of the export, ``vimgeo.scan.selective_scan`` (and
every ``vimgeo`` module's reference to it) is swapped for a function that calls ``torch.onnx.ops.symbolic``,
torch's supported way (2.8+) to put an arbitrary-domain ONNX node into a ``torch.export`` graph; the dynamo
exporter writes it out verbatim. Both forms come from this one export; ``portable`` is a graph rewrite of it.

The dynamo exporter emits opset 18 and up. ``--opset 17`` (the default: TensorRT 8.6 on JetPack 5 stops
there) rewrites the few ops that changed in 18 (``_downgrade_to_17``); the checker then holds every node to
its opset-17 schema, so an op with no opset-17 form fails the export instead of producing a bad file.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

import vimgeo
from vimgeo.atomic import atomic_write_bytes

SCAN_FORMS = ("custom", "portable")
CUSTOM_DOMAIN = "vimgeo"
CUSTOM_OP = "SelectiveScan"
CUSTOM_OP_VERSION = 1
MIN_OPSET = 17  # TensorRT 8.6 (JetPack 5) reads up to 17; the portable form needs Scan-16, Shape-15
EXPORT_OPSET = 18  # what torch's dynamo exporter emits natively
FORMAT = "vimgeo-model"
FORMAT_VERSION = 1
MANIFEST_KEYS = (
    "format", "format_version", "name", "model_version", "onnx_file", "onnx_sha256", "scan_form", "opset",
    "custom_ops", "exporter", "input", "output", "architecture", "branch", "training", "created",
)  # fmt: skip
INPUT_NAME = "image"
OUTPUT_NAME = "embedding"
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # the ConvNeXt baseline's contract (a VimConfig carries its own)
IMAGENET_STD = (0.229, 0.224, 0.225)
SOFTPLUS_THRESHOLD = 20.0  # torch.nn.functional.softplus's (and vimgeo.scan's): linear above it
EXPORT_BATCH = 2  # example batch for tracing; 1 would be specialised away by torch.export


# ----------------------------------------------------------------------------- the scan as one ONNX node


def _symbolic_selective_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    reverse: bool = False,
    impl: str = "auto",
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Stand-in for ``vimgeo.scan.selective_scan`` during export: one ``vimgeo.SelectiveScan`` node."""
    del impl, chunk_size  # the runtime picks its own kernel
    if B.dim() != 3 or C.dim() != 3:
        raise ValueError(
            f"SelectiveScan export needs B, C as [B,N,L]; got {tuple(B.shape)}, {tuple(C.shape)}"
        )
    return torch.onnx.ops.symbolic(
        f"{CUSTOM_DOMAIN}::{CUSTOM_OP}",
        (u, delta, A, B, C, D, z, delta_bias),
        {"delta_softplus": int(bool(delta_softplus)), "reverse": int(bool(reverse))},
        dtype=u.dtype,
        shape=u.shape,
        version=CUSTOM_OP_VERSION,
    )


@contextlib.contextmanager
def scan_as_onnx_node() -> Iterator[None]:
    """Within the block, every ``vimgeo`` module's ``selective_scan`` records a ``vimgeo.SelectiveScan`` node.

    Covers both ``scan.selective_scan(...)`` and ``from vimgeo.scan import selective_scan`` call sites.
    """
    import vimgeo.scan as scan_module

    original = scan_module.selective_scan
    patched = []
    for name, module in list(sys.modules.items()):
        if (name == "vimgeo" or name.startswith("vimgeo.")) and getattr(
            module, "selective_scan", None
        ) is original:
            module.selective_scan = _symbolic_selective_scan
            patched.append(module)
    try:
        yield
    finally:
        for module in patched:
            module.selective_scan = original


# ----------------------------------------------------------------------------- portable form: graph rewrite


class _Builder:
    """Collects the standard-op nodes of one rewrite: unique names under a prefix, constants shared."""

    def __init__(self, prefix: str, constants: dict[tuple, str], initializers: list[onnx.TensorProto]):
        self.prefix = prefix
        self.count = 0
        self.nodes: list[onnx.NodeProto] = []
        self.constants = constants  # (dtype, values) -> initializer name, shared by the whole rewrite
        self.initializers = initializers

    def fresh(self, hint: str) -> str:
        self.count += 1
        return f"{self.prefix}/{hint}_{self.count}"

    def op(self, op_type: str, inputs: Sequence[str], hint: str | None = None, **attrs: Any) -> str:
        out = self.fresh(hint or op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=out, **attrs))
        return out

    def const(self, dtype: int, values: Sequence[int | float], dims: Sequence[int]) -> str:
        key = (dtype, tuple(values), tuple(dims))
        if key not in self.constants:
            name = f"{CUSTOM_OP}_lowering/const_{len(self.constants)}"
            self.initializers.append(helper.make_tensor(name, dtype, list(dims), list(values)))
            self.constants[key] = name
        return self.constants[key]

    def ints(self, *values: int) -> str:
        return self.const(TensorProto.INT64, values, [len(values)])


def _scan_body(prefix: str) -> onnx.GraphProto:
    """Scan body ``(h[B,D,N], dA_t[B,D,N], dBu_t[B,D,N], C_t[B,1,N]) -> (h', y_t[B,D])``: Mul + ReduceSum."""
    h_in, dA_t, dBu_t, c_t = (f"{prefix}/body/{n}" for n in ("h_in", "dA_t", "dBu_t", "C_t"))
    decayed, h_out, hc, y_t, axes = (f"{prefix}/body/{n}" for n in ("decayed", "h_out", "hC", "y_t", "axes"))
    nodes = [
        helper.make_node(
            "Constant", [], [axes], name=axes, value=helper.make_tensor(axes, TensorProto.INT64, [1], [-1])
        ),
        helper.make_node("Mul", [h_in, dA_t], [decayed], name=decayed),  # no MatMul: tract hangs on it
        helper.make_node("Add", [decayed, dBu_t], [h_out], name=h_out),
        helper.make_node("Mul", [h_out, c_t], [hc], name=hc),
        helper.make_node("ReduceSum", [hc, axes], [y_t], name=y_t, keepdims=0),
    ]
    f = TensorProto.FLOAT
    return helper.make_graph(
        nodes,
        f"{prefix}/body",
        [helper.make_tensor_value_info(n, f, None) for n in (h_in, dA_t, dBu_t, c_t)],
        [helper.make_tensor_value_info(h_out, f, None), helper.make_tensor_value_info(y_t, f, None)],
    )


def _lower_one(node: onnx.NodeProto, seq_len: int, g: _Builder) -> None:
    """Append to ``g`` standard-op nodes that compute what one ``vimgeo.SelectiveScan`` node does."""
    u, delta, A, B, C, D, z, delta_bias = list(node.input) + [""] * (8 - len(node.input))
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}

    if delta_bias:
        delta = g.op("Add", [delta, g.op("Unsqueeze", [delta_bias, g.ints(1)])], "delta_biased")
    if attrs.get("delta_softplus", 0):
        # torch's softplus (threshold 20): linear above the threshold, and never exp() of a large value.
        threshold = g.const(TensorProto.FLOAT, [SOFTPLUS_THRESHOLD], [])
        linear = g.op("Greater", [delta, threshold], "softplus_linear")
        delta = g.op("Where", [linear, delta, g.op("Softplus", [delta])], "delta_softplus")

    # Time-major [L, B, ...] so Scan iterates axis 0; a reverse scan reads the steps back to front.
    rev = g.ints(*range(seq_len - 1, -1, -1)) if attrs.get("reverse", 0) else None

    def steps(x: str, hint: str) -> str:
        x = g.op("Transpose", [x], f"{hint}_time_major", perm=[2, 0, 1])
        return g.op("Gather", [x, rev], f"{hint}_reversed", axis=0) if rev else x

    delta_t = steps(delta, "delta")  # [L,B,D]
    delta_u = steps(g.op("Mul", [delta, u], "delta_u"), "delta_u")  # [L,B,D]
    b_t = steps(B, "B")  # [L,B,N]
    c_t = steps(C, "C")  # [L,B,N]
    dA = g.op(
        "Exp", [g.op("Mul", [g.op("Unsqueeze", [delta_t, g.ints(3)]), A], "delta_A")], "dA"
    )  # [L,B,D,N]
    dBu = g.op("Mul", [g.op("Unsqueeze", [delta_u, g.ints(3)]), g.op("Unsqueeze", [b_t, g.ints(2)])], "dBu")
    c4 = g.op("Unsqueeze", [c_t, g.ints(2)], "C_steps")  # [L,B,1,N]
    zero = helper.make_tensor("zero", TensorProto.FLOAT, [1], [0.0])
    h0 = g.op("ConstantOfShape", [g.op("Shape", [dBu], "state_shape", start=1)], "h0", value=zero)  # [B,D,N]

    ys = g.fresh("y_steps")  # [L,B,D]
    scan = g.fresh("scan")
    g.nodes.append(
        helper.make_node(
            "Scan",
            [h0, dA, dBu, c4],
            [g.fresh("h_last"), ys],
            name=scan,
            num_scan_inputs=3,
            body=_scan_body(scan),
        )
    )
    if rev:
        ys = g.op("Gather", [ys, rev], "y_steps_forward", axis=0)
    y = g.op("Transpose", [ys], "y", perm=[1, 2, 0])  # [B,D,L]
    if D:
        y = g.op("Add", [y, g.op("Mul", [u, g.op("Unsqueeze", [D, g.ints(1)])], "skip")], "y_skip")
    if z:
        y = g.op("Mul", [y, g.op("Mul", [z, g.op("Sigmoid", [z])], "silu_z")], "y_gated")
    g.nodes[-1].output[0] = node.output[0]  # the last node writes what the replaced node wrote


def _value_shapes(model: onnx.ModelProto) -> dict[str, list[int | str | None]]:
    graph = model.graph
    infos = [*graph.input, *graph.value_info, *graph.output]
    if not any(i.name for i in graph.value_info):
        infos = [*infos, *onnx.shape_inference.infer_shapes(model).graph.value_info]
    shapes: dict[str, list[int | str | None]] = {}
    for info in infos:
        if info.type.tensor_type.HasField("shape"):
            dims = info.type.tensor_type.shape.dim
            shapes[info.name] = [
                d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in dims
            ]
    for init in graph.initializer:
        shapes[init.name] = list(init.dims)
    return shapes


def lower_selective_scan(model: onnx.ModelProto) -> onnx.ModelProto:
    """Rewrite every ``vimgeo.SelectiveScan`` node into standard ONNX ops (in place; returns ``model``).

    The sequence length must be static (it is: the image size is fixed in the graph).
    """
    graph = model.graph
    shapes = _value_shapes(model)
    nodes: list[onnx.NodeProto] = []
    constants: dict[tuple, str] = {}
    initializers: list[onnx.TensorProto] = []
    for index, node in enumerate(graph.node):
        if node.domain != CUSTOM_DOMAIN or node.op_type != CUSTOM_OP:
            nodes.append(node)
            continue
        u_shape = shapes.get(node.input[0])
        if not u_shape or len(u_shape) != 3 or not isinstance(u_shape[2], int) or u_shape[2] <= 0:
            raise ValueError(f"{node.name}: sequence length of input {node.input[0]!r} unknown ({u_shape})")
        g = _Builder(f"{node.name or CUSTOM_OP}_{index}", constants, initializers)
        _lower_one(node, u_shape[2], g)
        nodes.extend(g.nodes)
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(initializers)
    kept = [o for o in model.opset_import if o.domain != CUSTOM_DOMAIN]
    del model.opset_import[:]
    model.opset_import.extend(kept)
    return model


# ----------------------------------------------------------------------------- opset


# Reduce ops whose axes moved from an attribute to an input in opset 18 (ReduceSum did so in 13).
_REDUCE_AXES_INPUT_SINCE_18 = frozenset(
    ["ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean", "ReduceMin"]
    + ["ReduceProd", "ReduceSumSquare"]
)


def _downgrade_to_17(model: onnx.ModelProto) -> onnx.ModelProto:
    """Rewrite an opset-18 graph as opset 17 (in place), or raise naming the node that has no opset-17 form.

    ``onnx.version_converter`` has no 18 -> 17 adapter for Split and leaves Reduce nodes half converted, so
    the few ops that changed in 18 are handled here; the checker then holds every node to its opset-17 schema.
    """
    graph = model.graph
    constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    shapes = _value_shapes(model)

    def fail(node: onnx.NodeProto, why: str) -> ValueError:
        return ValueError(f"opset 17 export: node {node.name!r} ({node.op_type}) {why}")

    def pop_attr(node: onnx.NodeProto, name: str) -> onnx.AttributeProto | None:
        for attr in node.attribute:
            if attr.name == name:
                node.attribute.remove(attr)
                return attr
        return None

    for node in graph.node:
        if node.domain not in ("", "ai.onnx"):
            continue
        if node.op_type in _REDUCE_AXES_INPUT_SINCE_18:
            noop = pop_attr(node, "noop_with_empty_axes")
            if len(node.input) > 1 and node.input[1]:
                if node.input[1] not in constants:
                    raise fail(node, "has axes computed at run time")
                axes = [int(a) for a in constants[node.input[1]].reshape(-1)]
                del node.input[1:]
                node.attribute.append(helper.make_attribute("axes", axes))
            elif noop is not None and noop.i:
                raise fail(node, "reduces nothing (noop_with_empty_axes=1)")
        elif node.op_type == "Split":
            parts = pop_attr(node, "num_outputs")
            if parts is not None and not (len(node.input) > 1 and node.input[1]):
                axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
                dims = shapes.get(node.input[0])
                size = dims[axis] if dims and -len(dims) <= axis < len(dims) else None
                if not isinstance(size, int) or size % parts.i:
                    raise fail(node, f"splits a dimension of size {size} into {parts.i} (needs equal parts)")
        elif node.op_type == "Pad" and len(node.input) > 3 and node.input[3]:
            raise fail(node, "pads selected axes (an opset-18 input)")
        elif node.op_type == "Resize" and any(
            a.name in ("antialias", "keep_aspect_ratio_policy", "axes") for a in node.attribute
        ):
            raise fail(node, "uses an opset-18 Resize attribute")

    _prune(graph)  # the axes tensors that became attributes
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx"):
            opset.version = 17
    return model


# ----------------------------------------------------------------------------- graph clean-up


def _prune(graph: onnx.GraphProto) -> None:
    """Drop nodes none of whose outputs is used (repeatedly), then initializers no node reads."""
    while True:
        used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
        dead = [n for n in graph.node if not any(o in used for o in n.output)]
        if not dead:
            break
        for node in dead:
            graph.node.remove(node)
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)


def _fold_scan_decay(model: onnx.ModelProto) -> None:
    """Give every SelectiveScan its ``A`` as a constant initializer (in place).

    The exporter's constant folding stops at a size limit, so wide models would keep ``Neg(Exp(A_log))`` in
    the graph; folding it here makes ``A`` a weight of every exported model alike. A folded ``...A_log``
    becomes ``...A``.
    """
    graph = model.graph
    initializers = {t.name: t for t in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    folded: dict[str, str] = {}
    for node in graph.node:
        if node.domain != CUSTOM_DOMAIN or node.op_type != CUSTOM_OP or node.input[2] in initializers:
            continue
        a = node.input[2]
        neg = producer.get(a)
        exp = producer.get(neg.input[0]) if neg is not None and neg.op_type == "Neg" else None
        if exp is None or exp.op_type != "Exp" or exp.input[0] not in initializers:
            raise ValueError(f"{node.name}: A is neither a constant nor -exp(constant); cannot fold it")
        if a not in folded:
            source = exp.input[0]
            name = source.removesuffix("_log") if source.endswith("_log") else f"{source}.neg_exp"
            while name in initializers:
                name += "_"
            value = -np.exp(numpy_helper.to_array(initializers[source]).astype(np.float32))
            initializers[name] = numpy_helper.from_array(value, name)
            graph.initializer.append(initializers[name])
            folded[a] = name
        node.input[2] = folded[a]
    _prune(graph)


# ----------------------------------------------------------------------------- export


class DroneEncoder(nn.Module):
    """The exported function: image [B,3,H,W] -> L2-normalised embedding [B,E] (the drone branch)."""

    def __init__(self, model: nn.Module, branch: str = "drone"):
        super().__init__()
        self.model = model
        self.branch = branch

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model.encode(image, branch=self.branch)


class PooledFeatures(nn.Module):
    """A torchvision classifier's pooled features, L2-normalised: the ConvNeXt benchmark baseline."""

    def __init__(self, features: nn.Module):
        super().__init__()
        self.features = features

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.features(image).mean(dim=(2, 3))  # [B,C]
        return nn.functional.normalize(x, dim=-1)


def export_onnx(
    module: nn.Module,
    img_size: tuple[int, int],
    scan_form: str = "custom",
    opset: int = MIN_OPSET,
) -> onnx.ModelProto:
    """Trace ``module`` (image -> embedding) to an ONNX model of the given scan form and opset, checked.

    ``scan_form="none"`` is for models without a selective scan (the ConvNeXt baseline).
    """
    if scan_form not in (*SCAN_FORMS, "none"):
        raise ValueError(f"scan form must be one of {(*SCAN_FORMS, 'none')}, got {scan_form!r}")
    if opset < MIN_OPSET:
        raise ValueError(f"opset {opset} < {MIN_OPSET} is not supported")
    module = module.eval()
    example = torch.zeros(EXPORT_BATCH, 3, *img_size)
    capture = scan_as_onnx_node() if scan_form != "none" else contextlib.nullcontext()
    with capture, torch.no_grad():
        program = torch.onnx.export(
            module,
            (example,),
            dynamo=True,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            opset_version=max(opset, EXPORT_OPSET),
            dynamic_shapes={"image": {0: torch.export.Dim("batch", min=1, max=4096)}},
            external_data=False,
            optimize=True,
            verbose=False,
        )
    model = program.model_proto
    if scan_form != "none":
        _fold_scan_decay(model)
    if opset < EXPORT_OPSET:
        model = _downgrade_to_17(model)
    if scan_form == "portable":
        model = lower_selective_scan(model)
    if model_opset(model) != opset:  # torch converts upwards on a best-effort basis
        raise RuntimeError(f"asked for opset {opset}, the exporter produced {model_opset(model)}")
    _strip_value_info(model)
    model.producer_name = "vimgeo.export"
    model.producer_version = vimgeo.__version__
    onnx.checker.check_model(model, full_check=True)
    return model


def _strip_value_info(model: onnx.ModelProto) -> None:
    """Drop intermediate shape annotations: the rewrite and the opset change can leave them stale."""
    del model.graph.value_info[:]


def count_custom_nodes(model: onnx.ModelProto) -> int:
    return sum(1 for n in model.graph.node if n.domain == CUSTOM_DOMAIN and n.op_type == CUSTOM_OP)


# ----------------------------------------------------------------------------- files and manifest


def input_contract(
    img_size: tuple[int, int], mean: Sequence[float], std: Sequence[float], interpolation: str
) -> dict[str, Any]:
    return {
        "name": INPUT_NAME,
        "layout": "NCHW",
        "color": "RGB",
        "height": int(img_size[0]),
        "width": int(img_size[1]),
        "dtype": "float32",
        "scale": 255.0,
        "mean": [float(m) for m in mean],
        "std": [float(s) for s in std],
        "interpolation": interpolation,
    }


def build_manifest(
    *,
    name: str,
    onnx_bytes: bytes,
    scan_form: str,
    opset: int,
    input: dict[str, Any],
    embedding_dim: int,
    architecture: dict[str, Any],
    training: dict[str, Any] | None,
    created: str | None = None,
) -> dict[str, Any]:
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "name": name,
        "model_version": vimgeo.__version__,
        "onnx_file": f"{name}.onnx",
        "onnx_sha256": hashlib.sha256(onnx_bytes).hexdigest(),
        "scan_form": scan_form,
        "opset": int(opset),
        "custom_ops": (
            [{"domain": CUSTOM_DOMAIN, "op": CUSTOM_OP, "version": CUSTOM_OP_VERSION}]
            if scan_form == "custom"
            else []
        ),
        "exporter": {
            "tool": "vimgeo.export",
            "version": vimgeo.__version__,
            "torch": torch.__version__,
            "onnx": onnx.__version__,
        },
        "input": input,
        "output": {"name": OUTPUT_NAME, "dim": int(embedding_dim), "normalized": True},
        "architecture": architecture,
        "branch": "drone",
        "training": training,
        "created": created or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    assert tuple(manifest) == MANIFEST_KEYS
    return manifest


def write_model(
    out_dir: Path, name: str, model: onnx.ModelProto, manifest_fields: dict[str, Any]
) -> dict[str, Any]:
    """Write ``<name>.onnx`` then ``<name>.json``, each atomically; returns the manifest."""
    out_dir.mkdir(parents=True, exist_ok=True)
    data = model.SerializeToString()
    manifest = build_manifest(name=name, onnx_bytes=data, opset=model_opset(model), **manifest_fields)
    atomic_write_bytes(out_dir / f"{name}.onnx", data)
    atomic_write_bytes(out_dir / f"{name}.json", (json.dumps(manifest, indent=2) + "\n").encode())
    return manifest


def model_opset(model: onnx.ModelProto) -> int:
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


# ----------------------------------------------------------------------------- Vim models


def architecture_of(model: nn.Module) -> dict[str, Any]:
    return {
        **dataclasses.asdict(model.config),
        "share_weights": bool(model.share_weights),
        "proj_dim": model.proj_dim,
    }


def random_vimgeo(config: str, seed: int, img_size: int | None = None, **overrides: Any) -> nn.Module:
    """A seeded, randomly initialised VimGeo of a named backbone config (benchmarks, fixtures)."""
    from vimgeo.model import VimGeo, get_config

    if img_size is not None:
        overrides["img_size"] = img_size
    backbone = get_config(config, drop_path_rate=0.0, **overrides)
    torch.manual_seed(seed)
    return VimGeo(backbone).eval()


def checkpoint_vimgeo(path: Path) -> tuple[nn.Module, dict[str, Any]]:
    """The VimGeo of a training checkpoint, and the manifest's ``training`` record for it: the checkpoint's
    path, sha256, step and run config, the dataset, and the run's last evaluation (``metrics.jsonl`` beside
    the checkpoint, as ``vimgeo.train`` writes it) when there is one."""
    from vimgeo.model import build_model_from_checkpoint

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    model = build_model_from_checkpoint(ckpt)
    config = ckpt.get("config") or {}
    evals = []
    metrics_log = path.parent / "metrics.jsonl"
    if metrics_log.exists():
        records = (json.loads(line) for line in metrics_log.read_text().splitlines() if line.strip())
        evals = [r for r in records if r.get("kind") == "eval"]
    training = {
        "checkpoint": str(path),
        "checkpoint_sha256": digest.hexdigest(),
        "step": ckpt.get("step"),
        "dataset": config.get("data"),
        "config": config,
        "metrics": evals[-1] if evals else None,
    }
    return model, training


def export_vimgeo(
    model: nn.Module,
    out_dir: Path,
    name: str,
    scan_form: str = "custom",
    opset: int = MIN_OPSET,
    training: dict[str, Any] | None = None,
    created: str | None = None,
) -> dict[str, Any]:
    """Export a VimGeo's drone encoder and its manifest; returns the manifest."""
    img_size = _pair(model.config.img_size)
    onnx_model = export_onnx(DroneEncoder(model), img_size, scan_form=scan_form, opset=opset)
    expected = 2 * model.config.depth if scan_form == "custom" else 0
    if count_custom_nodes(onnx_model) != expected:
        raise RuntimeError(
            f"expected {expected} {CUSTOM_OP} nodes, the graph has {count_custom_nodes(onnx_model)}"
        )
    return write_model(
        out_dir,
        name,
        onnx_model,
        {
            "scan_form": scan_form,
            "input": input_contract(
                img_size, model.config.mean, model.config.std, model.config.interpolation
            ),
            "embedding_dim": model.embedding_dim,
            "architecture": architecture_of(model),
            "training": training,
            "created": created,
        },
    )


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    h, w = size
    return int(h), int(w)


# ----------------------------------------------------------------------------- ConvNeXt baseline


def export_convnext(
    out_dir: Path, img_size: int, name: str | None = None, opset: int = MIN_OPSET, seed: int = 0
):
    """torchvision's convnext_tiny (random weights; nothing downloads) under the same contract as VimGeo."""
    from torchvision.models import convnext_tiny

    torch.manual_seed(seed)
    net = convnext_tiny(weights=None)
    module = PooledFeatures(net.features)
    size = (img_size, img_size)
    onnx_model = export_onnx(module, size, scan_form="none", opset=opset)
    name = name or f"convnext-tiny-{img_size}"
    return write_model(
        out_dir,
        name,
        onnx_model,
        {
            "scan_form": "none",
            "input": input_contract(size, IMAGENET_MEAN, IMAGENET_STD, "bicubic"),
            "embedding_dim": 768,
            "architecture": {"name": "convnext_tiny"},
            "training": None,
        },
    )


# ----------------------------------------------------------------------------- CLI


def _export_main(argv: Sequence[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m vimgeo.export", description=__doc__.split("\n\n")[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--config", help="named backbone config (test, tiny, small), random weights")
    src.add_argument("--checkpoint", type=Path, help="training checkpoint (.pt) written by vimgeo.train")
    ap.add_argument("--out-dir", type=Path, required=True)
    ap.add_argument("--name", required=True, help="file stem: writes <name>.onnx and <name>.json")
    ap.add_argument("--scan-form", choices=SCAN_FORMS, default="custom")
    ap.add_argument(
        "--img-size", type=int, help="input side in pixels (--config only; default: the config's)"
    )
    ap.add_argument("--opset", type=int, default=MIN_OPSET)
    ap.add_argument("--seed", type=int, default=0, help="random init seed (--config only)")
    ap.add_argument(
        "--training-extra",
        type=Path,
        help="JSON object merged into the manifest's training record (--checkpoint only): e.g. the training "
        "data (orthophotos and their sha256, pair-generator settings) and evaluation results",
    )
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    if args.checkpoint is not None:
        if args.img_size is not None:
            ap.error("--img-size applies to --config only (a checkpoint carries its input size)")
        model, training = checkpoint_vimgeo(args.checkpoint)
        if args.training_extra is not None:
            extra = json.loads(args.training_extra.read_text())
            if not isinstance(extra, dict):
                ap.error(f"--training-extra {args.training_extra}: not a JSON object")
            training.update(extra)
    else:
        if args.training_extra is not None:
            ap.error("--training-extra applies to --checkpoint only")
        model, training = random_vimgeo(args.config, args.seed, args.img_size), None
    manifest = export_vimgeo(model, args.out_dir, args.name, args.scan_form, args.opset, training)
    size = (args.out_dir / manifest["onnx_file"]).stat().st_size
    print(
        f"wrote {args.out_dir / manifest['onnx_file']} ({size / 1e6:.1f} MB, {args.scan_form}, "
        f"opset {args.opset}, E={manifest['output']['dim']}) and {args.name}.json "
        f"in {time.perf_counter() - t0:.1f} s"
    )
    return 0


def _convnext_main(argv: Sequence[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m vimgeo.export convnext")
    ap.add_argument("--img-size", type=int, default=384)
    ap.add_argument("--out", type=Path, required=True, help="output folder")
    ap.add_argument("--name", help="file stem (default convnext-tiny-<img-size>)")
    ap.add_argument("--opset", type=int, default=MIN_OPSET)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    manifest = export_convnext(args.out, args.img_size, args.name, args.opset)
    print(f"wrote {args.out / manifest['onnx_file']} in {time.perf_counter() - t0:.1f} s")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands: dict[str, Callable[[Sequence[str]], int]] = {"convnext": _convnext_main}
    if argv and argv[0] == "fixtures":
        from vimgeo.fixtures import main as fixtures_main

        return fixtures_main(argv[1:])
    if argv and argv[0] in commands:
        return commands[argv[0]](argv[1:])
    return _export_main(argv)


if __name__ == "__main__":
    sys.exit(main())
