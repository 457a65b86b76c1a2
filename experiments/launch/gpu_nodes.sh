#!/usr/bin/env bash
# One process per GPU node (each process drives all GPUs of its node), explicit coordinator.
# Run the same command on every node with its own NODE_RANK (0 .. NUM_NODES-1):
#
#   COORDINATOR=10.0.0.1:1234 NUM_NODES=2 NODE_RANK=0 \
#     experiments/launch/gpu_nodes.sh CONFIG WORKDIR [--config.field=value ...]
#
# WORKDIR must be on a file system every node sees (NFS, or a gs:// path). Under SLURM use
#   srun --nodes=N --ntasks-per-node=1 python -m jaxdet.main --distributed --config=... \
#        --workdir=...
# instead: JAX reads the job from SLURM's environment. Send SIGTERM for preemption
# (e.g. sbatch --signal=TERM@120): every process stops at the same step and saves it.
set -euo pipefail
: "${COORDINATOR:?host:port of node 0}" "${NUM_NODES:?number of nodes}" "${NODE_RANK:?this node}"
if [ $# -lt 2 ]; then
  sed -n '2,13p' "$0"; exit 2
fi
config=$1 workdir=$2; shift 2
exec python -m jaxdet.main --config="$config" --workdir="$workdir" \
  --coordinator_address="$COORDINATOR" --num_processes="$NUM_NODES" --process_id="$NODE_RANK" "$@"
