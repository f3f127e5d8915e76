#!/bin/bash
# First part of the --full em-vs-backprop-mnist run: small2, seed 0, both models, 10 epochs, all of MNIST.
# Single-threaded BLAS (on this shared 2-core machine multi-threaded OpenBLAS is several times slower).
# Resumable: rerun this script (without --restart) or `python -m validation --only em-vs-backprop-mnist --full`.
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
cd /work/main
R=$HOME/.cache/drmm_ref/runs/em-vs-backprop-mnist
for m in dcn drmm; do
  python -m drmm_ref.cli train --model $m --net small2 --epochs 10 --seed 0 --out $R/small2-$m-seed0 --offline --no-progress ${RESTART:-}
done
echo "finished $(date -u)"
