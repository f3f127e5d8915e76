"""Claim ``rmm-mnist`` (SPEC §1; Patel et al. 2016, §2.1): the shallow RMM fitted by supervised EM on MNIST.

Model (docs/rmm.md): templates of side k = 20 (so 9 x 9 valid positions on 28 x 28 images), M = 10
sub-templates per class, one shared sigma^2, a shared switch prior; fitted by supervised soft EM
(:func:`drmm_ref.rmm.fit`, classes clamped to the labels, k-means++ initialisation on patches of each
class) and classified by its MAP class (:func:`drmm_ref.rmm.map_estimate`, max-sum over m, g, a).
There is no reliable paper number for this model: the claim records the measured test error
(``measured`` in both modes; a replication record without a target).

``--full``: all 50,000 training images (MNIST's 60,000 less the validation split), at most 20 EM
iterations, the 10,000 validation and 10,000 test images. EM is streamed (``rmm.fit(chunk_size=1000)``,
``docs/scaling.md``): each E-step reduces one chunk of 1,000 images at a time to its sufficient
statistics, so the fit holds one chunk's posteriors instead of all of them (the in-memory E-step
peaks at ~0.19 MB per image in float32, ~9 GB for 50,000: ``benchmarks/bench_scale.py``; the full
record's ``measured.streaming`` has EM's traced peak). The k-means++ initialisation draws from a
class-balanced subset of 10,000 of them (:func:`drmm_ref.data.labelled_subset` with the run's seed:
its patches alone would take 6.5 GB for all 50,000). ``--quick``: 1,000 training images (all of them
initialise), chunks of 250, 5 iterations, 1,000 validation / test images, from the MNIST cache when
present, else the synthetic stand-in.

``--scheduler ADDRESS`` (this script only, ``python -m validation.rmm_mnist --full --scheduler
tcp://host:8786``; there is no RMM command in ``drmm-ref``): run the E-steps on that Dask cluster
(``pip install "drmm-ref[scale]"``); the record says where it ran.
"""

from __future__ import annotations

import argparse
import functools
import math
import resource
import time
import tracemalloc
import warnings

import numpy as np

from drmm_ref import rmm, to_numpy
from drmm_ref.data import labelled_subset
from drmm_ref.learning import mnist_or_synthetic

from ._claim import Claim, Result, run_claim

CLAIM = Claim(
    id="rmm-mnist",
    kind="replication",
    paper_ref="Patel, Nguyen & Baraniuk 2016, §2.1 (the RMM); SPEC §1 (EM for the RMM)",
    statement="Test error on MNIST of the shallow RMM (k = 20, 9 x 9 positions, M = 10 sub-templates per class, "
    "shared sigma^2) fitted by supervised EM and classified by its MAP class. No paper number: measured.",
    assumptions=(
        "supervised soft EM, class clamped to the label; k-means++ initialisation on each class's patches",
        "uniform position prior (not learned), one shared switch prior, sub-template prior 1/M",
        "float32 on NumPy; classification = argmax_c max_{m,g,a} ln p(I, c, m, g, a)",
    ),
)

FULL = {"n_train": None, "n_init": 10_000, "chunk_size": 1_000, "max_iter": 20, "n_eval": None}
QUICK = {"n_train": 1_000, "n_init": 1_000, "chunk_size": 250, "max_iter": 5, "n_eval": 1_000}
K, M, KERNEL = 10, 10, 20


def _error(params, images: np.ndarray, labels: np.ndarray, batch: int = 1000) -> float:
    wrong = 0
    for s in range(0, len(labels), batch):
        classes, _, _ = rmm.map_estimate(params, images[s:s + batch])
        wrong += int(np.sum(np.asarray(to_numpy(classes)) != labels[s:s + batch]))
    return wrong / max(len(labels), 1)


