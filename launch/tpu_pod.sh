#!/usr/bin/env bash
# Cloud TPU pod slices through queued resources: create, install, run the main job on every worker,
# logs of every worker, stop (with a checkpoint), delete. Every command names the TPU by NAME, ZONE.
#
#   launch/tpu_pod.sh create  NAME ZONE ACCELERATOR [RUNTIME] [--spot] [--no-autocheckpoint]
#   launch/tpu_pod.sh status  NAME ZONE                 # the request's state; the job on each worker
#   launch/tpu_pod.sh install NAME ZONE                 # this working tree + a Python 3.12 venv (uv)
#   launch/tpu_pod.sh run     NAME ZONE MAIN_ARGS...    # background job on every worker
#   launch/tpu_pod.sh logs    NAME ZONE [WORKER|all] [--no-follow]   # default: all, followed
#   launch/tpu_pod.sh stop    NAME ZONE                 # SIGTERM: a checkpoint, then the job ends
#   launch/tpu_pod.sh delete  NAME ZONE                 # stops the job, then deletes the TPU
#
# RUNTIME defaults to the software version of the accelerator (v2-v4: tpu-ubuntu2204-base, v5e
# (v5litepod-N): v2-alpha-tpuv5-lite, v5p: v2-alpha-tpuv5, v6e: v2-alpha-tpuv6e). --spot asks for
# Spot capacity. Autocheckpoint (v2-v4 and v5e, not Spot; `gcloud alpha`) is on unless
# --no-autocheckpoint: a maintenance event sends the job SIGTERM and waits for it to save. Workdir: a
# gs:// bucket every worker writes to; `run` again with the same arguments resumes from it.
set -euo pipefail

usage() {
  sed -n '2,17p' "$0" >&2
  exit 2
}
[[ $# -ge 3 ]] || usage
cmd=$1
name=$2
zone=$3
shift 3
# On every worker: ~/flowmap_jax/{src (the code), venv, logs, run.pid}.
python_version=${FLOWMAP_PYTHON_VERSION:-3.12}
stop_timeout=${FLOWMAP_STOP_TIMEOUT:-600}
poll=${FLOWMAP_TPU_POLL_SECONDS:-30}

ssh_worker() {  # ssh_worker WORKER COMMAND
  gcloud compute tpus tpu-vm ssh "$name" --zone "$zone" --worker="$1" --command "$2"
}

ssh_all() {
  ssh_worker all "$1"
}

# A remote script: `NAME=value` lines (quoted here) and then the body read from stdin.
remote() {
  local assignment
  for assignment in "$@"; do
    printf '%s=%q\n' "${assignment%%=*}" "${assignment#*=}"
  done
  cat
}

runtime_for() {
  case $1 in
    v2-* | v3-* | v4-*) echo tpu-ubuntu2204-base ;;
    v5litepod-*) echo v2-alpha-tpuv5-lite ;;
    v5p-*) echo v2-alpha-tpuv5 ;;
    v6e-*) echo v2-alpha-tpuv6e ;;
    *) return 1 ;;
  esac
}

state() {
  gcloud compute tpus queued-resources describe "$name" --zone "$zone" --format='value(state.state)'
}

# Refuses when a job runs on any worker (checked on all of them before anything starts).
check_idle() {
  ssh_all "$(remote <<'EOF'
R=$HOME/flowmap_jax
if [[ -f $R/run.pid ]]; then
  pid=$(cat "$R/run.pid")
  stat=$(ps -o stat= -p "$pid" 2>/dev/null || true)
  if [[ -n $stat && $stat != Z* ]]; then
    echo "$HOSTNAME: a job is running (pid $pid); stop it first: launch/tpu_pod.sh stop" >&2
    exit 1
  fi
fi
EOF
)"
}

