#!/usr/bin/env bash
# The demo model through the onboard path (issue 7): `vimgeo cache build` over the whole Yellowstone
# orthophoto with the trained model and with an untrained one of the same architecture, `vimgeo cache query`
# of every validation view, scored by `python -m vimgeo.cache_eval` (models/README.md has the table).
#
#   models/scripts/cache_eval.sh       # needs the pair folder of models/scripts/demo_model.sh (its step 1)
#
# Knobs (environment): PY (python), WORK (default target/demo-model), PAIRS (default $WORK/pairs), OUT
# (default $WORK/cache-eval), ORT_DYLIB_PATH (else the Python environment's ONNX Runtime, as `vimgeo` finds it).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
PY=${PY:-$(make -s -C "$ROOT" print-python)}
WORK=${WORK:-$ROOT/target/demo-model}
PAIRS=${PAIRS:-$WORK/pairs}
OUT=${OUT:-$WORK/cache-eval}
if [[ ! -f $PAIRS/samples.csv ]]; then
  echo "no pair folder at $PAIRS: run models/scripts/demo_model.sh (its first step writes it)" >&2
  exit 2
fi
mkdir -p "$OUT"
cargo build --release --quiet
VIMGEO=$ROOT/target/release/vimgeo
(cd models && PYTHONPATH=. "$PY" -m vimgeo.export --config demo --img-size 128 --seed 0 \
  --out-dir "$OUT" --name vimgeo-demo-untrained)
mapfile -t VIEWS < <(awk -F, -v root="$PAIRS" 'NR > 1 && $1 == "val" && $2 == "drone" { print root "/" $4 }' \
  "$PAIRS/samples.csv")
for model in "$ROOT/models/vimgeo-demo.onnx" "$OUT/vimgeo-demo-untrained.onnx"; do
  name=$(basename "$model" .onnx)
  rm -f "$OUT/$name.vgc"
  "$VIMGEO" cache build --ortho data:imagery/yell_forest_10cm.png --crs EPSG:32612 \
    --model "$model" --out "$OUT/$name.vgc" --footprint 19.2 --stride 0.5 --dtype f32
  "$VIMGEO" cache query --model "$model" "$OUT/$name.vgc" --top-k 1000 "${VIEWS[@]}" >"$OUT/$name.jsonl.tmp"
  mv "$OUT/$name.jsonl.tmp" "$OUT/$name.jsonl"
done
(cd models && PYTHONPATH=. "$PY" -m vimgeo.cache_eval --pairs "$PAIRS" --label trained untrained \
  --query "$OUT/vimgeo-demo.jsonl" "$OUT/vimgeo-demo-untrained.jsonl") | tee "$OUT/table.md"
