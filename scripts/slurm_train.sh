#!/bin/bash
# Train on several nodes under SLURM: one torchrun per node, one process per GPU, the first node
# of the allocation serving the c10d rendezvous (docs/distributed.md).
#
#   sbatch --nodes=4 --gpus-per-node=8 scripts/slurm_train.sh CONFIG [--data DIR] [--output DIR] [key=value ...]
#
# The output folder must be on a file system every node sees. On pre-emption, and two minutes
# before the time limit, SLURM sends SIGTERM: the run finishes its step, writes last.pt there and
# stops; the requeued job runs the same command and resumes from <output>/checkpoints/last.pt.
# Within one allocation, torchrun restarts the group up to MAX_RESTARTS times after a failure.
#SBATCH --job-name=twins-train
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=64
#SBATCH --time=48:00:00
#SBATCH --requeue
#SBATCH --signal=TERM@120
#SBATCH --open-mode=append
#SBATCH --output=%x-%j.out

set -euo pipefail

if [ $# -lt 1 ]; then
    echo "usage: sbatch scripts/slurm_train.sh CONFIG [--data DIR] [--output DIR] [key=value ...]" >&2
    exit 2
fi

PYTHON=${PYTHON:-python}                      # the Python of the environment twins is installed in
GPUS_PER_NODE=${GPUS_PER_NODE:-${SLURM_GPUS_ON_NODE:-8}}
MAX_RESTARTS=${MAX_RESTARTS:-3}
RDZV_PORT=${RDZV_PORT:-29500}
HEAD_NODE=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)

# A restarted group must get a fresh rendezvous store (pytorch/pytorch#135712).
export TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1
# Data loading workers and the BLAS threads of one process share its CPUs.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

srun --kill-on-bad-exit=1 "$PYTHON" -m torch.distributed.run \
    --nnodes="$SLURM_JOB_NUM_NODES" \
    --nproc_per_node="$GPUS_PER_NODE" \
    --rdzv-backend=c10d \
    --rdzv-endpoint="$HEAD_NODE:$RDZV_PORT" \
    --rdzv-id="twins-$SLURM_JOB_ID" \
    --max-restarts="$MAX_RESTARTS" \
    -m twins train -c "$@"
