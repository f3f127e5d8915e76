"""Benchmark of subnormal floats: an EG step whose scores spread like a trained run's, IEEE vs. flushed.

Trained DRMMs give scores spread over hundreds of nats; the softmax of such scores has float32
probabilities like ``exp(-95)``, which are subnormal, and the cotangents that carry them down the
network make the GEMMs of the step take the CPU's slow path (docs/learning.md, "Subnormal floats").
This reproduces that without a trained checkpoint: ``conv-small`` at its seeded initialisation with
the class templates scaled by ``--scale`` (default 100: a mean score spread of ~200 nats, against
~2 at scale 1), CE + RC + NN + H on a half-labelled batch of 128, one thread. It times EG steps
with IEEE subnormals and inside :func:`drmm_ref.backend.flush_denormals`, alternating the two in
rounds, and prints the ratio (and the same ratio at scale 1, where there is nothing to flush).

Usage::

    python benchmarks/bench_subnormals.py            # 3 steps per setting and round, 3 rounds
    python benchmarks/bench_subnormals.py --quick    # 1 step, 1 round
    python benchmarks/bench_subnormals.py --json out.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from threadpoolctl import threadpool_limits  # noqa: E402

from drmm_ref.backend import flush_denormals, flush_denormals_problem, keep_freed_host_memory  # noqa: E402
from drmm_ref.drmm import bottom_up, init_params, preset  # noqa: E402
from drmm_ref.learning import Adam, EGConfig, LossWeights, eg_step, mnist_or_synthetic, trainable  # noqa: E402
from validation._provenance import git_state  # noqa: E402

BATCH = 128
WEIGHTS = LossWeights(ce=1, rc=1, nn=0.5, h=0.2, h_sign="entropy")


def _subnormal_count(a) -> int:
    a = np.abs(np.asarray(a))
    return int(np.sum((a > 0) & (a < np.finfo(a.dtype).tiny)))


def time_case(x, y, scale: float, steps: int, rounds: int) -> dict:
    """CPU seconds per EG step with IEEE subnormals and flushed, for class templates scaled by ``scale``."""
    p0 = init_params(preset("conv-small"), seed=0, dtype="float32")
    params = dataclasses.replace(p0, class_templates=p0.class_templates * scale)
    scores = np.asarray(bottom_up(params, x).scores)
    e = np.exp(scores - scores.max(axis=1, keepdims=True))  # the softmax, in float32 as the step computes it
    opt = Adam()
    state = opt.init(trainable(params))
    cfg = EGConfig(weights=WEIGHTS)
    times = {"ieee": [], "flushed": []}
    for _ in range(rounds):
        for name, on in (("ieee", False), ("flushed", True)):
            with flush_denormals(on):
                eg_step(params, opt, state, x, y, cfg)  # warm-up (buffers, caches)
                t = time.process_time()
                for _ in range(steps):
                    eg_step(params, opt, state, x, y, cfg)
                times[name].append((time.process_time() - t) / steps)
    best = {k: min(v) for k, v in times.items()}
    return {"scale": scale, "mean_score_spread_nats": float(np.mean(scores.max(1) - scores.min(1))),
            "subnormal_softmax_probabilities": _subnormal_count(e / e.sum(axis=1, keepdims=True)),
            "cpu_seconds_per_step": best, "ieee_over_flushed": best["ieee"] / best["flushed"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="EG step time with subnormal floats kept vs. flushed to zero")
    parser.add_argument("--quick", action="store_true", help="1 step, 1 round (smoke run)")
    parser.add_argument("--steps", type=int, default=3, help="steps per setting and round (default 3)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    parser.add_argument("--scale", type=float, default=100.0,
                        help="factor on the class templates (default 100: scores spread ~200 nats)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    problem = flush_denormals_problem()
    if problem is not None:
        print(f"nothing to measure here: {problem}")
        return 0
    keep_freed_host_memory()
    data, _ = mnist_or_synthetic(1000, 100)
    x = np.asarray(data.train.images[:BATCH], dtype=np.float32)
    y = np.asarray(data.train.labels[:BATCH]).astype(np.int64)
    y[BATCH // 2:] = -1  # half unlabelled, as in the semi-supervised runs
    steps, rounds = (1, 1) if args.quick else (args.steps, args.rounds)
    result = {"data": data.source, "batch": BATCH, "net": "conv-small", "threads": 1, **git_state()}
    with threadpool_limits(limits=1, user_api="blas"):
        for key, scale in (("spread", args.scale), ("baseline", 1.0)):
            r = result[key] = time_case(x, y, scale, steps, rounds)
            c = r["cpu_seconds_per_step"]
            print(f"class templates x{scale:g} (mean score spread {r['mean_score_spread_nats']:.0f} nats, "
                  f"{r['subnormal_softmax_probabilities']} subnormal softmax probabilities): "
                  f"IEEE {1000 * c['ieee']:.0f} ms, flushed {1000 * c['flushed']:.0f} ms CPU a step "
                  f"-> IEEE/flushed = {r['ieee_over_flushed']:.2f}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
