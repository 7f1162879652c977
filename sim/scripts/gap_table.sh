#!/usr/bin/env bash
# The closed-loop flights across the appearance gap, in sample and out of sample, at several heights: one
# `vimgeo sim` run each (release build, real time, ~100 s a run), then one markdown table from their
# summary.json files (sim/README.md carries the latest).
#
#   sim/scripts/gap_table.sh                 # all runs (about 15 minutes on 2 cores)
#   RUNS="yell2:mild:30" sim/scripts/gap_table.sh
#
# A run is MAP:PRESET:HEIGHT, MAP one of
#   yell   sim/scenarios/yell-gnss-denied.toml   (IN SAMPLE: the demo model trained on this orthophoto)
#   yell2  sim/scenarios/yell2-gnss-denied-mild.toml (OUT OF SAMPLE: never trained or tuned on)
# (yell2 at 50 m is refused: in the turns the view below the optical axis leaves that small map.)
# Knobs (environment): RUNS, FORCE (1: fly runs whose summary exists again), ORT_DYLIB_PATH (else the Python environment's ONNX Runtime), OUT (default
# target/gap).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
OUT=${OUT:-$ROOT/target/gap}
RUNS=${RUNS:-"yell:none:30 yell:mild:30 yell:strong:30 yell2:none:30 yell2:mild:30 yell2:strong:30 yell2:mild:22 yell2:mild:40"}
FORCE=${FORCE:-0}
if [[ -z ${ORT_DYLIB_PATH:-} ]]; then
  PY=$(make -s print-python)
  ORT_DYLIB_PATH=$(ls "$(dirname "$PY")"/../lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so* | head -1)
  export ORT_DYLIB_PATH
fi
cargo build --release --quiet
mkdir -p "$OUT"
for run in $RUNS; do
  IFS=: read -r map preset height <<<"$run"
  case $map in
    yell) scenario=sim/scenarios/yell-gnss-denied.toml ;;
    yell2) scenario=sim/scenarios/yell2-gnss-denied-mild.toml ;;
    *) echo "unknown map $map in $run" >&2; exit 2 ;;
  esac
  echo "== $run"
  if [[ $FORCE != 1 && -f $OUT/$map-$preset-h$height/summary.json ]]; then
    echo "flown before, kept (FORCE=1 flies it again)"
    continue
  fi
  ./target/release/vimgeo sim --scenario "$scenario" --appearance "$preset" --height "$height" \
    --out "$OUT/$map-$preset-h$height" >"$OUT/$map-$preset-h$height.log" 2>&1 || {
    echo "failed: see $OUT/$map-$preset-h$height.log" >&2
    exit 1
  }
done
python3 - "$OUT" $RUNS <<'PYEOF'
import json, sys
from pathlib import Path

out, runs = Path(sys.argv[1]), sys.argv[2:]
sample = {"yell": "in sample", "yell2": "OUT of sample"}
print("| map | model saw it | preset | height m | fixes | fix % of frames | median m | p95 m | max m | outside accuracy % |")
print("|---|---|---|---|---|---|---|---|---|---|")
for run in runs:
    m, preset, h = run.split(":")
    s = json.loads((out / f"{m}-{preset}-h{h}" / "summary.json").read_text())
    e = s["error"]
    print(f"| {m} | {sample[m]} | {preset} | {h} | {s['fixes_received']} | {100 * s['fix_fraction_of_frames']:.0f} | "
          f"{e['median_m']:.1f} | {e['p95_m']:.1f} | {e['max_m']:.1f} | {s['exceeding_accuracy_pct']:.1f} |")
PYEOF
