"""Benchmark of the convolution primitives on the conv layers of the SPEC §6 presets.

For every conv layer of ``small2``, ``conv-small`` and the Ladder-style ``conv-small`` variant,
at batch 128 in float32, time the forward (``conv2d``), the input gradient
(``conv2d_vjp_input`` = ``conv2d_transpose``) and the weight gradient (``conv2d_vjp_weight``), and print

* achieved GFLOP/s (``2 * N * O * Ho * Wo * C * k * k`` floating-point operations per call),
* the ratio to a float32 matrix product of the same M = O, K = C k k, N = batch Ho Wo, timed in the
  same run (stretch targets: forward >= 0.5, gradients >= 0.4),
* the ratio to a large square matrix product (the machine's practical peak),
* the ratio to ``torch.nn.functional.conv2d`` (and its gradients) when PyTorch happens to be installed.

Absolute times on shared machines are noise; the ratios are the result. GPU timings (``--backend
cupy``) synchronise the device and skip the first (compile) call.

Usage::

    python benchmarks/bench_primitives.py              # numpy, batch 128
    python benchmarks/bench_primitives.py --quick      # smoke run: batch 8, one repeat
    python benchmarks/bench_primitives.py --backend cupy
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _timing import best_time  # noqa: E402  (benchmarks/_timing.py)
from drmm_ref import backend  # noqa: E402
from drmm_ref import primitives as P  # noqa: E402

# (preset, layer, in channels, out channels, kernel, padding, input side) -- SPEC §6.
LAYERS = [
    ("small2", 1, 1, 32, 5, 0, 28),
    ("small2", 2, 32, 64, 5, 0, 12),
    ("conv-small", 1, 1, 32, 5, 2, 28),
    ("conv-small", 2, 32, 64, 3, 0, 14),
    ("conv-small", 3, 64, 64, 3, 1, 12),
    ("conv-small", 4, 64, 128, 3, 0, 6),
    ("conv-small-ladder", 1, 1, 32, 5, 4, 28),
    ("conv-small-ladder", 2, 32, 64, 3, 0, 16),
    ("conv-small-ladder", 3, 64, 64, 3, 2, 14),
    ("conv-small-ladder", 4, 64, 128, 3, 0, 8),
]




def _torch_times(x, w, q, repeats):
    try:
        import torch
    except ImportError:
        return None
    tx = torch.from_numpy(np.ascontiguousarray(x)).requires_grad_(True)
    tw = torch.from_numpy(np.ascontiguousarray(w)).requires_grad_(True)
    with torch.no_grad():
        fwd = best_time(lambda: torch.nn.functional.conv2d(tx, tw, padding=q), np, repeats)
    y = torch.nn.functional.conv2d(tx, tw, padding=q)
    g = torch.ones_like(y)
    gin = best_time(lambda: torch.nn.grad.conv2d_input(tx.shape, tw, g, padding=q), np, repeats)
    gw = best_time(lambda: torch.nn.grad.conv2d_weight(tx, tw.shape, g, padding=q), np, repeats)
    return {"forward": fwd, "input_grad": gin, "weight_grad": gw}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", default="numpy", choices=("numpy", "cupy", "array_api_strict"))
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="smoke run: batch 8, 1 repeat")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    if args.quick:
        args.batch, args.repeats = 8, 1
    xp = backend.resolve_namespace(args.backend)
    rng = np.random.default_rng(0)

    peak_n = 2048 if not args.quick else 512
    a = backend.asarray(rng.standard_normal((peak_n, peak_n), dtype=np.float32), xp=xp)
    t_peak = best_time(lambda: xp.matmul(a, a), xp, args.repeats)
    peak = 2 * peak_n**3 / t_peak / 1e9
    print(f"backend {args.backend}, batch {args.batch}, float32; square {peak_n}^3 matmul: {peak:.1f} GFLOP/s")
    header = (f"{'preset':18s} {'L':>2s} {'C->O':>8s} {'k':>2s} {'q':>2s} {'op':12s} {'GFLOP/s':>8s} "
              f"{'vs matmul':>9s} {'vs peak':>8s} {'vs torch':>8s}")
    print(header)
    print("-" * len(header))
    rows = []
    for preset, layer, c, o, k, q, side in LAYERS:
        x = backend.asarray(rng.standard_normal((args.batch, c, side, side), dtype=np.float32), xp=xp)
        w = backend.asarray(rng.standard_normal((o, c, k, k), dtype=np.float32), xp=xp)
        ho = side + 2 * q - k + 1
        y = backend.asarray(rng.standard_normal((args.batch, o, ho, ho), dtype=np.float32), xp=xp)
        flops = 2.0 * args.batch * o * ho * ho * c * k * k
        # The matching matrix product: (O x Ck^2) @ (Ck^2 x N Ho Wo).
        wm = backend.asarray(rng.standard_normal((o, c * k * k), dtype=np.float32), xp=xp)
        cm = backend.asarray(rng.standard_normal((c * k * k, args.batch * ho * ho), dtype=np.float32), xp=xp)
        t_mm = best_time(lambda: xp.matmul(wm, cm), xp, args.repeats)
        ops = {
            "forward": lambda: P.conv2d(x, w, q),
            "input_grad": lambda: P.conv2d_vjp_input(y, w, q),
            "weight_grad": lambda: P.conv2d_vjp_weight(y, x, q),
        }
        torch_t = (_torch_times(backend.to_numpy(x), backend.to_numpy(w), q, args.repeats)
                   if args.backend == "numpy" else None)
        for name, fn in ops.items():
            t = best_time(fn, xp, args.repeats)
            row = {
                "preset": preset, "layer": layer, "in": c, "out": o, "kernel": k, "padding": q, "op": name,
                "seconds": t, "gflops": flops / t / 1e9, "ratio_matmul": t_mm / t,
                "ratio_peak": (flops / t / 1e9) / peak,
                "ratio_torch": (torch_t[name] / t) if torch_t else None,
            }
            rows.append(row)
            vs_torch = f"{row['ratio_torch']:8.2f}" if torch_t else f"{'-':>8s}"
            print(f"{preset:18s} {layer:2d} {c:3d}->{o:<4d} {k:2d} {q:2d} {name:12s} {row['gflops']:8.1f} "
                  f"{row['ratio_matmul']:9.2f} {row['ratio_peak']:8.2f} {vs_torch}")
    for name, target in (("forward", 0.5), ("input_grad", 0.4), ("weight_grad", 0.4)):
        ratios = [r["ratio_matmul"] for r in rows if r["op"] == name]
        print(f"{name:12s}: median ratio to the matching matmul {np.median(ratios):.2f} "
              f"(min {min(ratios):.2f}; stretch target >= {target})")
    if args.json:
        args.json.write_text(json.dumps({"backend": args.backend, "batch": args.batch, "peak_gflops": peak,
                                         "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
