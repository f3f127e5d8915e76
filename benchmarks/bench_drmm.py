"""Benchmark of the DRMM's bottom-up pass (the DCN forward) and top-down pass on ``conv-small``.

Batch 256 (``--batch``), float32, random parameters with biases. Prints

* images per second of ``drmm_ref.bottom_up`` and ``drmm_ref.top_down`` (best of ``--repeats``
  after a warm-up call; GPU timings synchronise);
* each layer's share of the time (``bottom_up_layer`` per layer plus the class scores; the
  rendering operator ``render_layer`` per layer plus the template lookup) — the shares are measured
  one layer at a time, so they add up to about the whole pass;
* the achieved GFLOP/s of the convolutions (``2 N O Ho Wo C k^2`` per layer) and its ratio to a
  square float32 matrix product timed in the same run (the machine's practical matmul rate);
* when PyTorch is importable, the same network's forward in PyTorch on the same machine
  (conv -> bias -> ReLU -> max-pool -> linear) and our speed relative to it (> 1: we are faster).

Absolute times on shared machines are noise; the ratios are the result.

Usage::

    python benchmarks/bench_drmm.py            # batch 256, 5 repeats
    python benchmarks/bench_drmm.py --quick    # smoke run: batch 16, 1 repeat
    python benchmarks/bench_drmm.py --backend cupy
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
from drmm_ref import drmm as D  # noqa: E402
from drmm_ref.drmm.inference import bottom_up_layer, class_scores  # noqa: E402
from drmm_ref.drmm.params import template_maps  # noqa: E402




def conv_flops(net, batch: int) -> list[float]:
    """Multiply-add count x 2 of each layer's convolution at this batch."""
    out = []
    for (o, c, k, _), (_, ho, wo) in zip(net.filter_shapes, net.conv_shapes):
        out.append(2.0 * batch * o * ho * wo * c * k * k)
    return out


def _torch_forward_time(params, images, repeats):
    try:
        import torch
    except ImportError:
        return None
    net = params.net
    ws = [torch.from_numpy(np.ascontiguousarray(backend.to_numpy(w))) for w in params.filters]
    bs = [torch.from_numpy(np.ascontiguousarray(backend.to_numpy(b))) for b in params.biases]
    mu = torch.from_numpy(np.ascontiguousarray(backend.to_numpy(template_maps(params)))).reshape(net.n_classes, -1)
    bc = torch.from_numpy(np.ascontiguousarray(backend.to_numpy(params.class_biases)))
    x = torch.from_numpy(np.ascontiguousarray(backend.to_numpy(images)))
    F = torch.nn.functional

    def forward():
        h = x
        for w, b, ly in zip(ws, bs, net.layers):
            h = F.relu(F.conv2d(h, w, b, padding=ly.padding))
            if ly.pool > 1:
                h = F.max_pool2d(h, ly.pool, return_indices=True)[0]
        return h.reshape(h.shape[0], -1) @ mu.T + bc

    with torch.no_grad():
        return best_time(forward, np, repeats)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", default="numpy", choices=("numpy", "cupy", "array_api_strict"))
    parser.add_argument("--preset", default="conv-small", choices=sorted(D.PRESETS))
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="smoke run: batch 16, 1 repeat")
    parser.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.quick:
        args.batch, args.repeats = 16, 1
    xp = backend.resolve_namespace(args.backend)
    net = D.preset(args.preset)
    params = D.init_params(net, 0, bias_scale=0.1, class_bias_scale=0.1, dtype="float32", xp=xp)
    images = backend.random_normal((args.batch,) + net.image_shape, seed=1, dtype="float32", xp=xp)

    peak_n = 2048 if not args.quick else 512
    a = backend.random_normal((peak_n, peak_n), seed=2, dtype="float32", xp=xp)
    peak = 2 * peak_n ** 3 / best_time(lambda: xp.matmul(a, a), xp, args.repeats) / 1e9

    t_bu = best_time(lambda: D.bottom_up(params, images), xp, args.repeats)
    fw = D.bottom_up(params, images)
    t_td = best_time(lambda: D.top_down(params, fw), xp, args.repeats)

    # Per-layer shares, one layer at a time on the real intermediate maps.
    bu_parts, td_parts = [], []
    for l in range(1, net.L + 1):
        h_in = fw.features[l - 1]
        bu_parts.append(best_time(lambda: bottom_up_layer(params, l, h_in), xp, args.repeats))
    bu_parts.append(best_time(lambda: class_scores(params, fw.features[-1]), xp, args.repeats))
    rend = D.top_down(params, fw)
    cls = rend.classes
    td_parts.append(best_time(lambda: xp.take(template_maps(params), cls, axis=0), xp, args.repeats))
    for l in range(net.L, 0, -1):
        ly = net.layers[l - 1]
        z = rend.renderings[l]
        t, s = fw.latents.positions[l - 1], fw.latents.switches[l - 1]
        td_parts.append(best_time(lambda: D.render_layer(z, t, s, params.filters[l - 1], ly.padding, ly.pool),
                                  xp, args.repeats))
    flops = conv_flops(net, args.batch)
    gflops_bu = sum(flops) / t_bu / 1e9
    gflops_td = sum(flops) / t_td / 1e9  # the transposed convolutions have the same multiply-add count
    torch_t = _torch_forward_time(params, images, args.repeats) if args.backend == "numpy" else None

    result = {
        "preset": args.preset, "backend": args.backend, "batch": args.batch, "dtype": "float32",
        "repeats": args.repeats, "matmul_gflops": peak,
        "bottom_up": {"seconds": t_bu, "images_per_s": args.batch / t_bu, "conv_gflops": gflops_bu,
                      "ratio_to_matmul_rate": gflops_bu / peak,
                      "layer_share": [p / sum(bu_parts) for p in bu_parts]},
        "top_down": {"seconds": t_td, "images_per_s": args.batch / t_td, "conv_gflops": gflops_td,
                     "ratio_to_matmul_rate": gflops_td / peak,
                     "layer_share": [p / sum(td_parts) for p in td_parts]},
        "torch_forward_seconds": torch_t,
        "speed_vs_torch_forward": (torch_t / t_bu) if torch_t else None,
    }
    print(f"{args.preset}, backend {args.backend}, batch {args.batch}, float32; "
          f"square {peak_n}^3 matmul {peak:.1f} GFLOP/s")
    for name, labels in (("bottom_up", [f"layer {l}" for l in range(1, net.L + 1)] + ["scores"]),
                         ("top_down", ["templates"] + [f"layer {l}" for l in range(net.L, 0, -1)])):
        r = result[name]
        shares = ", ".join(f"{lab} {s:.0%}" for lab, s in zip(labels, r["layer_share"]))
        print(f"{name:9s}: {r['images_per_s']:9.1f} images/s  ({r['seconds'] * 1e3:7.1f} ms/batch), conv "
              f"{r['conv_gflops']:6.1f} GFLOP/s = {r['ratio_to_matmul_rate']:.2f} x matmul rate; shares: {shares}")
    if torch_t:
        print(f"PyTorch forward: {args.batch / torch_t:9.1f} images/s; ours / torch speed = {torch_t / t_bu:.2f}")
    else:
        print("PyTorch not importable (or not numpy): no torch ratio")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
