#!/usr/bin/env bash
# N processes of the main job on this machine (127.0.0.1), each with D simulated CPU devices,
# joined by jax.distributed: the multi-host code path without a cluster.
#
#   launch/local.sh 2 4 --config configs/itvm_checkerboard.py:smoke --workdir runs/local2x4
#
# Process 0 prints to the terminal; process i>0 logs to $FLOWMAP_LOG_DIR/process_i.log (default:
# a fresh temporary folder). Ctrl-C / SIGTERM stops exactly the processes started here (by pid).
set -euo pipefail

if [[ $# -lt 3 ]]; then
  echo "usage: $0 NUM_PROCESSES DEVICES_PER_PROCESS MAIN_ARGS..." >&2
  exit 2
fi
num_processes=$1
devices=$2
shift 2
port=${FLOWMAP_PORT:-$(python -c 'import portpicker; print(portpicker.pick_unused_port())')}
log_dir=${FLOWMAP_LOG_DIR:-$(mktemp -d)}
mkdir -p "$log_dir"

pids=()
# Stop exactly the processes started here, by pid.
trap 'kill "${pids[@]}" 2>/dev/null || true' INT TERM

for ((i = 0; i < num_processes; i++)); do
  if [[ $i -eq 0 ]]; then out=/dev/stdout; else out="$log_dir/process_$i.log"; fi
  XLA_FLAGS="--xla_force_host_platform_device_count=$devices" \
  FLOWMAP_DISTRIBUTED=1 \
  FLOWMAP_COORDINATOR="127.0.0.1:$port" \
  FLOWMAP_NUM_PROCESSES="$num_processes" \
  FLOWMAP_PROCESS_ID="$i" \
    python -m flowmap_jax.main "$@" >"$out" 2>&1 &
  pids+=($!)
done

status=0
for pid in "${pids[@]}"; do
  wait "$pid" || status=$?
done
if [[ $status -ne 0 ]]; then
  echo "a process failed (exit $status); logs of processes 1.. in $log_dir" >&2
fi
exit "$status"
