"""Claim ``em-vs-backprop-mnist`` (SPEC §3; Patel et al. 2016, §3 and Fig. 2): EG vs backprop on supervised MNIST.

The paper: a DRMM trained by (generalised) EM reaches the test accuracy of the same DCN trained by
backprop while training 2-3x faster. We measure it (replication claim; both outcomes are results).

Protocol (docs/learning.md). The same network, initialisation, optimiser (Adam, lr 1e-3), batch size (128),
batch order and epoch budget N (fixed in advance) for both models:

* ``dcn``: backprop on the cross-entropy alone;
* ``drmm``: EG -- per mini-batch an E-step (bottom-up latents, rendering of the label) and a G-step
  (one Adam step on CE + RC + 0.5 NN); closed-form priors per epoch. **The timed EG run's M-step is
  the G-step alone** (no CGLS block steps); RC after the M-step is traced but its rendering is
  timed apart and excluded.

``E*`` = the DCN's final test error (mean over seeds). ``T`` = the first training second and the
first epoch at which a model's test error is <= ``E* + 0.2`` points (median over seeds; "training
second" = cumulative seconds of the training steps, evaluation excluded). PASS_seconds if
``T_DRMM <= 0.5 T_DCN`` on every net, PASS_epochs likewise in epochs; ``passed`` = PASS_seconds.
The same is reported in process CPU seconds (PASS_cpu_seconds, not the verdict): on a shared machine
other jobs inflate wall-clock time unevenly between runs made one after the other.

``--full``: ``small2`` seeds 0, 1, 2 and ``conv-small`` seed 0, N = 10 epochs, all of MNIST (50k
train, 10k validation, 10k test), float32, NumPy. Runs are checkpointed under
``$DRMM_REF_RUNS`` (default ``~/.cache/drmm_ref/runs``)``/em-vs-backprop-mnist/<net>-<model>-seed<s>``
and resumed when the script is run again; ``python -m validation.em_vs_backprop_mnist --commands`` prints
their ``drmm-ref train`` commands (``results/runs/em-vs-backprop-mnist/run.sh`` runs them). ``--quick``:
``small2``, one seed, 3 epochs on the first 640 training images, 300 validation / test images, from the
MNIST cache when present, otherwise the synthetic stand-in (:func:`drmm_ref.learning.synthetic_digits`); it
records ``measured`` only.
"""

from __future__ import annotations

import math
import statistics
import tempfile
from pathlib import Path

from drmm_ref.learning import TrainConfig, mnist_or_synthetic, train

from . import _claim
from ._claim import Claim, Result, run_claim

CLAIM = Claim(
    id="em-vs-backprop-mnist",
    kind="replication",
    paper_ref="Patel, Nguyen & Baraniuk 2016, §3 and Fig. 2 (middle, right); SPEC §3",
    statement="On supervised MNIST, a DRMM trained by EG reaches the DCN's (backprop) test error E* + 0.2 points "
    "in at most half the training time of the DCN (PASS_seconds; PASS_epochs likewise in epochs).",
    assumptions=(
        "same network, initialisation (init_params(net, seed)), optimiser (Adam lr 1e-3), batch size 128 and batch "
        "order for both models",
        "EG objective CE + RC + 0.5 NN (a_H = 0, supervised); the timed EG M-step is the G-step alone (no CGLS)",
        "T uses cumulative training-step seconds (evaluation and trace-only renderings excluded)",
        "E* = mean over seeds of the DCN's final test error; T = median over seeds",
    ),
)

FULL = {"runs": [("small2", 0), ("small2", 1), ("small2", 2), ("conv-small", 0)], "epochs": 10, "n_train": None,
        "n_eval": None}
QUICK = {"runs": [("small2", None)], "epochs": 3, "n_train": 640, "n_eval": 300}
MARGIN = 0.002  # 0.2 points, as a fraction


def runs_root() -> Path:
    """Where --full runs keep their checkpoints (outside the repository)."""
    return _claim.runs_root(CLAIM.id)


