#!/usr/bin/env bash
# One GPU session's checks, in priority order (the lent GPU machines hold jax[cuda], flax, optax,
# orbax and chex but not TensorFlow/TFDS/grain/clu/pycocotools, and reach no network):
#   1. train-step images/s (experiments/benchmarks/train_step.py) for Faster and Mask R-CNN at
#      the synthetic configs' size and at the COCO configs' 1344 x 1344, float32 and bfloat16;
#   2. the detection ops' unit tests (tests/ops: NumPy / torchvision goldens) on the GPU.
# Usage on the device machine, from the repo root, with the ml_collections wheel in .whl/:
#   OUT=/some/dir bash experiments/benchmarks/gpu_checks.sh
# Results: $OUT/train_step_gpu.md, $OUT/ops_tests_gpu.log.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site \
    .whl/*.whl && export PYTHONPATH=/tmp/site
export PYTHONUNBUFFERED=1 JAX_PLATFORMS=cuda TF_CPP_MIN_LOG_LEVEL=3
nvidia-smi -L
python3 -c "import jax, flax, optax, orbax.checkpoint, chex; print('jax', jax.__version__,
'flax', flax.__version__, 'optax', optax.__version__, jax.devices())"
bench() {  # bench <seconds> <train_step.py args...>
  local limit=$1; shift
  timeout "$limit" python3 experiments/benchmarks/without_input_stack.py \
      experiments/benchmarks/train_step.py --steps=20 --out="$OUT/train_step_gpu.md" "$@" \
      || echo "FAILED or timed out ($limit s): $*"
}
bench 120 --config=configs/faster_rcnn_shapes.py
bench 120 --config=configs/mask_rcnn_shapes.py
bench 150 --config=configs/faster_rcnn_coco.py --batch=2
bench 150 --config=configs/mask_rcnn_coco.py --batch=2
bench 150 --config=configs/faster_rcnn_coco.py --batch=2 model.dtype=bfloat16
timeout 150 python3 -m pytest -q -x -p no:cacheprovider tests/ops 2>&1 \
    | tee "$OUT/ops_tests_gpu.log" | tail -15
