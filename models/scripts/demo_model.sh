#!/usr/bin/env bash
# Reproduce the demo model models/vimgeo-demo.onnx (+ .json manifest, + vimgeo-demo-training.png): issue 7.
#
#   models/scripts/demo_model.sh            # from anywhere; everything is relative to the repository root
#
# 1. training/validation pairs from the data folder's orthophotos (`make data`; `vimgeo sim pairs`, spatial split, see
#    the pair-folder format in models/README.md), into target/demo-model/pairs;
# 2. training: `python -m vimgeo.train --config demo` (CPU, chunked scan; 48 min on 2 idle cores, measured);
# 3. evaluation on the validation regions of three methods: the trained model, an untrained model of the same
#    architecture (seed 0) and the NCC baseline (`python -m vimgeo.geo_eval`), plus a markdown table;
# 4. ONNX export with the custom SelectiveScan op to models/vimgeo-demo.onnx and its manifest, whose
#    `training` record holds the orthophotos (and their sha256), the pair-generator settings, the config and
#    the metrics of all three methods; the training curve goes to models/vimgeo-demo-training.png.
#
# Idempotent-ish: a step whose output exists is skipped (FORCE=1 redoes all); an interrupted training run
# resumes from its last checkpoint. Knobs (environment): PY (python), THREADS (torch threads, default 2),
# WORK (default target/demo-model), FORCE, and for smoke tests only: TRAIN_SET (extra `--set key=value`
# overrides of the training config, space-separated) and OUT_DIR (where the model goes; default models/).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
PY=${PY:-$(make -s -C "$ROOT" print-python)}
THREADS=${THREADS:-2}
WORK=${WORK:-$ROOT/target/demo-model}
FORCE=${FORCE:-0}
OUT_DIR=${OUT_DIR:-$ROOT/models}
read -r -a TRAIN_SET <<<"${TRAIN_SET:-}"
NAME=vimgeo-demo
CONFIG=demo
PAIRS=$WORK/pairs
RUN=$WORK/runs/$NAME  # vimgeo.train writes <out>/<config name>
EVAL=$WORK/eval
export OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS

# Orthophotos: PATH[:CRS][@train] (@train: training only, too small for a validation band with margin).
ORTHOS=(
  data:imagery/yell_forest_10cm.png:EPSG:32612
  data:imagery/osbs_forest_10cm_utm17n.tif@train
)
PAIR_FLAGS=(--size 128 --tile-src-px 192 --views 16 --val-fraction 0.25 --seed 7 --calib calib/sim.toml)

step() { printf '\n== %s (%s)\n' "$1" "$(date -u +%H:%M:%S)"; }
pyrun() { (cd "$ROOT/models" && PYTHONPATH=. "$PY" "$@"); }

step "1/5 pairs -> $PAIRS"
if [[ $FORCE == 1 || ! -f $PAIRS/samples.csv ]]; then
  rm -rf "$PAIRS"
  mkdir -p "$WORK"
  ortho_args=()
  for o in "${ORTHOS[@]}"; do ortho_args+=(--ortho "$o"); done
  cargo run --release -- sim pairs "${ortho_args[@]}" --out "$PAIRS" "${PAIR_FLAGS[@]}"
else
  echo "exists, skipped"
fi

step "2/5 training ($CONFIG) -> $RUN"
if [[ $FORCE == 1 && -d $RUN ]]; then rm -rf "$RUN"; fi
if [[ ! -f $RUN/final.pt ]]; then
  set_args=()
  for kv in "${TRAIN_SET[@]}"; do set_args+=(--set "$kv"); done
  pyrun -m vimgeo.train --config "$CONFIG" --data "$PAIRS" --out "$WORK/runs" --device cpu --resume auto \
    "${set_args[@]}"
else
  echo "exists, skipped"
fi

step "3/5 evaluation on the validation regions -> $EVAL"
mkdir -p "$EVAL"
pyrun -m vimgeo.geo_eval --pairs "$PAIRS" --checkpoint "$RUN/final.pt" --name "VimGeo demo (trained)" \
  --out "$EVAL/trained.json"
pyrun -m vimgeo.geo_eval --pairs "$PAIRS" --untrained "$CONFIG" --seed 0 --name "VimGeo demo (untrained, seed 0)" \
  --out "$EVAL/untrained.json"
pyrun -m vimgeo.geo_eval --pairs "$PAIRS" --baseline ncc --name "NCC baseline (64 px, shift search)" \
  --out "$EVAL/ncc.json"
pyrun -m vimgeo.geo_eval --markdown "$EVAL/trained.json" "$EVAL/untrained.json" "$EVAL/ncc.json" \
  --out "$EVAL/comparison.md" >/dev/null

step "4/5 training record -> $WORK/training.json"
ORTHO_SPECS=$(printf '%s\n' "${ORTHOS[@]}") PAIR_FLAGS_TEXT="${PAIR_FLAGS[*]}" PYTHONPATH="$ROOT/models" \
  "$PY" - "$ROOT" "$PAIRS" "$EVAL" "$WORK/training.json" <<'PYEOF'
import hashlib, json, os, sys
from pathlib import Path

from vimgeo.atomic import atomic_write_text

root, pairs, ev, out = (Path(a) for a in sys.argv[1:5])


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


orthos = []
for spec in os.environ["ORTHO_SPECS"].split("\n"):
    body, _, role = spec.partition("@")
    path, _, crs = body.partition(":")
    orthos.append({"spec": spec, "path": path, "crs": crs or None, "train_only": role == "train",
                   "sha256": sha256(root / path)})
pairs_json = pairs / "pairs.json"
record = {
    "description": "demo model for the vimgeo pipeline, trained on pairs cut from a few orthophotos; "
    "NOT a University-1652 model (for real missions, train on real cross-view data and export the same way)",
    "reproduce": "models/scripts/demo_model.sh",
    "orthophotos": orthos,
    "pair_generator": {
        "command": "vimgeo sim pairs " + " ".join(f"--ortho {o['spec']}" for o in orthos)
        + " --out DIR " + os.environ["PAIR_FLAGS_TEXT"],
        "pairs_json": json.loads(pairs_json.read_text()) if pairs_json.exists() else None,
        "samples_csv_sha256": sha256(pairs / "samples.csv"),
    },
    "evaluation": {
        "split": "val",
        "results": {k: json.loads((ev / f"{k}.json").read_text()) for k in ("trained", "untrained", "ncc")},
        "table": (ev / "comparison.md").read_text(),
    },
}
atomic_write_text(out, json.dumps(record, indent=2) + "\n")
print(f"wrote {out}")
PYEOF

step "5/5 export -> $OUT_DIR/$NAME.onnx, $NAME.json, $NAME-training.png"
pyrun -m vimgeo.export --checkpoint "$RUN/final.pt" --out-dir "$OUT_DIR" --name "$NAME" --scan-form custom \
  --training-extra "$WORK/training.json"
cp "$RUN/metrics.png" "$OUT_DIR/.$NAME-training.png.tmp"
mv "$OUT_DIR/.$NAME-training.png.tmp" "$OUT_DIR/$NAME-training.png"

echo
cat "$EVAL/comparison.md"
ls -l "$OUT_DIR/$NAME.onnx" "$OUT_DIR/$NAME.json" "$OUT_DIR/$NAME-training.png"