case "$cmd" in
  create)
    [[ $# -ge 1 ]] || usage
    accelerator=$1
    shift
    runtime=
    spot=()
    autocheckpoint=1
    for arg in "$@"; do
      case $arg in
        --spot) spot=(--spot) ;;
        --no-autocheckpoint) autocheckpoint=0 ;;
        -*) usage ;;
        *) runtime=$arg ;;
      esac
    done
    if [[ -z $runtime ]] && ! runtime=$(runtime_for "$accelerator"); then
      echo "create: no default software version for $accelerator; give RUNTIME" >&2
      exit 2
    fi
    track=()
    extra=()
    case $accelerator in
      v2-* | v3-* | v4-* | v5litepod-*)
        if [[ ${#spot[@]} -gt 0 ]]; then
          # A Spot slice is reclaimed through the VM's shutdown (SIGTERM, 30 s), not maintenance.
          echo "create: Spot: no Autocheckpoint; a reclaim sends SIGTERM 30 s before the VM stops." >&2
        elif [[ $autocheckpoint -eq 1 ]]; then
          track=(alpha)
          extra=(--autocheckpoint-enabled)
        fi
        ;;
      *)
        echo "create: Cloud TPU offers Autocheckpoint for v2-v4 and v5e only; on $accelerator a" \
          "maintenance event stops the job without a save (the last periodic checkpoint stays)." >&2
        ;;
    esac
    gcloud "${track[@]}" compute tpus queued-resources create "$name" --node-id "$name" \
      --zone "$zone" --accelerator-type "$accelerator" --runtime-version "$runtime" \
      "${spot[@]}" "${extra[@]}"
    # Queued: wait until the slice is there (Ctrl-C leaves the request queued; see `status`).
    last=
    while true; do
      now=$(state)
      [[ $now == "$last" ]] || echo "queued resource $name: $now"
      last=$now
      case $now in
        ACTIVE) break ;;
        FAILED | SUSPENDED | SUSPENDING)
          echo "create: $name is $now; delete it and try another zone or time" >&2
          exit 1
          ;;
      esac
      sleep "$poll"
    done
    echo "ready; next: $0 install $name $zone"
    ;;
  status)
    now=$(state)
    echo "queued resource $name: $now"
    [[ $now == ACTIVE ]] || exit 0
    ssh_all "$(remote <<'EOF'
R=$HOME/flowmap_jax
last=$(grep -v '^[[:space:]]*$' "$R/logs/run.log" 2>/dev/null | tail -n 1 || true)
if [[ -f $R/run.pid ]]; then
  pid=$(cat "$R/run.pid")
  stat=$(ps -o stat= -p "$pid" 2>/dev/null || true)
  if [[ -n $stat && $stat != Z* ]]; then
    echo "[$HOSTNAME] running (pid $pid): $last"
  else
    echo "[$HOSTNAME] ended (pid $pid): $last"
  fi
else
  echo "[$HOSTNAME] no job started"
fi
EOF
)"
    ;;
  install)
    repo=$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)
    revision=$(git -C "$repo" rev-parse --short HEAD)
    changes=$(git -C "$repo" status --porcelain | wc -l)
    if [[ $changes -gt 0 ]]; then
      revision="$revision + $changes uncommitted change(s)"
      echo "install: copying the working tree of $repo: $revision (git status shows them)"
    fi
    check_idle
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    archive=$tmp/flowmap_jax.tar.gz
    # The working tree as it is (tracked files and untracked ones git does not ignore).
    (cd "$repo" && git ls-files -z --cached --others --exclude-standard |
      while IFS= read -r -d '' f; do [[ -e $f ]] && printf '%s\0' "$f"; done |
      tar -czf "$archive" --null -T -)
    gcloud compute tpus tpu-vm scp "$archive" "$name:flowmap_jax.tar.gz" --zone "$zone" --worker=all
    ssh_all "$(remote "PY=$python_version" "REVISION=$revision" <<'EOF'
set -euo pipefail
R=$HOME/flowmap_jax
mkdir -p "$R/logs"
rm -rf "$R/src.new" && mkdir -p "$R/src.new"
tar -xzf "$HOME/flowmap_jax.tar.gz" -C "$R/src.new" && rm -f "$HOME/flowmap_jax.tar.gz"
rm -rf "$R/src" && mv "$R/src.new" "$R/src"
# uv: a Python $PY (downloaded when the image has none, e.g. 3.10 on Ubuntu 22.04) and a resolver
# that does not backtrack for minutes; installed for this user, no sudo.
uv=$(command -v uv || true)
if [[ -z $uv ]]; then
  uv=$HOME/.local/bin/uv
  [[ -x $uv ]] || python3 -m pip install --user --quiet 'uv>=0.5' ||
    curl -LsSf https://astral.sh/uv/install.sh | sh   # uv's own installer, into ~/.local/bin
