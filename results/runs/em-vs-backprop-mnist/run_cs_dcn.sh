#!/bin/bash
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
cd /work/main
R=$HOME/.cache/drmm_ref/runs/em-vs-backprop-mnist
python -m drmm_ref.cli train --model dcn --net conv-small --epochs 10 --seed 0 --out $R/conv-small-dcn-seed0 --offline --no-progress
echo "finished B $(date -u)"
