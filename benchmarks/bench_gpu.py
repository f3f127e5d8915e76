"""One conv-small backprop epoch and one EG epoch on CuPy, against PyTorch with cuDNN in the same run.

The GPU part of the speed benchmarks (``benchmarks/gpu_check.sh`` runs it). Data: 50,000 random
28x28 float32 images and labels made on the host with a fixed seed and moved to the device once
(the epoch times the steps, not the data loading; no MNIST is needed on the GPU machine).
Batch 128, Adam, float32; 391 steps an epoch (``--steps`` for fewer). Every timing synchronises
the device; the first steps (CuPy's kernel compilation, cuDNN's autotuning) are a warm-up that is
not timed. PyTorch is optional: without it (or without CUDA in it) only ours is timed.

Usage::

    python benchmarks/bench_gpu.py --json results/gpu/bench_gpu.json
    python benchmarks/bench_gpu.py --steps 50     # a shorter "epoch"
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from drmm_ref import backend  # noqa: E402
from drmm_ref.drmm import bottom_up, init_params, preset  # noqa: E402
from drmm_ref.learning import Adam, EGConfig, backprop_step, eg_step, trainable  # noqa: E402

BATCH, N_IMAGES, WARMUP = 128, 50_000, 3


def _sync():
    import cupy

    cupy.cuda.Device().synchronize()


def ours(model: str, xs, ys, steps: int) -> dict:
    """Seconds of ``steps`` steps (after ``WARMUP`` untimed ones) of our EG or backprop on CuPy."""
    net = preset("conv-small")
    params = init_params(net, 0, dtype="float32", xp="cupy")
    opt = Adam()
    state = opt.init(trainable(params))
    config = EGConfig(trace_m_step=False)

    def step(i):
        nonlocal params, state
        s = (i * BATCH) % (N_IMAGES - BATCH)
        x, y = xs[s:s + BATCH], ys[s:s + BATCH]
        if model == "eg":
            params, state, _ = eg_step(params, opt, state, x, y, config, check=False)
        else:
            params, state, _ = backprop_step(params, opt, state, x, y, check=False)

    for i in range(WARMUP):
        step(i)
    _sync()
    start = time.perf_counter()
    for i in range(steps):
        step(i)
    _sync()
    seconds = time.perf_counter() - start
    start = time.perf_counter()
    for i in range(0, N_IMAGES, 1000):
        bottom_up(params, xs[i:i + 1000], check=False)
    _sync()
    return {"epoch_seconds": seconds * 391 / steps, "step_ms": 1e3 * seconds / steps,
            "evaluate_50k_seconds": time.perf_counter() - start}


def torch_epoch(xs_host, ys_host, steps: int) -> dict | None:
    """The same net in torch.nn on CUDA (cuDNN, benchmark mode): one backprop epoch's seconds."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    torch.backends.cudnn.benchmark = True
    net = preset("conv-small")
    mods, c = [], 1
    for ly in net.layers:
        mods += [torch.nn.Conv2d(c, ly.channels, ly.kernel, padding=ly.padding), torch.nn.ReLU()]
        if ly.pool > 1:
            mods.append(torch.nn.MaxPool2d(ly.pool))
        c = ly.channels
    mods += [torch.nn.Flatten(), torch.nn.Linear(int(np.prod(net.shapes[net.L])), net.n_classes)]
    model = torch.nn.Sequential(*mods).cuda()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    xs, ys = torch.from_numpy(xs_host).cuda(), torch.from_numpy(ys_host).cuda()

    def step(i):
        s = (i * BATCH) % (N_IMAGES - BATCH)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(xs[s:s + BATCH]), ys[s:s + BATCH]).backward()
        opt.step()

    for i in range(WARMUP):
        step(i)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for i in range(steps):
        step(i)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return {"epoch_seconds": seconds * 391 / steps, "step_ms": 1e3 * seconds / steps, "torch": torch.__version__,
            "cudnn": torch.backends.cudnn.version()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=391, help="timed steps (391 = one epoch of 50,000 images)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() < 1:
            raise RuntimeError("no CUDA device")
    except Exception as exc:  # noqa: BLE001 - any failure means: no usable GPU here
        print(f"no usable CuPy GPU ({exc}); nothing to benchmark")
        return 2
    rng = np.random.default_rng(0)
    xs_host = rng.random((N_IMAGES, 1, 28, 28), dtype=np.float32)
    ys_host = rng.integers(0, 10, N_IMAGES).astype(np.int64)
    xs = backend.asarray(xs_host, xp="cupy")
    ys = backend.asarray(ys_host, xp="cupy")
    record = {"benchmark": "bench_gpu", "net": "conv-small", "batch": BATCH, "dtype": "float32",
              "steps_timed": args.steps, "device": cupy.cuda.runtime.getDeviceProperties(0)["name"].decode(),
              "cupy": cupy.__version__, "numpy": np.__version__}
    record["ours_backprop"] = ours("backprop", xs, ys, args.steps)
    record["ours_eg"] = ours("eg", xs, ys, args.steps)
    record["torch_backprop"] = torch_epoch(xs_host, ys_host, args.steps)
    if record["torch_backprop"]:
        t = record["torch_backprop"]["epoch_seconds"]
        record["backprop_over_torch"] = record["ours_backprop"]["epoch_seconds"] / t
        record["eg_over_torch"] = record["ours_eg"]["epoch_seconds"] / t
    record["eg_over_backprop"] = record["ours_eg"]["epoch_seconds"] / record["ours_backprop"]["epoch_seconds"]
    print(json.dumps(record, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
