#!/bin/bash
# Grade a large class as a Slurm job array: each array task grades one shard of
# the students (phase 1: sandboxed runs and verdicts), then one job merges the
# shards into nbgrader's gradebook.
#
#   sbatch --array=0-15 course/slurm_autograde.sh 01_first_order        # 16 shards
#   python -m autograder merge 01_first_order --from course/autograder_shards/*   # afterwards, once
#
# Run it from the repository root on a shared file system (the course folder and
# the .venv must be visible from every node). Each task uses the GPUs Slurm gives
# it (CUDA_VISIBLE_DEVICES), or its CPUs.
#SBATCH --job-name=gd-autograde
#SBATCH --cpus-per-task=8
#SBATCH --mem=32G
#SBATCH --time=02:00:00
#SBATCH --output=course/autograder_shards/slurm-%A_%a.out
set -euo pipefail
ASSIGNMENT=${1:?usage: sbatch --array=0-N course/slurm_autograde.sh <assignment>}
SHARDS=${SLURM_ARRAY_TASK_COUNT:?run as a job array (sbatch --array=...)}
SHARD=${SLURM_ARRAY_TASK_ID}
mkdir -p course/autograder_shards
.venv/bin/python -m autograder grade-shard "$ASSIGNMENT" \
    --shard "${SHARD}/${SHARDS}" --workers "${SLURM_CPUS_PER_TASK:-8}" \
    --out "course/autograder_shards/shard-${SHARD}" --quiet
