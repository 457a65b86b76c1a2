#!/usr/bin/env bash
# The segmentation rung of the lecture, one run per model, on the synthetic scenes.
# Each run writes workdirs/seg_<variant>/eval_results.json; results.md records what we measured.
#   [PYTHON=.venv/bin/python] bash experiments/segmentation/run_ladder.sh [variant ...]
set -euo pipefail
cd "$(dirname "$0")/../.."
variants=("$@")
[ ${#variants[@]} -gt 0 ] || variants=(unpool transpose colour sliding_window)
for v in "${variants[@]}"; do
  extra=()
  case "$v" in
    colour) extra=(--config.num_train_steps=1000) ;;
    # The slow baseline: trained on a stride-8 grid of crops, evaluated on every pixel of the
    # first 40 validation images (3,276,800 crop classifications... of 25x25 crops).
    sliding_window) extra=(--config.num_train_steps=400 --config.eval_limit=40
                           --config.eval_every_steps=0) ;;
  esac
  start=$(date +%s)
  "${PYTHON:-python}" -m jaxdet.main --config="configs/segmentation.py:$v" --workdir="workdirs/seg_$v" \
      --config.progress_bar=False "${extra[@]}"
  echo "seg_$v: $(( $(date +%s) - start )) s wall"
done
