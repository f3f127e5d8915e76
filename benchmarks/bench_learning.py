"""Benchmark of training: EG step vs backprop step on ``small2``, and peak memory of a step on ``conv-small``.

* **Speed** (target of the first learning milestone: EG <= 1.5x backprop per epoch): seconds per batch of an EG step
  (:func:`drmm_ref.learning.eg_step`, G-step alone, RC-after-M trace off) and of a backprop step
  (:func:`drmm_ref.learning.backprop_step`) on ``small2``, batch 128, float32, Adam, on the same
  batches (MNIST when cached, else the synthetic stand-in), alternating the two models in rounds so
  that machine noise hits both alike. The result is the ratio; seconds per epoch are extrapolated
  to 50,000 training images (391 batches). ``--epoch`` times one real epoch of each instead.
* **Memory** (target: under 2 GiB for ``conv-small``): peak bytes allocated during one training
  step at batch 128 (``tracemalloc``, which sees NumPy's array buffers), after a warm-up step.
* PyTorch's CPU backprop on the same net is timed when ``torch`` is installed.

Usage::

    python benchmarks/bench_learning.py                 # 10 batches per model and round, 3 rounds
    python benchmarks/bench_learning.py --quick         # 2 batches, 1 round
    python benchmarks/bench_learning.py --epoch         # one full small2 epoch of each model (minutes)
    python benchmarks/bench_learning.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from drmm_ref.drmm import init_params, preset  # noqa: E402
from drmm_ref.learning import (Adam, EGConfig, backprop_step, eg_step, mnist_or_synthetic,  # noqa: E402
                               trainable)

BATCH = 128


def _batches(images, labels, n_batches, seed=0):
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(labels))
    for b in range(n_batches):
        j = idx[(b * BATCH) % len(labels):][:BATCH]
        yield images[j].astype(np.float32), labels[j].astype(np.int64)


def _step(model, params, opt, state, x, y):
    if model == "drmm":
        return eg_step(params, opt, state, x, y, EGConfig(trace_m_step=False))
    return backprop_step(params, opt, state, x, y)


def time_steps(images, labels, batches: int, rounds: int) -> dict:
    net = preset("small2")
    opt = Adam()
    out = {"dcn": [], "drmm": []}
    warm = next(_batches(images, labels, 1, seed=99))
    for model in out:  # warm-up
        p = init_params(net, 0, dtype="float32")
        _step(model, p, opt, opt.init(trainable(p)), *warm)
    for r in range(rounds):
        for model in (("dcn", "drmm") if r % 2 == 0 else ("drmm", "dcn")):
            params = init_params(net, 0, dtype="float32")
            state = opt.init(trainable(params))
            start = time.perf_counter()
            for x, y in _batches(images, labels, batches, seed=r):
                params, state, _ = _step(model, params, opt, state, x, y)
            out[model].append((time.perf_counter() - start) / batches)
    per = {m: float(np.median(v)) for m, v in out.items()}
    return {"seconds_per_batch": per, "rounds": {m: [float(t) for t in v] for m, v in out.items()},
            "batches_per_round": batches, "eg_over_backprop": per["drmm"] / per["dcn"],
            "extrapolated_seconds_per_epoch_50k": {m: v * math.ceil(50000 / BATCH) for m, v in per.items()}}


def time_epoch(images, labels) -> dict:
    net = preset("small2")
    opt = Adam()
    out = {}
    n_batches = math.ceil(len(labels) / BATCH)
    for model in ("dcn", "drmm"):
        params = init_params(net, 0, dtype="float32")
        state = opt.init(trainable(params))
        start = time.perf_counter()
        for x, y in _batches(images, labels, n_batches):
            params, state, _ = _step(model, params, opt, state, x, y)
        out[model] = time.perf_counter() - start
    return {"seconds_per_epoch": out, "n_train": int(len(labels)), "eg_over_backprop": out["drmm"] / out["dcn"]}


def peak_memory(images, labels, net_name="conv-small") -> dict:
    net = preset(net_name)
    opt = Adam()
    x, y = next(_batches(images, labels, 1))
    out = {}
    for model in ("dcn", "drmm"):
        params = init_params(net, 0, dtype="float32")
        state = opt.init(trainable(params))
        params, state, _ = _step(model, params, opt, state, x, y)  # warm-up (allocates the optimiser's moments)
        tracemalloc.start()
        tracemalloc.reset_peak()
        base, _ = tracemalloc.get_traced_memory()
        _step(model, params, opt, state, x, y)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        out[model] = {"peak_bytes": int(peak - base), "peak_GiB": (peak - base) / 2 ** 30}
    return {"net": net_name, "batch": BATCH, **out}


def torch_backprop(images, labels, batches: int):  # pragma: no cover - only when torch is installed
    try:
        import torch
    except ImportError:
        return None
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 32, 5), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                                torch.nn.Conv2d(32, 64, 5), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                                torch.nn.Flatten(), torch.nn.Linear(64 * 16, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    data = list(_batches(images, labels, batches + 1))
    for i, (x, y) in enumerate(data):
        if i == 1:
            start = time.perf_counter()
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(torch.from_numpy(x)), torch.from_numpy(y))
        loss.backward()
        opt.step()
    return {"seconds_per_batch": (time.perf_counter() - start) / batches, "torch": torch.__version__,
            "threads": torch.get_num_threads()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="EG vs backprop step times on small2; peak step memory on conv-small")
    parser.add_argument("--quick", action="store_true", help="2 batches, 1 round (smoke run)")
    parser.add_argument("--batches", type=int, default=10, help="batches per model and round (default 10)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    parser.add_argument("--epoch", action="store_true", help="time one full small2 epoch of each model instead")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    parser.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    data, is_mnist = mnist_or_synthetic(2048, 500)
    images = np.asarray(data.train.images)
    labels = np.asarray(data.train.labels).astype(np.int64)
    result = {"data": data.source, "host": {"machine": platform.machine(), "python": platform.python_version(),
                                            "numpy": np.__version__}}
    if args.epoch:
        result["epoch"] = time_epoch(images, labels)
        print(f"one small2 epoch on {result['epoch']['n_train']} images: "
              f"{result['epoch']['seconds_per_epoch']}; EG/backprop {result['epoch']['eg_over_backprop']:.2f}")
    else:
        batches, rounds = (2, 1) if args.quick else (args.batches, args.rounds)
        result["speed"] = time_steps(images, labels, batches, rounds)
        s = result["speed"]
        print(f"small2, batch {BATCH}, float32: backprop {s['seconds_per_batch']['dcn']:.3f} s/batch, "
              f"EG {s['seconds_per_batch']['drmm']:.3f} s/batch -> EG/backprop = {s['eg_over_backprop']:.2f} "
              f"(target <= 1.5); extrapolated s/epoch (50k): {s['extrapolated_seconds_per_epoch_50k']}")
        t = torch_backprop(images, labels, batches)
        result["torch"] = t
        if t is None:
            print("PyTorch not installed: no comparison with its CPU backprop")
        else:
            print(f"PyTorch backprop {t['seconds_per_batch']:.3f} s/batch -> ours/torch = "
                  f"{s['seconds_per_batch']['dcn'] / t['seconds_per_batch']:.2f}")
    if not args.no_memory:
        result["memory"] = peak_memory(images, labels)
        m = result["memory"]
        print(f"peak memory of one conv-small training step at batch {BATCH}: backprop {m['dcn']['peak_GiB']:.3f} GiB, "
              f"EG {m['drmm']['peak_GiB']:.3f} GiB (target < 2 GiB)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
