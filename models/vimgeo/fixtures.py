"""Golden fixtures for the Rust encode tests: a small seeded VimGeo exported in both scan forms, a few input
PNGs, and the embeddings PyTorch computes for them.

    cd models && python -m vimgeo.export fixtures --out ../tests/fixtures   (or: python -m vimgeo.fixtures)

Writes into ``--out``:

- ``vimgeo-test-custom.onnx/.json`` and ``vimgeo-test-portable.onnx/.json``: ``FIXTURE_MODEL`` (the "test"
  backbone config with ``FIXTURE_OVERRIDES``), random init seeded with ``FIXTURE_SEED``, NOT trained.
- ``IMAGES``: PNGs at exactly the model input size (two orthophoto crops, one synthetic gradient), so a test
  of them checks the model and the normalisation, not the resize; and ``ODD_IMAGE``, at another size
  (``ODD_SIZE``), for the resize path.
- ``golden.json``: per image, the float32 input statistics and PyTorch's embedding (see its ``note``).

Deterministic: a rerun writes byte-identical files (a manifest keeps its ``created`` while its ONNX file is
unchanged). ``tests/test_export.py`` fails when the model code no longer reproduces ``golden.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from vimgeo import export
from vimgeo.atomic import atomic_write_bytes

FIXTURE_MODEL = "test"
# "test" (32 px, 4 x 4 patches, width 32, depth 2, d_state 8) is so small that a kernel bug could hide in it;
# this is still tiny on disk but has a 17-token sequence, D = 128 channels and the real models' d_state 16.
FIXTURE_OVERRIDES: dict[str, Any] = {
    "img_size": 64,
    "patch_size": 16,
    "embed_dim": 64,
    "depth": 4,
    "d_state": 16,
}
FIXTURE_SEED = 0
FIXTURE_NAME = "vimgeo-test"
# The data folder that `make data` fetches (data/README.md): $VIMGEO_DATA, else ~/.cache/vimgeo/data.
DATA_DIR = Path(os.environ.get("VIMGEO_DATA") or Path.home() / ".cache" / "vimgeo" / "data")
ORTHOPHOTO = DATA_DIR / "imagery" / "yell_forest_10cm.png"
# (file, crop box (left, upper, right, lower) in the 10 cm orthophoto, or None for the synthetic gradient)
IMAGES: tuple[tuple[str, tuple[int, int, int, int] | None], ...] = (
    ("forest-edge.png", (600, 400, 1000, 800)),  # meadow meeting conifers, long shadows
    ("forest-dense.png", (1680, 1680, 2080, 2080)),  # tree crowns and shadows
    ("gradient.png", None),  # R ramps left to right, G top to bottom, B a diagonal ripple
)
ODD_IMAGE = ("meadow-100x80.png", (80, 1200, 580, 1600))  # 500 x 400 crop, saved at ODD_SIZE
ODD_SIZE = (100, 80)  # (width, height)
TOLERANCE = 1e-4  # max abs difference on the embedding an engine should meet on the exact-size images


def preprocess(image: Image.Image, contract: dict[str, Any]) -> np.ndarray:
    """The manifest's preprocessing, in float32: ``[1, 3, H, W]`` from an image of any size.

    Resize to H x W (PIL, the contract's ``interpolation``) if needed, then ``x / scale``, then
    ``(x - mean) / std`` per channel.
    """
    size = (contract["width"], contract["height"])
    image = image.convert("RGB")
    if image.size != size:
        if contract["interpolation"] != "bicubic":
            raise ValueError(f"unsupported interpolation {contract['interpolation']!r}")
        image = image.resize(size, Image.Resampling.BICUBIC)
    x = np.asarray(image, dtype=np.float32) / np.float32(contract["scale"])  # [H, W, 3]
    mean = np.asarray(contract["mean"], dtype=np.float32)
    std = np.asarray(contract["std"], dtype=np.float32)
    x = (x - mean) / std
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


def _gradient(width: int, height: int) -> Image.Image:
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    r = 255 * xx / max(1, width - 1)
    g = 255 * yy / max(1, height - 1)
    b = 127.5 + 127.5 * np.sin((xx + yy) / 5.0)
    rgb = np.stack([r, g, b], axis=-1).round().clip(0, 255).astype(np.uint8)
    return Image.fromarray(rgb, "RGB")


def _crop(ortho: Image.Image, box: tuple[int, int, int, int], size: tuple[int, int]) -> Image.Image:
    return ortho.crop(box).resize(size, Image.Resampling.BICUBIC)


def _save_png(image: Image.Image, path: Path) -> None:
    import io

    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=False)
    atomic_write_bytes(path, buf.getvalue())


def _read_manifest(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def fixture_model() -> torch.nn.Module:
    return export.random_vimgeo(FIXTURE_MODEL, FIXTURE_SEED, **FIXTURE_OVERRIDES)


def write_fixtures(out: Path, orthophoto: Path = ORTHOPHOTO) -> dict[str, Any]:
    """Write every fixture file into ``out``; returns the golden record."""
    out.mkdir(parents=True, exist_ok=True)
    model = fixture_model()
    manifests = {}
    for form in export.SCAN_FORMS:
        name = f"{FIXTURE_NAME}-{form}"
        previous = _read_manifest(out / f"{name}.json")
        manifest = export.export_vimgeo(model, out, name, scan_form=form)
        if previous.get("onnx_sha256") == manifest["onnx_sha256"] and "created" in previous:
            manifest = {**manifest, "created": previous["created"]}  # same file as before: same birthday
            atomic_write_bytes(out / f"{name}.json", (json.dumps(manifest, indent=2) + "\n").encode())
        manifests[form] = manifest
    contract = manifests["custom"]["input"]
    size = (contract["width"], contract["height"])

    Image.MAX_IMAGE_PIXELS = None
    ortho = Image.open(orthophoto).convert("RGB")
    images = [(f, _gradient(*size) if box is None else _crop(ortho, box, size)) for f, box in IMAGES]
    images.append((ODD_IMAGE[0], _crop(ortho, ODD_IMAGE[1], ODD_SIZE)))

    records = []
    for file, image in images:
        _save_png(image, out / file)
        x = preprocess(Image.open(out / file), contract)  # from the PNG as written, like the Rust side
        with torch.no_grad():
            emb = model.encode(torch.from_numpy(x), branch="drone")[0].numpy().astype(np.float32)
        records.append(
            {
                "file": file,
                "width": image.size[0],
                "height": image.size[1],
                "resized": image.size != size,
                "input_sum": float(x.astype(np.float64).sum()),
                "input_head": [float(v) for v in x.reshape(-1)[:8]],
                "embedding": [float(v) for v in emb],
            }
        )

    golden = {
        "note": (
            "Embeddings from PyTorch (float32, vimgeo.scan) of the drone encoder, for the model in "
            f"{FIXTURE_NAME}-custom.onnx and {FIXTURE_NAME}-portable.onnx (the same weights). Input: the "
            "PNG's RGB pixels as float32, x/scale, then (x-mean)/std per channel, NCHW, with scale/mean/std "
            "from the manifest's 'input'. 'input_sum' (float64 sum of that tensor) and 'input_head' (its "
            "first 8 values: channel 0, row 0) check the preprocessing alone. Images with 'resized': true "
            "are not at the model size: they were resized with PIL's bicubic (Image.resize, BICUBIC, a=-0.5, "
            "filter widened when downscaling, 8-bit between the two passes) BEFORE preprocessing, so another "
            "resize implementation may differ slightly there. The others need no resize, and an engine "
            f"should match their embeddings within 'tolerance' ({TOLERANCE:g} max abs)."
        ),
        "generator": "python -m vimgeo.export fixtures",
        "model": {
            "config": FIXTURE_MODEL,
            "overrides": FIXTURE_OVERRIDES,
            "seed": FIXTURE_SEED,
            "trained": False,
            "manifests": {form: f"{FIXTURE_NAME}-{form}.json" for form in export.SCAN_FORMS},
            "onnx_sha256": {form: m["onnx_sha256"] for form, m in manifests.items()},
        },
        "embedding_dim": manifests["custom"]["output"]["dim"],
        "tolerance": TOLERANCE,
        "images": records,
    }
    atomic_write_bytes(out / "golden.json", (json.dumps(golden, indent=2) + "\n").encode())
    return golden


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m vimgeo.export fixtures", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument(
        "--out", type=Path, required=True, help="fixture folder (the repository's tests/fixtures)"
    )
    ap.add_argument("--orthophoto", type=Path, default=ORTHOPHOTO, help="source of the image crops")
    args = ap.parse_args(argv)
    golden = write_fixtures(args.out, args.orthophoto)
    files = sorted(p.name for p in args.out.iterdir() if p.is_file())
    total = sum((args.out / f).stat().st_size for f in files)
    print(f"wrote {len(files)} files ({total / 1e6:.2f} MB) to {args.out}; E={golden['embedding_dim']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