def full_config(model: str, net: str, seed: int) -> TrainConfig:
    """The configuration of one --full run (also what `drmm-ref train` uses with its defaults)."""
    return TrainConfig(model=model, net=net, epochs=FULL["epochs"], seed=seed)


def full_commands() -> list[str]:
    """The --full run's training commands (``drmm-ref train`` with its defaults makes :func:`full_config`)."""
    return [f"drmm-ref train --model {model} --net {net} --epochs {FULL['epochs']} --seed {seed} "
            f"--out {runs_root() / f'{net}-{model}-seed{seed}'} --offline"
            for net, seed in FULL["runs"] for model in ("dcn", "drmm")]


def _first_reach(curve: dict, threshold: float) -> tuple[float | None, int | None, float | None]:
    cpu = curve.get("train_cpu_seconds") or [None] * len(curve["epoch"])
    for epoch, sec, c, err in zip(curve["epoch"], curve["train_seconds"], cpu, curve["test_error"]):
        if err <= threshold:
            return sec, epoch, c
    return None, None, None


def _median(values):
    vals = [math.inf if v is None else v for v in values]
    m = statistics.median(vals)
    return None if math.isinf(m) else m


def _curve(log: dict) -> dict:
    eps = log["epochs"]
    return {"epoch": [e["epoch"] for e in eps], "train_seconds": [e["cumulative_train_seconds"] for e in eps],
            "train_cpu_seconds": [e.get("cumulative_train_cpu_seconds") for e in eps],
            "test_error": [e["test_error"] for e in eps], "validation_error": [e["validation_error"] for e in eps],
            "mean_rc_after_e": [e.get("mean_rc_after_e") for e in eps],
            "mean_rc_after_m": [e.get("mean_rc_after_m") for e in eps],
            "e_step_raised_rc": [e.get("monitor", {}).get("e_step_raised_rc") if e.get("monitor") else None
                                 for e in eps]}


def analyse(curves: dict[str, dict[int, dict[str, dict]]]) -> dict:
    """E*, T (seconds, epochs) and the verdicts from the curves ``curves[net][seed][model]``."""
    out = {}
    for net, by_seed in curves.items():
        seeds = sorted(by_seed)
        e_star = statistics.mean(by_seed[s]["dcn"]["test_error"][-1] for s in seeds)
        thr = e_star + MARGIN
        per = {}
        for model in ("dcn", "drmm"):
            reach = [_first_reach(by_seed[s][model], thr) for s in seeds]
            per[model] = {"T_seconds": _median([r[0] for r in reach]), "T_epochs": _median([r[1] for r in reach]),
                          "T_cpu_seconds": _median([r[2] for r in reach]),
                          "T_seconds_per_seed": [r[0] for r in reach], "T_epochs_per_seed": [r[1] for r in reach],
                          "final_test_error_mean": statistics.mean(by_seed[s][model]["test_error"][-1] for s in seeds),
                          "seconds_per_epoch_mean": statistics.mean(
                              by_seed[s][model]["train_seconds"][-1] / max(by_seed[s][model]["epoch"][-1], 1)
                              for s in seeds)}

        def verdict(key):
            d, b = per["drmm"][key], per["dcn"][key]
            if d is None:
                return False
            return b is not None and d <= 0.5 * b

        out[net] = {"seeds": seeds, "E_star": e_star, "threshold": thr, "dcn": per["dcn"], "drmm": per["drmm"],
                    "eg_over_backprop_seconds_per_epoch": per["drmm"]["seconds_per_epoch_mean"]
                    / per["dcn"]["seconds_per_epoch_mean"],
                    "PASS_seconds": verdict("T_seconds"), "PASS_epochs": verdict("T_epochs"),
                    "PASS_cpu_seconds": verdict("T_cpu_seconds")}
    return out


