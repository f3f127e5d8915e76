#!/usr/bin/env bash
# Re-runs the --full em-vs-backprop-mnist experiment from a clone of the repository, then writes its record.
#
#   bash results/runs/em-vs-backprop-mnist/run.sh        # JOBS=1 (default): one run at a time
#   JOBS=2 DRMM_REF_RUNS=/big/disk bash results/runs/em-vs-backprop-mnist/run.sh
#   DRY_RUN=1 bash results/runs/em-vs-backprop-mnist/run.sh   # print the commands still to run, run nothing
#   EXACT_ALL=1 bash results/runs/em-vs-backprop-mnist/run.sh # also the drmm-exact runs outside the budget
#
# Needs `pip install -e .` (the commands call `drmm-ref`). The training commands are the ones
# `python -m validation.em_vs_backprop_mnist --commands` prints: the eight runs of the DCN and G-step EG rows
# (10 epochs each, about 4.5 hours one at a time on the 2-core machine of the committed record), then the
# drmm-exact row's (EM with the exact whole-set M-step, k_CG 5, one thread; ~1,125 CPU-s per small2 epoch, so
# ~3.1 CPU-hours for small2 seed 0, the only one in the budget and the only one run by default; EXACT_ALL=1 adds
# small2 seeds 1, 2 and conv-small seed 0, several times that). Each writes its log and a checkpoint per epoch
# under $DRMM_REF_RUNS/em-vs-backprop-mnist/ (default ~/.cache/drmm_ref/runs) and resumes from its last
# checkpoint when started again, so the script can be stopped and rerun. A run whose log has finished there, or
# in the committed archive results/runs/em-vs-backprop-mnist/<run>/log.json (same configuration), is skipped:
# the claim reads its log. The claim times the runs: JOBS > 1 makes them compete for cores and inflates their
# wall-clock seconds (the logs also record CPU seconds; the drmm-exact row's verdict is read in CPU seconds).
set -euo pipefail
cd "$(dirname "$0")/../../.."  # the repository root
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
list=$(mktemp)
trap 'rm -f "$list"' EXIT
python - > "$list" <<'PY'
import os, shlex
from validation import _claim
from validation import em_vs_backprop_mnist as claim

budget = {claim.run_name(net, claim.EXACT, seed) for net, seed in claim.FULL["exact_budget"]}
for cmd in claim.full_commands():  # the lines of --commands, less the finished runs (and the unbudgeted ones)
    args = shlex.split(cmd)
    name = os.path.basename(args[args.index("--out") + 1])
    model = next(m for m in (claim.EXACT, "drmm", "dcn") if f"-{m}-seed" in name)
    net, seed = name.split(f"-{model}-seed")
    if model == claim.EXACT and name not in budget and not os.environ.get("EXACT_ALL"):
        continue
    if _claim.finished_log(claim.CLAIM.id, name, claim.full_config(model, net, int(seed))) is None:
        print(cmd)
PY
if [ -n "${DRY_RUN:-}" ]; then cat "$list"; exit 0; fi
if [ -s "$list" ]; then python -c "from drmm_ref.data import load_mnist; load_mnist()"; fi  # runs are --offline
xargs -P "${JOBS:-1}" -I{} sh -c '{} --no-progress' < "$list"
python -m validation --only em-vs-backprop-mnist --full
