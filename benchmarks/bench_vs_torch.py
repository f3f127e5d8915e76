"""Training and evaluation steps of drmm_ref against PyTorch on the CPU, as same-run ratios.

For ``small2`` and ``conv-small`` (batch 128, float32, random 28x28 images, Adam), at 1 and 2
threads (our BLAS threads via threadpoolctl, ``torch.set_num_threads`` for PyTorch), the
candidates are timed in interleaved rounds (so that machine noise hits all alike) and the
medians compared:

* **backprop step**: :func:`drmm_ref.learning.backprop_step` / the same net in ``torch.nn``
  (conv, ReLU, max-pool, linear head; cross-entropy; ``torch.optim.Adam``). Target <= 1.0.
* **EG step** (CE + RC + NN, G-step alone, no trace): its multiply-adds per second as a fraction of
  the backprop step's (target >= 0.9). The multiply-adds each step really needs are counted per
  layer (below) and printed with the ratio of the two counts (about 2).
* **bottom_up** (evaluation) / PyTorch's forward under ``no_grad``. Target <= 1.3.
* each step's multiply-adds per second as a fraction of the same-run GEMM rate, measured on a
  matrix product of the shape of the net's largest convolution.

With one thread the clock is the process's CPU time (steadier than wall time when other jobs share
the machine); with two, wall time (CPU time would count both threads).

Multiply-adds per example (``F_l = O_l C_l k_l^2 H_o W_o`` for layer l's convolution, ``D_L K`` for
the head): backprop = ``sum_l F_l`` (forward) + ``sum_l F_l`` (weight gradients) + ``sum_{l>=2} F_l``
(input gradients) + ``3 D_L K``; EG adds the rendering (``sum_l F_l``), the rendering's VJP
(``sum_l F_l`` for the upward convolutions and ``sum_l F_l`` for their weight gradients) and the
template lookups. PyTorch is optional: without it the script says so and times ours alone.

Usage::

    python benchmarks/bench_vs_torch.py                  # both nets, 1 and 2 threads, 5 rounds
    python benchmarks/bench_vs_torch.py --quick          # one round of 2 steps (smoke test)
    python benchmarks/bench_vs_torch.py --threads 1 --nets small2 --json out.json
    python benchmarks/bench_vs_torch.py --profile out.json   # per-primitive shares of each step
"""

from __future__ import annotations

import argparse
import cProfile
import inspect
import json
import platform
import pstats
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from threadpoolctl import threadpool_limits  # noqa: E402

try:  # noqa: E402 - older checkouts (the baseline of docs/learning.md, "Speed") have no allocator setting
    from drmm_ref.backend import keep_freed_host_memory
except ImportError:
    def keep_freed_host_memory() -> bool:
        return False
from drmm_ref.drmm import bottom_up, init_params, preset  # noqa: E402
from drmm_ref.learning import Adam, EGConfig, backprop_step, eg_step, trainable  # noqa: E402

BATCH = 128


def macs(net) -> dict[str, float]:
    """Multiply-adds per example of a backprop step, an EG step and a forward pass (see the module docstring)."""
    f = []
    for l, ly in enumerate(net.layers, start=1):
        c_in = net.shapes[l - 1][0]
        _, ho, wo = net.conv_shapes[l - 1]
        f.append(ly.channels * c_in * ly.kernel ** 2 * ho * wo)
    head = net.n_classes * int(np.prod(net.shapes[net.L]))
    forward = sum(f) + head
    backprop = 2 * sum(f) + sum(f[1:]) + 3 * head
    eg = backprop + 3 * sum(f) + head
    return {"forward": float(forward), "backprop": float(backprop), "eg": float(eg), "eg_over_backprop": eg / backprop}


