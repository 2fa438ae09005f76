#!/usr/bin/env bash
#SBATCH --job-name=flowmap_jax
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=8
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=8
#SBATCH --time=24:00:00
#SBATCH --signal=TERM@300
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=flowmap_jax-%j.log
# Multi-node GPU training with SLURM: one process per GPU (8 tasks on each of 2 nodes), joined by
# jax.distributed, which reads everything from SLURM's variables: the coordinator (the first node,
# a port from the job id, or JAX_COORDINATOR_PORT), each process's rank and its GPU (SLURM_LOCALID).
#
#   sbatch launch/gpu_slurm.sh --config configs/itvm_checkerboard.py --workdir /shared/runs/itvm
#   sbatch --nodes=4 --ntasks-per-node=4 --gpus-per-node=4 launch/gpu_slurm.sh ...   # other sizes
#   squeue -j JOBID; tail -f flowmap_jax-JOBID.log    # every line starts with its task: "3: ..."
#   scancel JOBID                                     # stops for good, after a checkpoint
#
# Install once, in the Python (>= 3.11) that `python` names here: pip install -e . "jax[cuda12]".
# The workdir must be on storage every node sees. Time limit: SLURM sends SIGTERM to every task 300 s
# before --time (--signal=TERM@300); the tasks save a checkpoint at one step and exit 143, and this
# script requeues the job (same job id, same log), which resumes from the workdir. Preempted by the
# scheduler: SLURM requeues it (--requeue). scancel: the tasks save and the job ends, not requeued.
set -euo pipefail

tasks=${SLURM_NTASKS_PER_NODE:-}
gpus=${SLURM_GPUS_ON_NODE:-}
if [[ -n $tasks && -n $gpus && $tasks != "$gpus" ]]; then
  echo "gpu_slurm.sh: $tasks task(s) and $gpus GPUs per node; JAX gives each task one GPU, so" \
    "ask for one task per GPU: sbatch --ntasks-per-node=$gpus --gpus-per-node=$gpus ..." >&2
  exit 2
fi

echo "=== job ${SLURM_JOB_ID:-?} (restart ${SLURM_RESTART_COUNT:-0}) on ${SLURM_JOB_NODELIST:-?}:" \
  "${SLURM_NTASKS:-?} tasks, $(date -u +%FT%TZ)"

# scancel signals this shell too; the time-limit signal (--signal without B:) goes to the tasks only.
cancelled=0
trap 'cancelled=1' TERM
status=0
# --gpu-bind=none: each task sees every GPU of its node and JAX picks GPU SLURM_LOCALID among them.
srun --kill-on-bad-exit=1 --label --gpu-bind=none \
  "${FLOWMAP_PYTHON:-python}" -m flowmap_jax.main --distributed "$@" || status=$?

if [[ $status -eq 143 && $cancelled -eq 0 ]]; then
  echo "=== preempted or at the time limit: checkpoint saved; requeueing job $SLURM_JOB_ID"
  scontrol requeue "$SLURM_JOB_ID"
  exit 0
fi
echo "=== job ${SLURM_JOB_ID:-?} ends with exit status $status"
exit "$status"
