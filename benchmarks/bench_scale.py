"""Benchmark of EM's E-step in one process, streamed, and on a Dask cluster of 1 and 2 workers (docs/scaling.md).

The model is rmm-mnist's (K = 10 classes, M = 10 sub-templates, k = 20, 28x28 images: 9 x 9
positions, float32) on ``N`` images drawn from a random model of that shape. Measured in the same run:

* **time per E-step pass** (best of ``--repeats`` after a warm-up pass), as ratios to the
  in-process streamed pass: in memory (``e_step`` on all ``N`` at once, then the statistics),
  streamed (``chunk_size``), and ``distributed.LocalCluster`` with 1 and 2 worker processes of 1
  thread each (the chunks already on the workers; their one-time scatter is timed apart);
* **bytes per iteration** on the cluster: the pickled parameters broadcast to each worker, and the
  pickled :class:`~drmm_ref.rmm.stats.EMStats` partial sums (one per worker goes over the network),
  against what gathering the chunk's posteriors would send;
* **the task overhead** of the cluster: one pass over ``T`` one-image chunks minus ``T`` times the
  compute of one image, per task (the ``T`` E-step tasks and ``T - 1`` additions);
* **the M-step** (:func:`~drmm_ref.rmm.em.m_step_from_stats`) on the client: its seconds;
* **memory against N**: the tracemalloc peak of one streamed pass (chunk fixed) and of the
  in-memory pass, for growing ``N``;
* **the DRMM's whole-set EM** (:mod:`drmm_ref.learning.whole_set`, conv-small on 28x28 inputs): bytes per image
  of the stored (packed) latents, seconds per chunk to unpack them against recomputing them by the bottom-up
  pass, and seconds per chunk of one CGLS pass (base rendering + apply + adjoint) for each block.

Ratios measured in the same run are the result; absolute times on a shared 2-core machine are noise.

Usage::

    python benchmarks/bench_scale.py            # N = 4000, chunks of 500, 3 repeats
    python benchmarks/bench_scale.py --quick    # N = 500, chunks of 125, 1 repeat, small memory curve
    python benchmarks/bench_scale.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
import time
import tracemalloc
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from drmm_ref import rmm  # noqa: E402
from drmm_ref.rmm import stats as S  # noqa: E402
from drmm_ref.rmm.em import m_step_from_stats  # noqa: E402
from drmm_ref.rmm.stream import DaskPass, chunk_statistics, streamed_statistics  # noqa: E402

K, M, KERNEL, SIDE = 10, 10, 20, 28


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: N = 500, chunks of 125, one repeat")
    parser.add_argument("--n", type=int, default=None, help="images (default 4000, quick 500)")
    parser.add_argument("--chunk", type=int, default=None, help="images per chunk (default 500, quick 125)")
    parser.add_argument("--repeats", type=int, default=None, help="timed passes per case (default 3, quick 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    return parser


def model(seed: int) -> rmm.RMMParams:
    rng = np.random.default_rng(seed)
    t = rng.uniform(0, 1, (K, M, 1, KERNEL, KERNEL)).astype(np.float32)
    return rmm.RMMParams(templates=t, class_prior=np.full(K, 1 / K, dtype=np.float32), switch_prior=0.8,
                         sigma2=0.05, image_shape=(SIDE, SIDE))


def best(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def peak_bytes(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def cluster_case(images, labels, params, workers: int, chunk: int, repeats: int) -> dict:
    import distributed

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cluster = distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                           dashboard_address=None, silence_logs=40)
    client = distributed.Client(cluster)
    try:
        start = time.perf_counter()
        p = DaskPass(client, images, labels, hard=False, chunk_size=chunk)
        scatter_s = time.perf_counter() - start
        try:
            host_params = p.prepare(params)
            seconds = best(lambda: p(host_params), repeats)
            rec = p.history[-1]
            # task overhead: T one-image chunks (T E-step tasks + T - 1 additions)
            tiny_n = 8 * workers
            q = DaskPass(client, images[:tiny_n], labels[:tiny_n], hard=False, chunk_size=1)
            try:
                q.prepare(params)
                tiny_s = best(lambda: q(host_params), repeats)
            finally:
                q.close()
        finally:
            p.close()
    finally:
        client.close()
        cluster.close()
    return {"workers": workers, "seconds": seconds, "scatter_seconds": scatter_s, "chunks": rec["chunks"],
            "params_bytes": rec["params_bytes"], "stats_bytes": rec["stats_bytes"],
            "bytes_per_iteration": workers * (rec["params_bytes"] + rec["stats_bytes"]),
            "tiny_pass_seconds": tiny_s, "tiny_tasks": 2 * tiny_n - 1, "tiny_images": tiny_n}


def run(args) -> dict:
    n = args.n if args.n is not None else (500 if args.quick else 4000)
    chunk = args.chunk if args.chunk is not None else (125 if args.quick else 500)
    repeats = args.repeats if args.repeats is not None else (1 if args.quick else 3)
    params = model(args.seed)
    images, labels, _ = rmm.sample(params, n, args.seed)
    images, labels = np.asarray(images, dtype=np.float32), np.asarray(labels)
    out: dict = {"n": n, "chunk": chunk, "repeats": repeats, "model": {"K": K, "M": M, "k": KERNEL, "side": SIDE,
                                                                       "positions": params.grid_shape}}
    hg, wg = params.grid_shape
    t = {
        "in-memory": best(lambda: S.statistics_from_responsibilities(
            params, images, *(lambda e: (e.responsibilities, e.responsibilities_on, e.per_example))(
                rmm.e_step(params, images, labels))), repeats),
        "streamed": best(lambda: streamed_statistics(params, images, labels, chunk_size=chunk), repeats),
    }
    one = best(lambda: chunk_statistics(params, images[:1], labels[:1]), max(repeats, 3))
    stats = streamed_statistics(params, images, labels, chunk_size=chunk)
    out["m_step_seconds"] = best(lambda: m_step_from_stats(params, stats), max(repeats, 3))
    out["seconds_per_image_streamed"] = t["streamed"] / n
    out["seconds_one_image_chunk"] = one
    out["stats_bytes_pickled"] = len(pickle.dumps(stats))
    out["posterior_bytes_per_image"] = 2 * K * M * hg * wg * 4
    try:
        import distributed  # noqa: F401

        out["cluster"] = [cluster_case(images, labels, params, w, chunk, repeats) for w in (1, 2)]
        for c in out["cluster"]:
            t[f"LocalCluster {c['workers']} worker(s)"] = c["seconds"]
            c["overhead_per_task_seconds"] = max(0.0, (c["tiny_pass_seconds"] - c["tiny_images"] * one)
                                                 / c["tiny_tasks"] * c["workers"])
    except ImportError:
        out["cluster"] = "skipped: Dask not installed (pip install \"drmm-ref[scale]\")"
    out["seconds"] = t
    out["ratio_to_streamed"] = {k: v / t["streamed"] for k, v in t.items()}
    # memory curve: streamed pass (chunk fixed) and in-memory pass
    sizes = [n // 4, n // 2, n]
    curve = []
    for m in sizes:
        curve.append({"n": m,
                      "streamed_peak_mb": peak_bytes(lambda: streamed_statistics(params, images[:m], labels[:m],
                                                                                 chunk_size=chunk)) / 2 ** 20,
                      "in_memory_peak_mb": peak_bytes(lambda: rmm.e_step(params, images[:m], labels[:m])) / 2 ** 20})
    out["memory_curve"] = curve
    out["drmm_whole_set"] = drmm_case(chunk, repeats, args.seed)
    return out


def drmm_case(chunk: int, repeats: int, seed: int) -> dict:
    """Stored vs recomputed latents and the cost of one whole-set CGLS pass, per chunk (conv-small)."""
    from drmm_ref.drmm import init_params, preset, render
    from drmm_ref.learning import block_names, block_operator
    from drmm_ref.learning.whole_set import whole_set_e_step

    net = preset("conv-small")
    params = init_params(net, seed)
    b = min(chunk, 100)
    rng = np.random.default_rng(seed)
    x = rng.random((b,) + tuple(net.image_shape)).astype(np.dtype(str(params.dtype)))
    y = rng.integers(0, net.n_classes, size=b)
    stored = whole_set_e_step(params, x, y, chunk_size=b, latents="stored")
    again = whole_set_e_step(params, x, y, chunk_size=b, latents="recompute")
    out = {"net": net.name, "chunk": b, "dtype": str(params.dtype), "stored_bytes_per_image": stored.nbytes / b,
           "unpack_seconds": best(lambda: stored.chunk(params, x, 0, b), repeats),
           "recompute_seconds": best(lambda: again.chunk(params, x, 0, b), repeats), "pass_seconds": {}}
    classes, lat = stored.chunk(params, x, 0, b)
    for block in block_names(net.L):
        def one_pass(block=block):
            op = block_operator(params, render(params, classes, lat), block)
            theta = params.class_templates if block == "class_templates" else params.filters[int(block[8:]) - 1]
            return op.adjoint(op.apply(theta))
        out["pass_seconds"][block] = best(one_pass, repeats)
    return out


def main(argv=None) -> dict:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    with warnings.catch_warnings():  # a random model on few images leaves components empty: not what is timed
        warnings.simplefilter("ignore", rmm.em.EmptyComponentWarning)
        out = run(args)
    print(f"RMM E-step pass: N = {out['n']}, chunks of {out['chunk']}, K = {K}, M = {M}, k = {KERNEL}, "
          f"{SIDE}x{SIDE}, float32, best of {out['repeats']}")
    print(f"{'case':<28} {'seconds':>9} {'x streamed':>11}")
    for name, sec in out["seconds"].items():
        print(f"{name:<28} {sec:>9.3f} {out['ratio_to_streamed'][name]:>11.2f}")
    if isinstance(out["cluster"], list):
        for c in out["cluster"]:
            print(f"cluster {c['workers']} worker(s): {c['chunks']} chunks, scatter {c['scatter_seconds']:.2f} s, "
                  f"params {c['params_bytes'] / 1e3:.0f} kB/worker, statistics {c['stats_bytes'] / 1e3:.0f} kB per "
                  f"partial sum, {c['bytes_per_iteration'] / 1e6:.2f} MB per iteration; "
                  f"overhead {1e3 * c['overhead_per_task_seconds']:.1f} ms per task")
    else:
        print(out["cluster"])
    print(f"one chunk's posteriors would be {out['posterior_bytes_per_image'] * out['chunk'] / 1e6:.0f} MB "
          f"(statistics: {out['stats_bytes_pickled'] / 1e3:.0f} kB); "
          f"M-step on the client {out['m_step_seconds']:.3f} s; "
          f"E-step {1e3 * out['seconds_per_image_streamed']:.2f} ms per image")
    print(f"{'N':>6} {'streamed peak MB':>17} {'in-memory peak MB':>18}")
    for row in out["memory_curve"]:
        print(f"{row['n']:>6} {row['streamed_peak_mb']:>17.1f} {row['in_memory_peak_mb']:>18.1f}")
    d = out["drmm_whole_set"]
    print(f"DRMM whole-set ({d['net']}, chunk {d['chunk']}, {d['dtype']}): stored latents "
          f"{d['stored_bytes_per_image'] / 1e3:.1f} kB/image; per chunk: unpack {d['unpack_seconds']:.4f} s, "
          f"recompute {d['recompute_seconds']:.3f} s; one CGLS pass "
          + ", ".join(f"{k} {v:.3f} s" for k, v in d["pass_seconds"].items()))
    if args.json is not None:
        args.json.write_text(json.dumps(out, indent=2, default=str))
    return out


if __name__ == "__main__":
    main()
