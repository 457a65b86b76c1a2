#!/usr/bin/env bash
# GPU checks in two parts, one device command each (the lent GPU machines
# hold jax[cuda], flax, optax, orbax, chex, torch and torchvision but not
# TensorFlow/TFDS/grain/clu/pycocotools, and reach no network):
#   versus (default): jaxdet vs torchvision (experiments/benchmarks/vs_torchvision.py) at COCO
#      size: R50-FPN, batch 8, 1344 x 1344, Mask R-CNN bf16 (torchvision under autocast), then
#      f32 (the bf16 / f32 ratio); both libraries in one process, so JAX takes at most
#      45 % of the GPU's memory (the f32 run may not fit an 80 GB card: prefer nvidia-h200);
#   steps: train-step images/s (experiments/benchmarks/train_step.py) for Faster and Mask
#      R-CNN at the synthetic configs' size and at the COCO configs' 1344 x 1344, float32 and
#      bfloat16, then the detection ops' unit tests (tests/ops) on the GPU.
# Usage on the device machine, from the repo root, with the ml_collections wheel in .whl/:
#   OUT=/some/dir bash experiments/benchmarks/gpu_checks.sh [versus|steps]
# Results: $OUT/vs_torchvision_gpu.md (each run's round lines on stdout as they finish),
# $OUT/train_step_gpu.md, $OUT/ops_tests_gpu.log.
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
versus() {  # versus <seconds> <vs_torchvision.py args...>
  local limit=$1; shift
  XLA_PYTHON_CLIENT_MEM_FRACTION=0.45 timeout "$limit" python3 \
      experiments/benchmarks/without_input_stack.py experiments/benchmarks/vs_torchvision.py \
      --device=cuda --depth=50 --batch=8 --image_size=1344 --rounds=3 --warmup=1 \
      --out="$OUT/vs_torchvision_gpu.md" "$@" || echo "FAILED or timed out ($limit s): $*"
}
if [ "${1:-versus}" = versus ]; then
  versus 300 --model=mask --precision=bf16
  versus 240 --model=mask --precision=f32
  exit 0
fi
bench 120 --config=configs/faster_rcnn_shapes.py
bench 120 --config=configs/mask_rcnn_shapes.py
bench 150 --config=configs/faster_rcnn_coco.py --batch=2
bench 150 --config=configs/mask_rcnn_coco.py --batch=2
bench 150 --config=configs/faster_rcnn_coco.py --batch=2 model.dtype=bfloat16
timeout 150 python3 -m pytest -q -x -p no:cacheprovider tests/ops 2>&1 \
    | tee "$OUT/ops_tests_gpu.log" | tail -15
