#!/bin/bash
# Rerun of the two ssl-mnist runs the session end killed mid-epoch (no checkpoint was written:
# the runs are 1 epoch long and checkpoint per epoch). Same frozen worktree (commit 66bcfe1).
# commands_rerun.txt (copied beside this script) holds the two command lines, taken from commands_frozen.txt.
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
cd /work/frozen-ssl
S=$HOME/.cache/drmm_ref/runs/ssl-mnist
xargs -P 2 -I{} sh -c '{} --no-progress > $(echo "{}" | sed "s/.*--out \([^ ]*\).*/\1/").log 2>&1' < $S/commands_rerun.txt
echo "rerun finished $(date -u)"
