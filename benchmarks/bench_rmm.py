"""Benchmark of RMM inference against the single convolution it contains (SPEC §1; targets in docs/rmm.md).

On ``N`` images of 28x28 (default 10,000) with K = 10 classes, M = 1, valid positions, for template
sides k = 5 and k = 20, time in the same run:

* ``conv``: ``conv2d(images, W)`` with the ``K`` filters ``mu / sigma^2`` -- the baseline;
* ``max-sum E-step``: :func:`drmm_ref.rmm.map_estimate` (evidence = conv + bias, ReLU, max over
  positions, argmax class and latents, switch) -- target <= 1.5x the conv;
* ``soft E-step``: :func:`drmm_ref.rmm.e_step` (the exact posterior over (c, g, a): responsibilities
  ``(N, K, 1, Hg, Wg)``, switch probabilities and ``ln p(I)``) -- target <= 3x the conv;
* for reference, ``hard E-step`` (:func:`drmm_ref.rmm.hard_e_step`: the max-sum E-step plus the
  one-hot responsibilities the M-step consumes) and ``DCN forward`` (:func:`drmm_ref.rmm.dcn_scores`).

Ratios against the conv measured in the same run are the result (absolute times on shared machines
are noise). Best of ``--repeats`` calls after a warm-up call; CuPy timings synchronise the device.

Usage::

    python benchmarks/bench_rmm.py                  # N = 10000, float32, numpy
    python benchmarks/bench_rmm.py --quick          # smoke run: N = 500, one repeat
    python benchmarks/bench_rmm.py --dtype float64 --backend cupy
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _timing import best_time  # noqa: E402  (benchmarks/_timing.py)
from drmm_ref import backend, rmm  # noqa: E402
from drmm_ref.primitives import conv2d  # noqa: E402

TARGETS = {"max-sum E-step": 1.5, "soft E-step": 3.0}




def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: N = 500, one repeat")
    parser.add_argument("--n", type=int, default=None, help="number of images (default 10000, quick 500)")
    parser.add_argument("--kernels", type=int, nargs="+", default=[5, 20], help="template sides (default 5 20)")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per case (default 3, quick 1)")
    parser.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    parser.add_argument("--backend", default="numpy", choices=("numpy", "array_api_strict", "cupy"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    return parser


def run(args) -> list[dict]:
    n = args.n if args.n is not None else (500 if args.quick else 10000)
    repeats = args.repeats if args.repeats is not None else (1 if args.quick else 3)
    xp = backend.resolve_namespace(args.backend)
    rng = np.random.default_rng(args.seed)
    rows = []
    for k in args.kernels:
        K, side = 10, 28
        t = rng.standard_normal((K, 1, 1, k, k))
        put = lambda a: backend.asarray(np.asarray(a, dtype=args.dtype), xp=xp)  # noqa: E731
        params = rmm.RMMParams(templates=put(t), class_prior=put(np.full(K, 1 / K)), switch_prior=0.8,
                               sigma2=float(k * k) / 4, image_shape=(side, side))
        images, _, _ = rmm.sample(params, n, rng)
        weights = xp.reshape(params.templates, (K, 1, k, k)) / params.sigma2
        dcn = rmm.to_dcn(params)
        cases = {
            "conv": lambda: conv2d(images, weights, 0),
            "max-sum E-step": lambda: rmm.map_estimate(params, images),
            "soft E-step": lambda: rmm.e_step(params, images),
            "hard E-step": lambda: rmm.hard_e_step(params, images),
            "DCN forward": lambda: rmm.dcn_scores(dcn, images),
        }
        times = {name: best_time(fn, xp, repeats) for name, fn in cases.items()}
        base = times["conv"]
        for name, sec in times.items():
            rows.append({"k": k, "n": n, "case": name, "seconds": sec, "ratio_to_conv": sec / base,
                         "target": TARGETS.get(name)})
    return rows


def main(argv=None) -> list[dict]:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    rows = run(args)
    print(f"RMM inference vs. its convolution: backend {args.backend}, {args.dtype}, K = 10, 28x28 images")
    print(f"{'k':>3} {'N':>6}  {'case':<16} {'seconds':>9} {'x conv':>7}  target")
    for r in rows:
        target = ""
        if r["target"]:
            target = f"<= {r['target']:.1f}x {'met' if r['ratio_to_conv'] <= r['target'] else 'MISSED'}"
        print(f"{r['k']:>3} {r['n']:>6}  {r['case']:<16} {r['seconds']:>9.4f} {r['ratio_to_conv']:>7.2f}  {target}")
    if args.json is not None:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}, indent=2))
    return rows


if __name__ == "__main__":
    main()