class TorchNet:
    """The same network in ``torch.nn`` (conv, ReLU, max-pool per layer; linear head)."""

    def __init__(self, net, torch):
        nn = torch.nn
        mods, c = [], net.image_shape[0]
        for ly in net.layers:
            mods += [nn.Conv2d(c, ly.channels, ly.kernel, padding=ly.padding), nn.ReLU()]
            if ly.pool > 1:
                mods.append(nn.MaxPool2d(ly.pool))
            c = ly.channels
        mods += [nn.Flatten(), nn.Linear(int(np.prod(net.shapes[net.L])), net.n_classes)]
        self.torch, self.model = torch, nn.Sequential(*mods)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-3)

    def step(self, x, y):
        self.opt.zero_grad()
        loss = self.torch.nn.functional.cross_entropy(self.model(x), y)
        loss.backward()
        self.opt.step()

    def forward(self, x):
        with self.torch.no_grad():
            return self.model(x)


def candidates(net_name: str, torch, threads: int = 1):
    """Name -> zero-argument callable doing one step; the state lives in the closures."""
    net = preset(net_name)
    rng = np.random.default_rng(0)
    x = rng.random((BATCH,) + net.image_shape).astype(np.float32)
    y = rng.integers(0, net.n_classes, BATCH).astype(np.int64)
    state = {}
    for model in ("backprop", "eg"):
        p = init_params(net, 0, dtype="float32")
        opt = Adam()
        state[model] = [p, opt, opt.init(trainable(p))]
    config = EGConfig(trace_m_step=False)

    # The data are checked once here; the steps skip the per-batch boundary checks as the trainer does.
    nocheck = {"check": False} if "check" in inspect.signature(eg_step).parameters else {}
    if "threads" in inspect.signature(eg_step).parameters:  # data-parallel shards on host threads
        nocheck["threads"] = threads

    def ours_backprop():
        p, opt, st = state["backprop"]
        p, st, _ = backprop_step(p, opt, st, x, y, **nocheck)
        state["backprop"][0], state["backprop"][2] = p, st

    def ours_eg():
        p, opt, st = state["eg"]
        p, st, _ = eg_step(p, opt, st, x, y, config, **nocheck)
        state["eg"][0], state["eg"][2] = p, st

    params_eval = init_params(net, 0, dtype="float32")
    if "threads" in nocheck:
        from drmm_ref.learning.parallel import sharded_scores

        evaluate = lambda: sharded_scores(params_eval, x, threads)  # noqa: E731
    else:
        evaluate = lambda: bottom_up(params_eval, x, **nocheck)  # noqa: E731
    out = {"backprop": ours_backprop, "eg": ours_eg, "bottom_up": evaluate}
    if torch is not None:
        tn = TorchNet(net, torch)
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        out["torch_step"] = lambda: tn.step(xt, yt)
        out["torch_forward"] = lambda: tn.forward(xt)
    big = max(range(net.L), key=lambda i: net.layers[i].channels * net.shapes[i][0] * net.layers[i].kernel ** 2
              * int(np.prod(net.conv_shapes[i][1:])))
    ly = net.layers[big]
    kk_c = ly.kernel ** 2 * net.shapes[big][0]
    cols = BATCH * int(np.prod(net.conv_shapes[big][1:]))
    a = rng.random((ly.channels, kk_c)).astype(np.float32)
    b = rng.random((kk_c, cols)).astype(np.float32)
    out["gemm"] = lambda: a @ b
    return out, float(ly.channels * kk_c * cols)  # multiply-adds of the GEMM


def time_rounds(cands: dict, rounds: int, steps: int, clock=time.perf_counter) -> dict[str, float]:
    """Median seconds per call of each candidate over interleaved rounds (after one warm-up call each).

    ``clock`` is wall time by default; with one thread the process's CPU time
    (``time.process_time``) is the steadier measure on a shared machine.
    """
    for fn in cands.values():
        fn()
    times = {k: [] for k in cands}
    order = list(cands)
    for r in range(rounds):
        for name in (order if r % 2 == 0 else order[::-1]):
            fn = cands[name]
            start = clock()
            for _ in range(steps):
                fn()
            times[name].append((clock() - start) / steps)
    return {k: statistics.median(v) for k, v in times.items()}