def run(args) -> Result:
    if args.backend != "numpy":
        raise ValueError("em-vs-backprop-mnist times NumPy training; run it with --backend numpy")
    spec = FULL if args.mode == "full" else QUICK
    if args.mode == "full":
        from drmm_ref.data import load_mnist

        data, is_mnist = load_mnist(progress=True), True
    else:
        data, is_mnist = mnist_or_synthetic(spec["n_train"], spec["n_eval"], seed=args.seed)
    tmp = None
    if args.mode == "full":
        root = runs_root()
    else:
        tmp = tempfile.TemporaryDirectory(prefix="em-vs-backprop-quick-")
        root = Path(tmp.name)
    curves: dict = {}
    try:
        for net, seed in spec["runs"]:
            seed = args.seed + (seed or 0)
            for model in ("dcn", "drmm"):
                if args.mode == "full":
                    cfg = full_config(model, net, seed)
                else:
                    cfg = TrainConfig(model=model, net=net, epochs=spec["epochs"], seed=seed, n_train=spec["n_train"],
                                      n_eval=spec["n_eval"], monitor_size=128,
                                      data="mnist" if is_mnist else "synthetic")
                res = train(cfg, data, root / f"{net}-{model}-seed{seed}", progress=args.mode == "full")
                curves.setdefault(net, {}).setdefault(seed, {})[model] = _curve(res.log)
    finally:
        if tmp is not None:
            tmp.cleanup()
    verdicts = analyse(curves)
    pass_s = all(v["PASS_seconds"] for v in verdicts.values())
    pass_e = all(v["PASS_epochs"] for v in verdicts.values())
    status = ("pass" if pass_s else "fail") if args.mode == "full" else "measured"
    measured = {"per_net": verdicts, "PASS_seconds": pass_s, "PASS_epochs": pass_e,
                "curves": {net: {str(s): c for s, c in by.items()} for net, by in curves.items()},
                "protocol": {"epochs": spec["epochs"], "n_train": spec["n_train"] or 50000,
                             "n_eval": spec["n_eval"] or 10000, "batch_size": 128, "optimizer": "adam lr 1e-3",
                             "eg_m_step": "G-step alone (one Adam step on CE + RC + 0.5 NN); no CGLS block steps",
                             "runs_folder": str(root) if args.mode == "full" else "temporary"}}
    parts = []
    for net, v in verdicts.items():
        parts.append(f"{net}: E*={100 * v['E_star']:.2f}%, T_DRMM/T_DCN = "
                     f"{_fmt(v['drmm']['T_seconds'])}/{_fmt(v['dcn']['T_seconds'])} s, "
                     f"{_fmt(v['drmm']['T_epochs'])}/{_fmt(v['dcn']['T_epochs'])} epochs, "
                     f"EG/backprop s/epoch {v['eg_over_backprop_seconds_per_epoch']:.2f}, "
                     f"CPU-s T {_fmt(v['drmm']['T_cpu_seconds'])}/{_fmt(v['dcn']['T_cpu_seconds'])}")
    on = "" if is_mnist else "synthetic stand-in, not MNIST: "  # quick runs without the MNIST cache
    summary = on + "; ".join(parts) + (f"; PASS_seconds={pass_s}, PASS_epochs={pass_e}" if args.mode == "full"
                                  else f"; reduced run, no verdict (would read PASS_seconds={pass_s})")
    source = data.source if is_mnist else data.source + " (MNIST cache absent)"
    extra = () if args.mode == "full" else (
        f"quick: {spec['epochs']} epochs on {spec['n_train']} training images, {spec['n_eval']} validation/test "
        "images, one seed: too small for a verdict",)
    return Result(status=status, measured=measured, tolerance={"margin_points": 100 * MARGIN, "speedup_needed": 2.0},
                  summary=summary, dtype="float32", data_source=source, extra_assumptions=extra)


def _fmt(v):
    return "never" if v is None else (f"{v:.1f}" if isinstance(v, float) else str(v))


def main(argv=None):
    return run_claim(CLAIM, run, argv)


if __name__ == "__main__":
    import sys

    from ._claim import exit_code

    if sys.argv[1:] == ["--commands"]:
        print("\n".join(full_commands()))
        sys.exit(0)

    sys.exit(exit_code(main()))
