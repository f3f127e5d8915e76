#!/usr/bin/env bash
# Re-runs the --full em-vs-backprop-mnist experiment from a clone of the repository, then writes its record.
#
#   bash results/runs/em-vs-backprop-mnist/run.sh        # JOBS=1 (default): one run at a time
#   JOBS=2 DRMM_REF_RUNS=/big/disk bash results/runs/em-vs-backprop-mnist/run.sh
#   DRY_RUN=1 bash results/runs/em-vs-backprop-mnist/run.sh   # print the commands, run nothing
#
# Needs `pip install -e .` (the commands call `drmm-ref`). The training commands are the ones
# `python -m validation.em_vs_backprop_mnist --commands` prints (eight runs, 10 epochs each, about 4.5
# hours one at a time on the 2-core machine of the committed record); each writes its log and a checkpoint per
# epoch under $DRMM_REF_RUNS/em-vs-backprop-mnist/ (default ~/.cache/drmm_ref/runs) and resumes from its
# last checkpoint when started again, so the script can be stopped and rerun. The claim times the runs:
# JOBS > 1 makes them compete for cores and inflates their wall-clock seconds (the logs also record CPU seconds).
set -euo pipefail
cd "$(dirname "$0")/../../.."  # the repository root
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
list=$(mktemp)
trap 'rm -f "$list"' EXIT
python -m validation.em_vs_backprop_mnist --commands > "$list"
if [ -n "${DRY_RUN:-}" ]; then cat "$list"; exit 0; fi
python -c "from drmm_ref.data import load_mnist; load_mnist()"  # fetch MNIST once: the runs are --offline
xargs -P "${JOBS:-1}" -I{} sh -c '{} --no-progress' < "$list"
python -m validation --only em-vs-backprop-mnist --full
