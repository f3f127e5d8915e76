#!/usr/bin/env bash
# Runs every training run of the --full ssl-mnist-converged claim from a clone of the repository, then writes its
# record.
#
#   bash results/runs/ssl-mnist-converged/run.sh             # JOBS=2 (default): two runs at a time
#   JOBS=1 DRMM_REF_RUNS=/big/disk bash results/runs/ssl-mnist-converged/run.sh
#   DRY_RUN=1 bash results/runs/ssl-mnist-converged/run.sh   # print the commands, run nothing
#
# Needs `pip install -e .`. The commands are `python -m validation.ssl_mnist_converged --commands` (20 runs: the 12
# of the verdict, the relu-topdown extra, the 6 of the N_L table; the runs outside the budget last, the 50-epoch
# extra at the very end; ~25 CPU-hours on the first 2-core development machine with subnormals flushed, ~2.9x that
# on a slower one, docs/ssl.md). `--full` (the last line) trains the missing runs inside the budget and collects
# the others only when finished. Each writes
# <out>.log beside its folder under $DRMM_REF_RUNS/ssl-mnist-converged/ (default ~/.cache/drmm_ref/runs) and resumes
# from its last checkpoint (mid-epoch ones included, every 10 minutes) when started again, so the script can be
# stopped and started at will. Each run uses one thread (named in its command: a run's numbers depend on it).
set -euo pipefail
cd "$(dirname "$0")/../../.."  # the repository root
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
list=$(mktemp)
trap 'rm -f "$list"' EXIT
python -m validation.ssl_mnist_converged --commands > "$list"
if [ -n "${DRY_RUN:-}" ]; then cat "$list"; exit 0; fi
mkdir -p "$(python -c "from validation.ssl_mnist_converged import runs_root; print(runs_root())")"
python -c "from drmm_ref.data import load_mnist; load_mnist()"  # fetch MNIST once: the runs are --offline
xargs -P "${JOBS:-2}" -I{} sh -c '{} --no-progress >> "$(echo "{}" | sed "s/.*--out \([^ ]*\).*/\1/").log" 2>&1' \
  < "$list"
python -m validation --only ssl-mnist-converged --full
