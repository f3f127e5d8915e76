#!/bin/bash
# The informational extras of ssl-mnist (unsupervised run, then the pre-trained 100-label run that starts from it),
# from a frozen worktree of commit 2072d42 (which has align_classes), in order, at normal priority.
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
cd /work/frozen-ssl2
S=$HOME/.cache/drmm_ref/runs/ssl-mnist
while read -r cmd; do
  out=$(echo "$cmd" | sed "s/.*--out \([^ ]*\).*/\1/")
  $cmd --no-progress > $out.log 2>&1
done < $S/commands_extras.txt
echo "extras finished $(date -u)"
