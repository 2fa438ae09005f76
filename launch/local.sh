#!/usr/bin/env bash
# N processes of the main job on this machine (127.0.0.1), each with D simulated CPU devices,
# joined by jax.distributed: the multi-host code path without a cluster.
#
#   launch/local.sh 2 4 --config configs/itvm_checkerboard.py:smoke --workdir runs/local2x4
#
# Process 0 prints to the terminal; process i>0 logs to $FLOWMAP_LOG_DIR/process_i.log (default:
# a fresh temporary folder). Your XLA_FLAGS are kept (the device count is added). When a process
# fails, the others are stopped and its log's end is shown: the rest would wait for it in their
# next collective. Ctrl-C / SIGTERM stops exactly the processes started here (by pid).
set -euo pipefail

if [[ $# -lt 3 ]]; then
  echo "usage: $0 NUM_PROCESSES DEVICES_PER_PROCESS MAIN_ARGS..." >&2
  exit 2
fi
num_processes=$1
devices=$2
shift 2
port=${FLOWMAP_PORT:-$(python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])')}
log_dir=${FLOWMAP_LOG_DIR:-$(mktemp -d)}
mkdir -p "$log_dir"

pids=()
# Stop exactly the processes started here, by pid.
trap 'kill "${pids[@]}" 2>/dev/null || true' INT TERM

for ((i = 0; i < num_processes; i++)); do
  if [[ $i -eq 0 ]]; then out=/dev/stdout; else out="$log_dir/process_$i.log"; fi
  XLA_FLAGS="${XLA_FLAGS:-} --xla_force_host_platform_device_count=$devices" \
  FLOWMAP_DISTRIBUTED=1 \
  FLOWMAP_COORDINATOR="127.0.0.1:$port" \
  FLOWMAP_NUM_PROCESSES="$num_processes" \
  FLOWMAP_PROCESS_ID="$i" \
    python -m flowmap_jax.main "$@" >"$out" 2>&1 &
  pids+=($!)
done

ended() {  # an exited child is a zombie until waited for
  local s
  s=$(ps -o stat= -p "$1" 2>/dev/null || true)
  [[ -z $s || $s == Z* ]]
}

status=0
kill_at=
running=("${!pids[@]}")
while [[ ${#running[@]} -gt 0 ]]; do
  if [[ -n $kill_at && $SECONDS -ge $kill_at ]]; then  # SIGTERM did not end them (in a collective)
    for j in "${running[@]}"; do kill -KILL "${pids[$j]}" 2>/dev/null || true; done
  fi
  still=()
  for i in "${running[@]}"; do
    if ! ended "${pids[$i]}"; then
      still+=("$i")
      continue
    fi
    code=0
    wait "${pids[$i]}" || code=$?
    if [[ $code -ne 0 && $status -eq 0 ]]; then
      status=$code
      echo "process $i failed (exit $code); stopping the others" >&2
      if [[ $i -gt 0 ]]; then tail -n 20 "$log_dir/process_$i.log" >&2; fi
      for j in "${running[@]}"; do
        if [[ $j -ne $i ]]; then kill -TERM "${pids[$j]}" 2>/dev/null || true; fi
      done
      kill_at=$((SECONDS + 15))
    fi
  done
  running=("${still[@]+"${still[@]}"}")
  if [[ ${#running[@]} -gt 0 ]]; then sleep 0.5; fi
done
if [[ $status -ne 0 ]]; then
  echo "a process failed (exit $status); logs of processes 1.. in $log_dir" >&2
fi
exit "$status"