def measure(net_name: str, threads: int, rounds: int, steps: int, torch) -> dict:
    if torch is not None:
        torch.set_num_threads(threads)
    with threadpool_limits(threads):
        cands, gemm_macs = candidates(net_name, torch, threads)
        med = time_rounds(cands, rounds, steps, clock=time.process_time if threads == 1 else time.perf_counter)
    m = macs(preset(net_name))
    gemm_rate = gemm_macs / med["gemm"]
    rate = {k: BATCH * m[k] / med[k] for k in ("backprop", "eg")}
    res = {"net": net_name, "threads": threads, "clock": "process_time" if threads == 1 else "perf_counter",
           "seconds": med, "macs_per_example": m,
           "eg_rate_over_backprop_rate": rate["eg"] / rate["backprop"],
           "eg_over_backprop_time": med["eg"] / med["backprop"],
           "fraction_of_gemm_rate": {"backprop": rate["backprop"] / gemm_rate, "eg": rate["eg"] / gemm_rate,
                                     "bottom_up": BATCH * m["forward"] / med["bottom_up"] / gemm_rate}}
    if torch is not None:
        res["backprop_over_torch"] = med["backprop"] / med["torch_step"]
        res["eg_over_torch"] = med["eg"] / med["torch_step"]
        res["bottom_up_over_torch_forward"] = med["bottom_up"] / med["torch_forward"]
    return res


def profile(net_name: str, steps: int) -> dict:
    """Per-function shares of the time of each of our steps (one thread), by cProfile's own time."""
    out = {}
    with threadpool_limits(1):
        cands, _ = candidates(net_name, None)
        for name in ("backprop", "eg", "bottom_up"):
            fn = cands[name]
            fn()
            prof = cProfile.Profile()
            prof.enable()
            for _ in range(steps):
                fn()
            prof.disable()
            stats = pstats.Stats(prof).stats
            total = sum(v[2] for v in stats.values())
            rows = sorted(((v[2], f"{Path(k[0]).name}:{k[2]}") for k, v in stats.items()), reverse=True)
            out[name] = {"seconds_per_step": total / steps,
                         "shares": {label: round(t / total, 4) for t, label in rows[:15]}}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nets", nargs="+", default=["small2", "conv-small"])
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--quick", action="store_true", help="one round of 2 steps, small2, 1 thread (smoke test)")
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--profile", type=Path, help="also write per-primitive profiles of each step here")
    ap.add_argument("--default-allocator", action="store_true",
                    help="leave glibc's allocator as it is (default: keep_freed_host_memory(), as the trainer does)")
    args = ap.parse_args(argv)
    tuned = False if args.default_allocator else keep_freed_host_memory()
    if args.quick:
        args.rounds, args.steps, args.nets, args.threads = 1, 2, ["small2"], [1]
    try:
        import torch
    except ImportError:
        torch = None
        print("PyTorch is not installed: timing drmm_ref alone (pip install torch==2.13.0 for the comparison)")
    results = [measure(n, t, args.rounds, args.steps, torch) for n in args.nets for t in args.threads]
    print(f"{'net':<11} {'thr':>3} {'bp/torch':>9} {'EG/torch':>9} {'EG/bp t':>8} {'EG/bp MAC rate':>15} "
          f"{'bu/torch fw':>12} {'bp %GEMM':>9} {'EG %GEMM':>9}")
    for r in results:
        fr = r["fraction_of_gemm_rate"]
        tb = f"{r['backprop_over_torch']:9.2f} {r['eg_over_torch']:9.2f}" if torch else f"{'-':>9} {'-':>9}"
        bu = f"{r['bottom_up_over_torch_forward']:12.2f}" if torch else f"{'-':>12}"
        print(f"{r['net']:<11} {r['threads']:>3} {tb} {r['eg_over_backprop_time']:8.2f} "
              f"{r['eg_rate_over_backprop_rate']:15.2f} {bu} {100 * fr['backprop']:8.0f}% {100 * fr['eg']:8.0f}%")
    record = {"benchmark": "bench_vs_torch", "allocator_tuned": tuned, "batch": BATCH, "dtype": "float32",
              "rounds": args.rounds, "steps_per_round": args.steps, "torch": getattr(torch, "__version__", None),
              "numpy": np.__version__, "machine": platform.machine(), "results": results}
    if args.profile:
        record["profile"] = {n: profile(n, args.steps) for n in args.nets}
        args.profile.parent.mkdir(parents=True, exist_ok=True)
        args.profile.write_text(json.dumps(record["profile"], indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
