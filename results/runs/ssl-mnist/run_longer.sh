#!/bin/bash
# ssl-mnist, a longer budget at N_L=100, seed 0 only: the three required rows' 1-epoch runs resumed from their
# epoch-1 checkpoints (copied from the full run) to 5 epochs, from the same frozen worktree (commit 66bcfe1).
# They ran in ssl-mnist-longer/ (commands_longer.txt) and were then moved to ssl-mnist/<name>-epochs5, the
# folders the claim reads (python -m validation.ssl_mnist --commands lists them under those names).
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
cd /work/frozen-ssl
L=$HOME/.cache/drmm_ref/runs/ssl-mnist-longer
xargs -P 2 -I{} sh -c '{} --no-progress > $(echo "{}" | sed "s/.*--out \([^ ]*\).*/\1/").log 2>&1' < $L/commands.txt
echo "longer runs finished $(date -u)"