def run(args, scheduler: str | None = None) -> Result:
    if args.backend != "numpy":
        raise ValueError("rmm-mnist runs on NumPy; use --backend numpy")
    spec = FULL if args.mode == "full" else QUICK
    data, is_mnist = mnist_or_synthetic(spec["n_train"], spec["n_eval"], seed=args.seed,
                                        allow_download=args.mode == "full")
    ytr_all = np.asarray(to_numpy(data.train.labels)).astype(np.int64)
    n_train = len(ytr_all) if spec["n_train"] is None else min(spec["n_train"], len(ytr_all))
    idx = labelled_subset(ytr_all, n_train - n_train % K, args.seed) if is_mnist and n_train < len(ytr_all) \
        else np.arange(n_train)
    xtr = np.asarray(to_numpy(data.train.images))[idx].astype(np.float32)
    ytr = ytr_all[idx]
    n_init = min(spec["n_init"], len(ytr))
    init_idx = labelled_subset(ytr, n_init - n_init % K, args.seed) if n_init < len(ytr) else np.arange(len(ytr))
    n_eval = spec["n_eval"]

    def split(s):
        x, y = np.asarray(to_numpy(s.images)).astype(np.float32), np.asarray(to_numpy(s.labels)).astype(np.int64)
        return (x[:n_eval], y[:n_eval]) if n_eval else (x, y)

    xva, yva = split(data.validation)
    xte, yte = split(data.test)
    start = time.perf_counter()
    tracemalloc.start()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        init = rmm.init_params(xtr[init_idx], K, KERNEL, labels=ytr[init_idx], num_subtemplates=M,
                               seed=np.random.default_rng(np.random.SeedSequence(args.seed).spawn(1)[0]))
        init_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        params, trace = rmm.fit(xtr, init=init, labels=ytr, method="soft", max_iter=spec["max_iter"], tol=1e-6,
                                chunk_size=spec["chunk_size"], client=scheduler)
        em_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    fit_s = time.perf_counter() - start
    train_err = _error(params, xtr, ytr)
    val_err = _error(params, xva, yva)
    test_err = _error(params, xte, yte)
    objective = [float(v) for v in trace.objective]
    drops = sum(1 for a, b in zip(objective, objective[1:]) if b < a - 1e-6 * abs(a))
    measured = {"test_error": test_err, "validation_error": val_err, "train_error": train_err,
                "n_train": int(len(ytr)), "n_validation": int(len(yva)), "n_test": int(len(yte)),
                "em_iterations": int(trace.n_iter), "converged": bool(trace.converged), "fit_seconds": fit_s,
                "objective_trace": objective, "objective_decreases": drops, "sigma2": float(params.sigma2),
                "warnings": sorted({f"{w.category.__name__}: {str(w.message)[:120]}" for w in caught}),
                "model": {"kernel": KERNEL, "positions": "9 x 9" if xtr.shape[-1] == 28 else "valid grid",
                          "sub_templates": M, "classes": K},
                "streaming": {"chunk_size": spec["chunk_size"], "n_init": int(len(init_idx)),
                              "engine": f"Dask scheduler {scheduler}" if scheduler else "in-process",
                              "em_peak_traced_mb": em_peak / 2 ** 20, "init_peak_traced_mb": init_peak / 2 ** 20,
                              "train_images_mb": xtr.nbytes / 2 ** 20,
                              "in_memory_posteriors_mb":
                                  2 * xtr.shape[0] * K * M * math.prod(params.grid_shape) * 4 / 2 ** 20,
                              "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 10}}
    source = data.source if is_mnist else data.source + " (MNIST cache absent)"
    on = "" if is_mnist else "synthetic stand-in, not MNIST: "  # quick runs without the MNIST cache
    summary = (f"{on}test error {100 * test_err:.2f}% (validation {100 * val_err:.2f}%, train {100 * train_err:.2f}%) "
               f"with {len(ytr)} training images, {trace.n_iter} EM iterations in {fit_s:.0f} s; "
               f"objective decreases: {drops}")
    extra = (f"streamed EM in chunks of {spec['chunk_size']} images; k-means++ initialisation on a class-balanced "
             f"subset of {len(init_idx)} training images",)
    if args.mode != "full":
        extra += (f"quick: {len(ytr)} training images, {spec['max_iter']} EM iterations, {len(yte)} test images",)
    return Result(status="measured", measured=measured, tolerance=None, summary=summary, dtype="float32",
                  data_source=source, extra_assumptions=extra)


def main(argv=None):
    import sys

    extra = argparse.ArgumentParser(add_help=False)
    extra.add_argument("--scheduler", default=None, metavar="ADDRESS",
                       help="run the E-steps on this Dask scheduler (pip install \"drmm-ref[scale]\")")
    known, rest = extra.parse_known_args(sys.argv[1:] if argv is None else argv)
    return run_claim(CLAIM, functools.partial(run, scheduler=known.scheduler), rest)


if __name__ == "__main__":
    import sys

    from ._claim import exit_code

    sys.exit(exit_code(main()))
