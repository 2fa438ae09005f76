#!/usr/bin/env bash
#SBATCH --job-name=flowmap_jax
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=32
#SBATCH --output=flowmap_jax-%j.log
# Multi-node GPU training with SLURM: one process per node, 8 GPUs each, joined by
# jax.distributed with the first node as coordinator.
#
#   sbatch launch/gpu_slurm.sh --config configs/itvm_checkerboard.py --workdir /shared/runs/itvm
#   squeue -j JOBID; tail -f flowmap_jax-JOBID.log; scancel JOBID     # stop by job id
#
# Install once on the cluster: pip install -e . "jax[cuda12]". The workdir must be on storage that
# every node sees; resubmitting the same command resumes from the latest checkpoint. SLURM sends
# SIGTERM before a preemption or time limit: the job saves at a step all processes agree on.
set -euo pipefail

coordinator=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
export FLOWMAP_COORDINATOR="$coordinator:${FLOWMAP_PORT:-12355}"
export FLOWMAP_NUM_PROCESSES="$SLURM_NTASKS"
export FLOWMAP_DISTRIBUTED=1

# shellcheck disable=SC2016  # $SLURM_PROCID must expand in each task, not here
srun --kill-on-bad-exit=1 bash -c 'FLOWMAP_PROCESS_ID=$SLURM_PROCID exec python -m flowmap_jax.main "$@"' \
  flowmap_jax "$@"
