#!/bin/bash
# conv-small seed 0 DRMM, run from a frozen worktree of the code at the commit that trained the other runs,
# so that edits in /work/main cannot reach it. Starts when small2 seed 2 DRMM (pid 5121) ends.
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
while kill -0 5121 2>/dev/null; do sleep 10; done
cd /work/frozen
R=$HOME/.cache/drmm_ref/runs/em-vs-backprop-mnist
python -c "import drmm_ref; print(drmm_ref.__file__)"
python -m drmm_ref.cli train --model drmm --net conv-small --epochs 10 --seed 0 --out $R/conv-small-drmm-seed0 --offline --no-progress
echo "finished conv-small drmm $(date -u)"
