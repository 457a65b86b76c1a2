#!/usr/bin/env bash
# A multi-host run on one machine: N processes on 127.0.0.1, each with D simulated CPU
# devices, CPU collectives over gloo. What the pod scripts do, testable here.
#
#   experiments/launch/local_processes.sh N D CONFIG WORKDIR [--config.field=value ...]
#   e.g. experiments/launch/local_processes.sh 2 2 configs/segmentation.py:runlocal /tmp/two
#
# Process i's log: WORKDIR/process_i.log. Exits non-zero if any process failed.
set -uo pipefail
if [ $# -lt 4 ]; then
  sed -n '2,8p' "$0"; exit 2
fi
n=$1 d=$2 config=$3 workdir=$4; shift 4
cd "$(dirname "$0")/../.."
python=${PYTHON:-.venv/bin/python}
port=$($python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p "$workdir"
pids=()
for ((i = 0; i < n; i++)); do
  JAX_PLATFORMS=cpu XLA_FLAGS="--xla_force_host_platform_device_count=$d" \
    "$python" -m jaxdet.main --config="$config" --workdir="$workdir" \
    --coordinator_address="127.0.0.1:$port" --num_processes="$n" --process_id="$i" "$@" \
    > "$workdir/process_$i.log" 2>&1 &
  pids+=($!)
done
rc=0
for i in "${!pids[@]}"; do
  wait "${pids[$i]}" || { echo "process $i failed: see $workdir/process_$i.log" >&2; rc=1; }
done
exit $rc
