#!/usr/bin/env bash
# A learning-rate x batch-size grid for any task, unattended; the sweep directory gets
# summary.md, the metric against the learning rate (one line per batch size) and
# grouped bars.
#
#   scripts/sweep_lr_batch.sh TASK [extra overrides...]
#   LRS=1e-4,1e-3,1e-2 BATCHES=32,128 scripts/sweep_lr_batch.sh imdb dataset.path=data/aclImdb
set -euo pipefail
if [ $# -lt 1 ]; then
  echo "usage: scripts/sweep_lr_batch.sh TASK [overrides...]   (tasks: conf/task/*.yaml)" >&2
  exit 2
fi
task=$1
shift
exec dlrun -m "task=$task" "optimizer.lr=${LRS:-1e-4,3e-4,1e-3,3e-3,1e-2}" \
  "dataset.batch_size=${BATCHES:-32,128,512}" "$@"
