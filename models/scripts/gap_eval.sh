#!/usr/bin/env bash
# The appearance gap measured on retrieval (issue 14): validation views of the Yellowstone orthophoto rendered
# with each appearance preset (`vimgeo sim pairs --appearance none|mild|strong`, the demo model's pair settings
# and seed, so the validation band is the one the demo model never trained on), scored through the product path
# for the trained and an untrained demo model (models/scripts/cache_eval.sh: `vimgeo cache build` of the
# untouched map + `vimgeo cache query`), and by two classical baselines (`python -m vimgeo.geo_eval --baseline
# ncc|orb`; ORB needs opencv, installed from models/requirements-eval.txt into a cached folder of its own).
#
#   models/scripts/gap_eval.sh            # about 10 minutes on 2 cores; tables in target/gap-eval/
#
# Knobs (environment): PY, WORK (default target/gap-eval), PRESETS (default "none mild strong"), VIEWS (drone
# views per tile, default 4).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
PY=${PY:-$(make -s -C "$ROOT" print-python)}
WORK=${WORK:-$ROOT/target/gap-eval}
PRESETS=${PRESETS:-none mild strong}
VIEWS=${VIEWS:-4}
cargo build --release --quiet
mkdir -p "$WORK"
EXTRA=$HOME/.cache/vimgeo/eval-$(sha256sum models/requirements-eval.txt | cut -c1-12)
if [[ ! -f $EXTRA/.complete ]]; then
  rm -rf "$EXTRA.partial"
  "$PY" -m pip install --quiet --no-deps --no-cache-dir --disable-pip-version-check --target "$EXTRA.partial" \
    -r models/requirements-eval.txt
  touch "$EXTRA.partial/.complete"
  rm -rf "$EXTRA"
  mv "$EXTRA.partial" "$EXTRA"
fi
for preset in $PRESETS; do
  pairs=$WORK/pairs-$preset
  if [[ ! -f $pairs/samples.csv ]]; then
    rm -rf "$pairs"
    ./target/release/vimgeo sim pairs --ortho data:imagery/yell_forest_10cm.png:EPSG:32612 --out "$pairs" \
      --size 128 --tile-src-px 192 --views "$VIEWS" --val-fraction 0.25 --seed 7 --calib calib/sim.toml \
      --appearance "$preset"
  fi
  PY=$PY PAIRS=$pairs OUT=$WORK/cache-$preset models/scripts/cache_eval.sh >"$WORK/product-$preset.md"
  (cd models && PYTHONPATH=. "$PY" -m vimgeo.geo_eval --pairs "$pairs" --baseline ncc \
    --name "NCC baseline (64 px, shift search)" --out "$WORK/ncc-$preset.json")
  (cd models && PYTHONPATH=.:$EXTRA "$PY" -m vimgeo.geo_eval --pairs "$pairs" --baseline orb \
    --name "ORB + RANSAC baseline (256 px)" --out "$WORK/orb-$preset.json")
  (cd models && PYTHONPATH=. "$PY" -m vimgeo.geo_eval --markdown "$WORK/ncc-$preset.json" \
    "$WORK/orb-$preset.json" --out "$WORK/baselines-$preset.md" >/dev/null)
done
for preset in $PRESETS; do
  echo "### appearance $preset"
  echo
  cat "$WORK/product-$preset.md"
  echo
  cat "$WORK/baselines-$preset.md"
  echo
done | tee "$WORK/table.md"