fi
log=$R/logs/install-$(date -u +%Y%m%d-%H%M%S).log
status=0
{
  echo "code: $REVISION" &&
    "$uv" --version &&
    { [[ -x $R/venv/bin/python ]] || "$uv" venv --python "$PY" "$R/venv"; } &&
    "$uv" pip install --python "$R/venv/bin/python" -e "$R/src" 'jax[tpu]' &&
    # Every version in the venv, then the floors of setup.py (exit 1 if one is not met).
    "$R/venv/bin/python" "$R/src/launch/check_install.py"
} >"$log" 2>&1 || status=$?
# The whole list is in the log; here the main packages and what went wrong.
grep -E -i '^(code:|uv |python |(jax|jaxlib|libtpu|flax|optax|orbax-checkpoint|grain)==|install check|error)' \
  "$log" | sed "s/^/[$HOSTNAME] /" || true
if [[ $status -ne 0 ]]; then
  echo "[$HOSTNAME] install failed (exit $status); the end of $log:" >&2
  tail -n 20 "$log" | sed "s/^/[$HOSTNAME] /" >&2
  exit "$status"
fi
echo "[$HOSTNAME] installed; every version in $log"
EOF
)"
    ;;
  run)
    [[ $# -ge 1 ]] || usage
    check_idle
    ssh_all "$(remote "ARGS=$(printf ' %q' "$@")" <<'EOF'
set -euo pipefail
R=$HOME/flowmap_jax
[[ -x $R/venv/bin/python ]] || { echo "$HOSTNAME: not installed; run tpu_pod.sh install" >&2; exit 1; }
cd "$R/src"
log=$R/logs/run-$(date -u +%Y%m%d-%H%M%S).log
ln -sfn "$log" "$R/logs/run.log"
# nohup execs python: $! is the python process, which `stop` signals.
eval "set -- $ARGS"
nohup "$R/venv/bin/python" -m flowmap_jax.main --distributed "$@" >"$log" 2>&1 </dev/null &
echo $! >"$R/run.pid"
echo "[$HOSTNAME] started pid $!; log $log"
EOF
)"
    echo "started on every worker of $name; follow with: $0 logs $name $zone"
    ;;
  logs)
    worker=all
    follow=(-F)
    for arg in "$@"; do
      case $arg in
        --no-follow) follow=() ;;
        all | [0-9]*) worker=$arg ;;
        *) usage ;;
      esac
    done
    # Every line names its worker ([t1v-n-...-w-3] ...): a crash on worker k shows as one.
    ssh_worker "$worker" "tail -n 100 ${follow[*]} \$HOME/flowmap_jax/logs/run.log | sed -u \"s/^/[\$HOSTNAME] /\""
    ;;
  stop)
    ssh_all "$(remote "TIMEOUT=$stop_timeout" <<'EOF'
R=$HOME/flowmap_jax
alive() { local s; s=$(ps -o stat= -p "$1" 2>/dev/null || true); [[ -n $s && $s != Z* ]]; }
if [[ ! -f $R/run.pid ]]; then echo "[$HOSTNAME] no job started"; exit 0; fi
pid=$(cat "$R/run.pid")
if ! alive "$pid"; then
  echo "[$HOSTNAME] job (pid $pid) had ended: $(grep -v '^[[:space:]]*$' "$R/logs/run.log" | tail -n 1)"
  rm -f "$R/run.pid"
  exit 0
fi
# SIGTERM, as a preemption: the processes agree on a step, save it and exit (code 143).
kill -TERM "$pid"
for ((i = 0; i < TIMEOUT; i++)); do alive "$pid" || break; sleep 1; done
if alive "$pid"; then
  kill -KILL "$pid"
  echo "[$HOSTNAME] pid $pid was still running ${TIMEOUT}s after SIGTERM: killed (SIGKILL)"
else
  echo "[$HOSTNAME] stopped pid $pid: $(grep -h 'Preempted' "$R/logs/run.log" | tail -n 1)"
fi
rm -f "$R/run.pid"
EOF
)"
    ;;
  delete)
    if [[ $(state 2>/dev/null || true) == ACTIVE ]]; then
      "$0" stop "$name" "$zone" || echo "delete: could not stop the job; deleting anyway" >&2
    fi
    gcloud compute tpus queued-resources delete "$name" --zone "$zone" --force --quiet
    ;;
  *)
    usage
    ;;
esac
