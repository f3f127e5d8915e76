#!/bin/bash
# ssl-mnist --full runs, two at a time, at the lowest CPU priority (they take only the cycles the
# em-vs-backprop timing runs leave idle), from a frozen worktree of commit 66bcfe1 so that edits in
# /work/main cannot reach a run that starts later. Each line of commands_frozen.txt is resumable.
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
cd /work/frozen-ssl
S=$HOME/.cache/drmm_ref/runs/ssl-mnist
nice -n 19 xargs -P 2 -I{} sh -c '{} --no-progress > $(echo "{}" | sed "s/.*--out \([^ ]*\).*/\1/").log 2>&1' < $S/commands_frozen.txt
echo "all finished $(date -u)"
