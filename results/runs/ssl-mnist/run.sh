#!/usr/bin/env bash
# Re-runs every training run of the --full ssl-mnist claim from a clone of the repository, then writes its record.
#
#   bash results/runs/ssl-mnist/run.sh                 # JOBS=2 (default): two runs at a time
#   JOBS=1 DRMM_REF_RUNS=/big/disk bash results/runs/ssl-mnist/run.sh
#   DRY_RUN=1 bash results/runs/ssl-mnist/run.sh       # print the commands, run nothing
#
# Needs `pip install -e .` (the commands call `drmm-ref`). The commands are the ones
# `python -m validation.ssl_mnist --commands` prints (23 runs: the 18 of the verdict, the unsupervised run,
# the pre-trained run that starts from its checkpoint, and the three 5-epoch runs; about 10 hours of run time in all,
# 5 with two at a time, on the 2-core machine of the committed record). Each writes <out>.log beside its folder under
# $DRMM_REF_RUNS/ssl-mnist/ (default ~/.cache/drmm_ref/runs) and resumes from its last checkpoint when
# started again. Pass 1 runs them JOBS at a time; the pre-trained run fails there if it starts before the
# unsupervised run has finished, so pass 2 goes through the list once more, one at a time, in order
# (finished runs return at once). Collecting the record needs every run's checkpoint (the D1 distance is
# measured on the trained parameters), which is why it is collected from the runs folder.
set -euo pipefail
cd "$(dirname "$0")/../../.."  # the repository root
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
list=$(mktemp)
trap 'rm -f "$list"' EXIT
python -m validation.ssl_mnist --commands > "$list"
if [ -n "${DRY_RUN:-}" ]; then cat "$list"; exit 0; fi
mkdir -p "$(python -c "from validation.ssl_mnist import runs_root; print(runs_root())")"
python -c "from drmm_ref.data import load_mnist; load_mnist()"  # fetch MNIST once: the runs are --offline
xargs -P "${JOBS:-2}" -I{} sh -c '{} --no-progress > "$(echo "{}" | sed "s/.*--out \([^ ]*\).*/\1/").log" 2>&1' \
  < "$list" || echo "some runs failed in pass 1; pass 2 retries them one at a time"
while read -r cmd; do
  $cmd --no-progress >> "$(echo "$cmd" | sed "s/.*--out \([^ ]*\).*/\1/").log" 2>&1
done < "$list"
python -m validation --only ssl-mnist --full
