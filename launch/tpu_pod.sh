#!/usr/bin/env bash
# Cloud TPU VM pod slices: create, install, run the main job on every worker, stream logs, stop,
# delete. Every command names the TPU by NAME and ZONE; jobs are stopped by the pid they wrote.
#
#   launch/tpu_pod.sh create  NAME ZONE ACCELERATOR [RUNTIME]   # e.g. v5litepod-64 v2-alpha-tpuv5-lite
#   launch/tpu_pod.sh install NAME ZONE                         # copies this checkout, pip installs
#   launch/tpu_pod.sh run     NAME ZONE MAIN_ARGS...            # background job on all workers
#   launch/tpu_pod.sh logs    NAME ZONE                         # follow worker 0's log
#   launch/tpu_pod.sh stop    NAME ZONE                         # kill the job by its pid
#   launch/tpu_pod.sh delete  NAME ZONE
#
# The workdir must be shared by the workers (a gs:// bucket): every host writes its part of each
# Orbax checkpoint, and a restarted job resumes from it.
set -euo pipefail

usage() {
  sed -n '2,14p' "$0" >&2
  exit 2
}
[[ $# -ge 3 ]] || usage
cmd=$1
name=$2
zone=$3
shift 3
remote_dir=flowmap_jax

ssh_all() {
  gcloud compute tpus tpu-vm ssh "$name" --zone "$zone" --worker=all --command "$1"
}

case "$cmd" in
  create)
    [[ $# -ge 1 ]] || usage
    accelerator=$1
    runtime=${2:-tpu-ubuntu2204-base}
    gcloud compute tpus tpu-vm create "$name" --zone "$zone" \
      --accelerator-type "$accelerator" --version "$runtime"
    ;;
  install)
    repo=$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)
    archive=$(mktemp --suffix=.tar.gz)
    git -C "$repo" archive --format=tar.gz -o "$archive" HEAD
    gcloud compute tpus tpu-vm scp "$archive" "$name:flowmap_jax.tar.gz" --zone "$zone" --worker=all
    rm -f "$archive"
    ssh_all "rm -rf $remote_dir && mkdir -p $remote_dir && tar -xzf flowmap_jax.tar.gz -C $remote_dir \
      && cd $remote_dir && pip install -q -e . 'jax[tpu]'"
    ;;
  run)
    [[ $# -ge 1 ]] || usage
    args=$(printf ' %q' "$@")
    ssh_all "cd $remote_dir && nohup python -m flowmap_jax.main --distributed$args \
      > run.log 2>&1 < /dev/null & echo \$! > run.pid"
    echo "started on every worker of $name; follow with: $0 logs $name $zone"
    ;;
  logs)
    gcloud compute tpus tpu-vm ssh "$name" --zone "$zone" --worker=0 \
      --command "tail -n 100 -f $remote_dir/run.log"
    ;;
  stop)
    ssh_all "test -f $remote_dir/run.pid && kill \$(cat $remote_dir/run.pid) || true"
    ;;
  delete)
    gcloud compute tpus tpu-vm delete "$name" --zone "$zone" --quiet
    ;;
  *)
    usage
    ;;
esac
