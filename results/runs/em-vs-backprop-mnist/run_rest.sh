#!/bin/bash
# Rest of the --full em-vs-backprop-mnist run: small2 seed 2 DRMM (resume), then conv-small seed 0 DRMM.
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
cd /work/main
R=$HOME/.cache/drmm_ref/runs/em-vs-backprop-mnist
python -m drmm_ref.cli train --model drmm --net small2 --epochs 10 --seed 2 --out $R/small2-drmm-seed2 --offline --no-progress
python -m drmm_ref.cli train --model drmm --net conv-small --epochs 10 --seed 0 --out $R/conv-small-drmm-seed0 --offline --no-progress
echo "finished A $(date -u)"
