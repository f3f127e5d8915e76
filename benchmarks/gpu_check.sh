#!/usr/bin/env bash
# The GPU checks in one call, for a machine with an NVIDIA GPU and CuPy (README, "Running on a GPU"):
#   1. the tests marked `gpu`;
#   2. the identity claims with `--backend cupy` (records in OUT/claims/);
#   3. one conv-small backprop epoch and one EG epoch on CuPy against PyTorch + cuDNN (bench_gpu.py).
# Writes everything under OUT (default results/gpu) and a summary OUT/gpu_check.json.
# Usage: bash benchmarks/gpu_check.sh [OUT]
# Python packages the machine lacks (array-api-compat) can travel as wheels in .whl/ (installed to /tmp/site).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${1:-results/gpu}"
mkdir -p "$OUT_DIR"
PY="${PYTHON:-python3}"
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}"
nvidia-smi > "$OUT_DIR/nvidia-smi.txt" 2>&1 || true
start=$(date +%s)
timeout 180 "$PY" -m pytest -q -m gpu -p no:cacheprovider tests > "$OUT_DIR/gpu_tests.txt" 2>&1
tests_rc=$?
timeout 240 "$PY" -m validation --backend cupy --out "$OUT_DIR/claims" --only adjoint-identities drmm-maxsum-dcn \
  drmm-topdown-gradient drmm-param-count rmm-maxsum-dcn rmm-zero-noise-limit rmm-em > "$OUT_DIR/claims.txt" 2>&1
claims_rc=$?
timeout 200 "$PY" benchmarks/bench_gpu.py --json "$OUT_DIR/bench_gpu.json" > "$OUT_DIR/bench_gpu.txt" 2>&1
bench_rc=$?
git_commit=$(git rev-parse HEAD 2>/dev/null || echo unknown)
cat > "$OUT_DIR/gpu_check.json" <<JSON
{"gpu_tests_rc": $tests_rc, "identity_claims_rc": $claims_rc, "bench_gpu_rc": $bench_rc,
 "seconds": $(( $(date +%s) - start )), "git_commit": "$git_commit",
 "gpu_tests_tail": $("$PY" -c 'import json,sys; print(json.dumps(open(sys.argv[1]).read()[-600:]))' "$OUT_DIR/gpu_tests.txt")}
JSON
cat "$OUT_DIR/gpu_check.json"
tail -n 3 "$OUT_DIR/gpu_tests.txt" "$OUT_DIR/claims.txt" "$OUT_DIR/bench_gpu.txt"
[ $tests_rc -eq 0 ] && [ $claims_rc -eq 0 ] && [ $bench_rc -eq 0 ]
