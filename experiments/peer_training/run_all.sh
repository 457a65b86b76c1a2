#!/usr/bin/env bash
# The whole issue-19 comparison: three VOC folders, torchvision's recipe and jaxdet's default VOC
# config, 1,000 steps x batch 4 at 256 px each, the interleaved speed check, then the COCO
# configs' small-budget variants on the held-out set as a COCO folder.
# About 7.5 h on the project's 2-core VM (torchvision ~90 min per set, jaxdet ~37 min per set);
# each side's result is cached under $ROOT/peer, so a rerun continues where it stopped.
#   bash experiments/peer_training/run_all.sh [ROOT=~/peer_data]
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=${1:-$HOME/peer_data}
PY=${PY:-.venv/bin/python}
sets=()
for style in shapes textures clutter; do
  [ -d "$ROOT/$style" ] || $PY -m jaxdet.data.synthetic_voc --out="$ROOT/$style" --style=$style
  sets+=(--set "$style=$ROOT/$style")
done
$PY experiments/peer_training/compare.py "${sets[@]}" --steps=1000 --batch=4 --image_size=256 \
    --workroot=workdirs/peer --out=experiments/results/peer_training_table.md
$PY experiments/peer_training/speed.py --voc="$ROOT/shapes" --rounds=10 \
    --out=experiments/results/peer_training_table.md -- data.image_size=256
# The COCO configs' small-budget variants (1,000 steps x batch 4 at 256 px, their defaults) on
# the held-out set written as a COCO folder (the same images, visible-pixel masks); ~45 min each.
[ -d "$ROOT/coco_clutter" ] || $PY -m jaxdet.data.synthetic_voc --out="$ROOT/coco_clutter" \
    --style=clutter --format=coco
for kind in faster mask; do
  $PY -m jaxdet.main --config=configs/${kind}_rcnn_coco.py:small \
      --workdir=workdirs/peer/coco_clutter_${kind}_small --config.data.path="$ROOT/coco_clutter"
done
