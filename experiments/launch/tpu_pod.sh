#!/usr/bin/env bash
# Train on a Cloud TPU VM pod slice: every worker runs the same command; JAX detects the
# job (process count, ids, coordinator) from the TPU metadata (--distributed).
#
#   experiments/launch/tpu_pod.sh TPU_NAME ZONE CONFIG WORKDIR [--config.field=value ...]
#   e.g. experiments/launch/tpu_pod.sh my-v4-32 us-central2-b \
#          configs/faster_rcnn_coco.py gs://my-bucket/jaxdet/frcnn_r50
#
# WORKDIR must be shared by all workers (a gs:// bucket path: Orbax writes checkpoints there,
# process 0 writes metrics). The repo must already be on every worker, e.g.:
#   gcloud compute tpus tpu-vm ssh TPU_NAME --zone ZONE --worker=all \
#     --command="git clone <repo> jaxdet && cd jaxdet && pip install -e . 'jax[tpu]'"
# Preemption (spot/preemptible slices): the workers get SIGTERM; all of them stop at the same
# step and save it, and rerunning this script resumes.
set -euo pipefail
if [ $# -lt 4 ]; then
  sed -n '2,15p' "$0"; exit 2
fi
tpu=$1 zone=$2 config=$3 workdir=$4; shift 4
gcloud compute tpus tpu-vm ssh "$tpu" --zone "$zone" --worker=all --command="
  cd jaxdet && python -m jaxdet.main --distributed --config=$config --workdir=$workdir $*"
