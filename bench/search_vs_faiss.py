#!/usr/bin/env python3
"""Exact top-k search: vimgeo's kernels against faiss-cpu on the same data, in the same run.

Generates seeded L2-normalised embeddings and queries, writes them as raw little-endian f32 (the form
`vimgeo bench search --data/--queries` reads), runs the vimgeo benchmark on them, then faiss:

- IndexFlatIP (f32 storage), one query per call (the onboard case: one frame at a time) and all queries
  in one call (faiss's batched BLAS path, for reference);
- IndexScalarQuantizer QT_fp16 with inner product (f16 storage), one query per call.

and prints ms per query and the ratios (faiss / vimgeo: above 1 means vimgeo is faster). It also checks
that both return the same top-k for the first query.

Run it in its own small venv (never the models/ one):

    python3 -m venv ~/.cache/vimgeo/bench-venv
    ~/.cache/vimgeo/bench-venv/bin/pip install -r bench/requirements.txt
    cargo build --release
    ~/.cache/vimgeo/bench-venv/bin/python bench/search_vs_faiss.py --tiles 1000000 --dim 384
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np


def normalised(rng: np.random.Generator, rows: int, dim: int, chunk: int = 1 << 16) -> np.ndarray:
    out = np.empty((rows, dim), dtype=np.float32)
    for start in range(0, rows, chunk):
        block = rng.standard_normal((min(chunk, rows - start), dim), dtype=np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        out[start : start + len(block)] = block
    return out


def time_per_query(search, queries: np.ndarray, k: int) -> list[float]:
    search(queries[:1], k)  # warm-up
    ms = []
    for i in range(len(queries)):
        t = time.perf_counter()
        search(queries[i : i + 1], k)
        ms.append((time.perf_counter() - t) * 1e3)
    return ms


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tiles", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--queries", type=int, default=20)
    p.add_argument("--top-k", type=int, default=10)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--vimgeo", default="target/release/vimgeo", help="the vimgeo binary")
    p.add_argument("--workdir", default=None, help="where the raw data goes (default: a temp dir)")
    p.add_argument("--cache-dir", default=None, help="also measure a loaded cache's memory (vimgeo)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = p.parse_args()

    import faiss  # imported late so --help works without it

    rng = np.random.default_rng(args.seed)
    x = normalised(rng, args.tiles, args.dim)
    q = normalised(rng, args.queries, args.dim)
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        data_path = os.path.join(tmp, "embeddings.f32")
        query_path = os.path.join(tmp, "queries.f32")
        x.astype("<f4").tofile(data_path)
        q.astype("<f4").tofile(query_path)
        cmd = [
            args.vimgeo, "bench", "search", "--dim", str(args.dim), "--top-k", str(args.top_k),
            "--threads", str(args.threads), "--iters", str(args.queries), "--data", data_path,
            "--queries", query_path, "--json",
        ]  # fmt: skip
        if args.cache_dir:
            cmd += ["--tiles", str(args.tiles), "--cache-dir", args.cache_dir]
        ours = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)

    faiss.omp_set_num_threads(args.threads)
    results = {"vimgeo": ours, "faiss": {"version": faiss.__version__, "threads": args.threads}}

    flat = faiss.IndexFlatIP(args.dim)
    flat.add(x)
    ms = time_per_query(flat.search, q, args.top_k)
    results["faiss"]["flat_f32_ms_median"] = float(np.median(ms))
    t = time.perf_counter()
    _, batch_ids = flat.search(q, args.top_k)
    results["faiss"]["flat_f32_batched_ms_per_query"] = (time.perf_counter() - t) * 1e3 / len(q)
    del flat

    sq = faiss.IndexScalarQuantizer(args.dim, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
    sq.train(x[: min(len(x), 10_000)])
    sq.add(x)
    ms = time_per_query(sq.search, q, args.top_k)
    results["faiss"]["sq_f16_ms_median"] = float(np.median(ms))
    del sq

    timing = {t["dtype"]: t for t in ours["timings"]}
    ratios = {}
    if "f32" in timing:
        ratios["flat_f32_vs_vimgeo_f32"] = results["faiss"]["flat_f32_ms_median"] / timing["f32"]["ms_median"]
        ours_top = [i for i, _ in timing["f32"]["first_query_top"]]
        results["same_top_k_first_query_f32"] = len(set(ours_top) & set(batch_ids[0].tolist()))
    if "f16" in timing:
        ratios["sq_f16_vs_vimgeo_f16"] = results["faiss"]["sq_f16_ms_median"] / timing["f16"]["ms_median"]
    results["ratios_faiss_over_vimgeo"] = ratios

    if args.json:
        print(json.dumps(results))
        return 0
    print(f"top-{args.top_k} over {ours['tiles']} x {args.dim}, {args.queries} queries, {args.threads} threads")
    print(f"copy bandwidth (vimgeo run): {ours['copy_gb_s']:.1f} GB/s; streaming read {ours['read_gb_s']:.1f} GB/s")
    for dt in ("f16", "f32"):
        if dt in timing:
            t = timing[dt]
            print(
                f"vimgeo {dt} ({ours['kernel']}): {t['ms_median']:.2f} ms/query; "
                f"copy bound {t['bound_ms']:.2f} ms ({t['vs_bound']:.2f}x), "
                f"read bound {t['read_bound_ms']:.2f} ms ({t['vs_read_bound']:.2f}x)"
            )
    f = results["faiss"]
    print(f"faiss {f['version']} IndexFlatIP f32, 1 query/call: {f['flat_f32_ms_median']:.2f} ms/query")
    print(f"faiss IndexFlatIP f32, {args.queries} queries/call: {f['flat_f32_batched_ms_per_query']:.2f} ms/query")
    print(f"faiss IndexScalarQuantizer fp16 IP, 1 query/call: {f['sq_f16_ms_median']:.2f} ms/query")
    for name, r in ratios.items():
        print(f"ratio {name}: {r:.2f} (faiss ms / vimgeo ms; >1 = vimgeo faster)")
    if "same_top_k_first_query_f32" in results:
        print(f"first query: {results['same_top_k_first_query_f32']}/{args.top_k} of the top-k agree (f32)")
    if ours.get("cache_memory"):
        m = ours["cache_memory"]
        print(f"loaded cache: {m['file_bytes'] / 1e6:.0f} MB file; RSS kB before {m['before_kb']} after {m['after_kb']}"
              " [VmRSS, RssAnon, RssFile, VmHWM]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
