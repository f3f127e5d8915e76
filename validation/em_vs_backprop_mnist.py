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

A third row, ``drmm-exact``: **EM with an exact M-step** -- the DRMM's EM whose M-step is exact on RC at
fixed latents, i.e. the whole-set M-step (``TrainConfig(m_step="whole-set")``,
:mod:`drmm_ref.learning.whole_set`, docs/learning.md): each epoch the same mini-batch EG pass (G-steps), then an
E-step over the whole training set and, at those latents, the closed forms and one exact CGLS block step on RC
per block over the whole set. Decisions, with their reasons:

* ``k_CG = 5`` (not the default 10), for cost: one small2 MNIST epoch of it costs 1,125 CPU-s (G-steps ~63,
  M-step 1,062; results/runs/whole-set-em/README.md) against ~133 CPU-s for the G-step row. The damped
  mini-batch block steps (``--cg-blocks`` every block, k_CG 10) are dearer still here (20 small2 steps of 128
  images: 33.3 CPU-s against 2.95 for the G-step alone, 11x the G-step epoch), so the whole-set form is used.
* One thread per run (``--threads 1``; the runs share the development machine's 2 cores with other jobs): this
  row's verdict is read in **epochs and CPU seconds** (PASS_epochs, PASS_cpu_seconds); wall seconds are reported.
* Budget: its runs are listed for the same nets and seeds as the other rows (small2 seeds 0, 1, 2 and
  conv-small seed 0, 10 epochs), but only **small2 seed 0** is in the budget (10 epochs ~ 3.1 CPU-h): ``--full``
  trains that one when it has not finished and collects the others only when their logs have finished. The
  analysis uses whichever ``drmm-exact`` runs have finished logs and records how many of the planned ones:
  **this row does not cover the same seeds and nets as the other two** (cost).
* Its T is compared with the DCN's T on the same seeds (and the same threshold ``E* + 0.2`` of every DCN seed);
  the verdicts of the net-level keys and of ``passed`` stay the G-step row's. No special case: after one epoch
  of the exact M-step the DCN read-out was measured at chance (89.4%, results/runs/whole-set-em/README.md).

``measured["variants"][v]`` (v = ``drmm``, ``drmm-exact``) holds each row's T in seconds, epochs and CPU
seconds, the DCN's on the same seeds, PASS_epochs / PASS_cpu_seconds (``drmm``: PASS_seconds too), the final
and per-epoch test errors, its planned and finished runs; the curves (``measured["curves"]``) carry for the
``drmm-exact`` runs the whole-set M-step's RC before and after each block, per epoch.

``--full``: ``small2`` seeds 0, 1, 2 and ``conv-small`` seed 0, N = 10 epochs, all of MNIST (50k
train, 10k validation, 10k test), float32, NumPy. Runs are checkpointed under
``$DRMM_REF_RUNS`` (default ``~/.cache/drmm_ref/runs``)``/em-vs-backprop-mnist/<net>-<model>-seed<s>``
and resumed when the script is run again; a planned run is not trained again when its log has finished, in that
folder or in the committed archive ``results/runs/em-vs-backprop-mnist/<run>/log.json`` (same configuration
required: :func:`validation._claim.find_finished_log`); only the logs' curves are needed.
``python -m validation.em_vs_backprop_mnist --commands`` prints the runs' ``drmm-ref train`` commands (the eight
of the first two rows, then the ``drmm-exact`` ones, small2 seed 0 first; ``results/runs/em-vs-backprop-mnist/run.sh``
runs them). ``--quick``: ``small2``, one seed, 3 epochs on the first 640 training images, 300 validation / test
images, from the MNIST cache when present, otherwise the synthetic stand-in
(:func:`drmm_ref.learning.synthetic_digits`); the ``drmm-exact`` row there gets **one** epoch (k_CG 5, chunks of
128 images: ~10 CPU-s per epoch on 640 images, measured, so 3 epochs would add ~30 s to every CI run); it
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
        "third row drmm-exact (EM with an exact M-step: the whole-set M-step, one CGLS block step per block over the "
        "whole set, k_CG 5, one thread): verdict in epochs and CPU seconds against the DCN on the same seeds; only "
        "small2 seed 0 is in its budget, so it covers fewer seeds and nets than the other rows (cost)",
    ),
)

MODELS = ("dcn", "drmm")  # the two rows of the claim's verdict
EXACT = "drmm-exact"  # the third row: EM with an exact M-step (measured beside the verdict)
EXACT_K_CG = 5
EXACT_THREADS = 1
FULL = {"runs": [("small2", 0), ("small2", 1), ("small2", 2), ("conv-small", 0)], "epochs": 10, "n_train": None,
        "n_eval": None, "exact_runs": [("small2", 0), ("small2", 1), ("small2", 2), ("conv-small", 0)],
        "exact_budget": [("small2", 0)], "exact_epochs": 10, "exact_chunk": 500}
QUICK = {"runs": [("small2", None)], "epochs": 3, "n_train": 640, "n_eval": 300, "exact_runs": [("small2", None)],
         "exact_budget": [("small2", None)], "exact_epochs": 1, "exact_chunk": 128}
MARGIN = 0.002  # 0.2 points, as a fraction
EXACT_LABEL = "DRMM, EM with exact M-step (whole-set CGLS, k_CG 5)"


def runs_root() -> Path:
    """Where --full runs keep their checkpoints (outside the repository)."""
    return _claim.runs_root(CLAIM.id)


def run_name(net: str, model: str, seed: int) -> str:
    """The folder of one run: ``<net>-<model>-seed<s>`` (model ``dcn``, ``drmm`` or ``drmm-exact``)."""
    return f"{net}-{model}-seed{seed}"


def full_config(model: str, net: str, seed: int) -> TrainConfig:
    """The configuration of one --full run (what the run's ``drmm-ref train`` command of :func:`full_commands`
    builds); ``model`` is ``dcn``, ``drmm`` or ``drmm-exact``."""
    if model == EXACT:
        return TrainConfig(model="drmm", net=net, epochs=FULL["exact_epochs"], seed=seed, m_step="whole-set",
                           k_cg=EXACT_K_CG, chunk_size=FULL["exact_chunk"])
    if model not in MODELS:
        raise ValueError(f"model must be one of {MODELS + (EXACT,)}, got {model!r}")
    return TrainConfig(model=model, net=net, epochs=FULL["epochs"], seed=seed)


def full_commands() -> list[str]:
    """The --full run's training commands: the eight of the G-step and DCN rows (``drmm-ref train`` with its
    defaults), then the ``drmm-exact`` row's (small2 seed 0, the one in the budget, first)."""
    old = [f"drmm-ref train --model {model} --net {net} --epochs {FULL['epochs']} --seed {seed} "
           f"--out {runs_root() / run_name(net, model, seed)} --offline"
           for net, seed in FULL["runs"] for model in MODELS]
    exact = [f"drmm-ref train --model drmm --net {net} --epochs {FULL['exact_epochs']} --seed {seed} "
             f"--m-step whole-set --k-cg {EXACT_K_CG} --threads {EXACT_THREADS} "
             f"--out {runs_root() / run_name(net, EXACT, seed)} --offline"
             for net, seed in FULL["exact_runs"]]
    return old + exact


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


def _whole_set(rec: dict | None) -> dict | None:
    """The whole-set M-step's RC of one epoch record (None for other epochs): before, after each block, after."""
    if not rec:
        return None
    return {"rc_e_step": rec.get("rc_e_step"), "rc_m_step": rec.get("rc_m_step"),
            "rc_after_block": {b["block"]: b.get("rc_after") for b in rec.get("blocks", [])},
            "seconds": rec.get("seconds"), "cpu_seconds": rec.get("cpu_seconds")}


def _curve(log: dict) -> dict:
    eps = log["epochs"]
    out = {"epoch": [e["epoch"] for e in eps], "train_seconds": [e["cumulative_train_seconds"] for e in eps],
           "train_cpu_seconds": [e.get("cumulative_train_cpu_seconds") for e in eps],
           "test_error": [e["test_error"] for e in eps], "validation_error": [e["validation_error"] for e in eps],
           "mean_rc_after_e": [e.get("mean_rc_after_e") for e in eps],
           "mean_rc_after_m": [e.get("mean_rc_after_m") for e in eps],
           "e_step_raised_rc": [e.get("monitor", {}).get("e_step_raised_rc") if e.get("monitor") else None
                                for e in eps]}
    if any(e.get("whole_set") for e in eps):  # m_step="whole-set": RC at the E-step's latents, per block
        out["whole_set"] = [_whole_set(e.get("whole_set")) for e in eps]
    return out


def analyse(curves: dict[str, dict[int, dict[str, dict]]]) -> dict:
    """E*, T (seconds, epochs) and the verdicts of the G-step row from the curves ``curves[net][seed][model]``
    (every seed has ``dcn`` and ``drmm``; other models, e.g. ``drmm-exact``, are left to :func:`analyse_variants`)."""
    out = {}
    for net, by_seed in curves.items():
        seeds = sorted(by_seed)
        for s in seeds:
            missing = [m for m in MODELS if m not in by_seed[s]]
            if missing:
                raise ValueError(f"curves[{net!r}][{s!r}] lacks {missing}: E* and the verdict need both rows")
        e_star = statistics.mean(by_seed[s]["dcn"]["test_error"][-1] for s in seeds)
        thr = e_star + MARGIN
        per = {}
        for model in MODELS:
            reach = [_first_reach(by_seed[s][model], thr) for s in seeds]
            per[model] = {"T_seconds": _median([r[0] for r in reach]), "T_epochs": _median([r[1] for r in reach]),
                          "T_cpu_seconds": _median([r[2] for r in reach]),
                          "T_seconds_per_seed": [r[0] for r in reach], "T_epochs_per_seed": [r[1] for r in reach],
                          "final_test_error_mean": statistics.mean(by_seed[s][model]["test_error"][-1] for s in seeds),
                          "seconds_per_epoch_mean": statistics.mean(
                              by_seed[s][model]["train_seconds"][-1] / max(by_seed[s][model]["epoch"][-1], 1)
                              for s in seeds)}

        def verdict(key):
            return _half(per["drmm"][key], per["dcn"][key])

        out[net] = {"seeds": seeds, "E_star": e_star, "threshold": thr, "dcn": per["dcn"], "drmm": per["drmm"],
                    "eg_over_backprop_seconds_per_epoch": per["drmm"]["seconds_per_epoch_mean"]
                    / per["dcn"]["seconds_per_epoch_mean"],
                    "PASS_seconds": verdict("T_seconds"), "PASS_epochs": verdict("T_epochs"),
                    "PASS_cpu_seconds": verdict("T_cpu_seconds")}
    return out


def _half(t_model, t_dcn) -> bool:
    """``T_model <= 0.5 T_DCN`` ("never" reaching the threshold fails; a DCN that never reaches it passes nothing)."""
    return t_model is not None and t_dcn is not None and t_model <= 0.5 * t_dcn


def _mean_per_epoch(values: list[list]) -> list:
    n = min(len(v) for v in values)
    return [None if any(v[i] is None for v in values) else statistics.mean(v[i] for v in values) for i in range(n)]


def analyse_variants(curves: dict[str, dict[int, dict[str, dict]]],
                     planned: dict[str, dict[str, list[int]]] | None = None) -> dict:
    """Each row against the DCN: ``out[variant]`` for ``drmm`` (the G-step row) and ``drmm-exact``.

    Parameters
    ----------
    curves : dict
        ``curves[net][seed][model]`` as for :func:`analyse`; ``drmm-exact`` may be on some seeds only.
    planned : dict, optional
        ``planned[variant][net]`` = the planned seeds (default: the seeds that have the variant's curve).

    Returns
    -------
    dict
        Per variant: ``per_net[net]`` with ``seeds`` (those with a curve), ``planned_seeds``, T in seconds,
        epochs and CPU seconds (median over its seeds; None = "never"), the DCN's T on the same seeds,
        ``PASS_epochs`` and ``PASS_cpu_seconds`` (``drmm``: ``PASS_seconds`` too), final and per-epoch test
        errors (mean over its seeds); ``runs_planned``, ``runs_finished``, ``nets_measured``, and the
        verdicts over the measured nets (None when no net is measured).
    """
    base = analyse(curves)
    out = {}
    for variant in ("drmm", EXACT):
        per_net = {}
        for net, by_seed in curves.items():
            seeds = sorted(s for s in by_seed if variant in by_seed[s])
            plan = sorted((planned or {}).get(variant, {}).get(net, seeds))
            if not seeds and not plan:
                continue
            entry = {"seeds": seeds, "planned_seeds": plan, "threshold": base[net]["threshold"]}
            if seeds:
                thr = base[net]["threshold"]
                reach = [_first_reach(by_seed[s][variant], thr) for s in seeds]
                dcn = [_first_reach(by_seed[s]["dcn"], thr) for s in seeds]
                runs = [by_seed[s][variant] for s in seeds]
                entry.update({
                    "T_seconds": _median([r[0] for r in reach]), "T_epochs": _median([r[1] for r in reach]),
                    "T_cpu_seconds": _median([r[2] for r in reach]),
                    "T_seconds_per_seed": [r[0] for r in reach], "T_epochs_per_seed": [r[1] for r in reach],
                    "T_cpu_seconds_per_seed": [r[2] for r in reach],
                    "dcn_T_seconds": _median([r[0] for r in dcn]), "dcn_T_epochs": _median([r[1] for r in dcn]),
                    "dcn_T_cpu_seconds": _median([r[2] for r in dcn]),
                    "PASS_epochs": _half(_median([r[1] for r in reach]), _median([r[1] for r in dcn])),
                    "PASS_cpu_seconds": _half(_median([r[2] for r in reach]), _median([r[2] for r in dcn])),
                    "final_test_error_mean": statistics.mean(c["test_error"][-1] for c in runs),
                    "final_test_error_per_seed": [c["test_error"][-1] for c in runs],
                    "test_error_per_epoch_mean": _mean_per_epoch([c["test_error"] for c in runs]),
                    "cpu_seconds_per_epoch_mean": _per_epoch(runs, "train_cpu_seconds"),
                    "seconds_per_epoch_mean": _per_epoch(runs, "train_seconds")})
                if variant == "drmm":
                    entry["PASS_seconds"] = _half(entry["T_seconds"], entry["dcn_T_seconds"])
                if all("whole_set" in c for c in runs):
                    entry["rc_e_step_per_epoch_mean"] = _mean_per_epoch(
                        [[w and w["rc_e_step"] for w in c["whole_set"]] for c in runs])
                    entry["rc_m_step_per_epoch_mean"] = _mean_per_epoch(
                        [[w and w["rc_m_step"] for w in c["whole_set"]] for c in runs])
            per_net[net] = entry
        measured = [net for net, e in per_net.items() if e["seeds"]]
        block = {"per_net": per_net, "nets_measured": measured,
                 "runs_planned": sum(len(e["planned_seeds"]) for e in per_net.values()),
                 "runs_finished": sum(len(e["seeds"]) for e in per_net.values())}
        keys = ("PASS_seconds", "PASS_epochs", "PASS_cpu_seconds") if variant == "drmm" else \
            ("PASS_epochs", "PASS_cpu_seconds")
        for key in keys:
            block[key] = all(per_net[net][key] for net in measured) if measured else None
        out[variant] = block
    return out


def _per_epoch(runs: list[dict], key: str) -> float | None:
    vals = [c[key][-1] / max(c["epoch"][-1], 1) for c in runs if c.get(key) and c[key][-1] is not None]
    return statistics.mean(vals) if len(vals) == len(runs) else None


def _plan(spec: dict, base_seed: int) -> list[tuple[str, int, str, bool]]:
    """The runs of ``spec``: (net, seed, model, in the budget)."""
    rows = [(net, base_seed + (seed or 0), model, True) for net, seed in spec["runs"] for model in MODELS]
    budget = {(net, base_seed + (seed or 0)) for net, seed in spec["exact_budget"]}
    rows += [(net, base_seed + (seed or 0), EXACT, (net, base_seed + (seed or 0)) in budget)
             for net, seed in spec["exact_runs"]]
    return rows


def _quick_config(model: str, net: str, seed: int, is_mnist: bool) -> TrainConfig:
    kw = dict(net=net, seed=seed, n_train=QUICK["n_train"], n_eval=QUICK["n_eval"], monitor_size=128,
              data="mnist" if is_mnist else "synthetic")
    if model == EXACT:
        return TrainConfig(model="drmm", epochs=QUICK["exact_epochs"], m_step="whole-set", k_cg=EXACT_K_CG,
                           chunk_size=QUICK["exact_chunk"], **kw)
    return TrainConfig(model=model, epochs=QUICK["epochs"], **kw)


def run(args) -> Result:
    if args.backend != "numpy":
        raise ValueError("em-vs-backprop-mnist times NumPy training; run it with --backend numpy")
    full = args.mode == "full"
    spec = FULL if full else QUICK
    loaded: dict = {}

    def data():  # --full: MNIST is loaded only when a run has to be trained
        if "data" not in loaded:
            if full:
                from drmm_ref.data import load_mnist

                loaded["data"], loaded["is_mnist"] = load_mnist(progress=True), True
            else:
                loaded["data"], loaded["is_mnist"] = mnist_or_synthetic(spec["n_train"], spec["n_eval"],
                                                                        seed=args.seed)
        return loaded["data"]

    tmp = None
    if full:
        root = runs_root()
    else:
        tmp = tempfile.TemporaryDirectory(prefix="em-vs-backprop-quick-")
        root = Path(tmp.name)
    curves: dict = {}
    sources: dict = {}
    planned: dict = {}
    sources_of_data = set()
    try:
        for net, seed, model, in_budget in _plan(spec, args.seed):
            name = run_name(net, model, seed)
            curves.setdefault(net, {})
            if model == EXACT:
                planned.setdefault(EXACT, {}).setdefault(net, []).append(seed)
            found = None
            if full:
                cfg = full_config(model, net, seed)
                found = _claim.find_finished_log(CLAIM.id, name, cfg)
            else:
                data()
                cfg = _quick_config(model, net, seed, loaded["is_mnist"])
            if found is not None:
                log, sources[name] = found
            elif in_budget:
                threads = EXACT_THREADS if model == EXACT else None
                log = train(cfg, data(), root / name, progress=full, threads=threads).log
                sources[name] = "trained by this run (or resumed)" if full else "trained (temporary folder)"
            else:
                sources[name] = "not finished: outside this row's budget, collected when its log has finished"
                continue
            sources_of_data.add(log.get("data_source", "unknown"))
            curves[net].setdefault(seed, {})[model] = _curve(log)
    finally:
        if tmp is not None:
            tmp.cleanup()
    verdicts = analyse(curves)
    variants = analyse_variants(curves, planned)
    pass_s = all(v["PASS_seconds"] for v in verdicts.values())
    pass_e = all(v["PASS_epochs"] for v in verdicts.values())
    status = ("pass" if pass_s else "fail") if full else "measured"
    ex = variants[EXACT]
    measured = {"per_net": verdicts, "PASS_seconds": pass_s, "PASS_epochs": pass_e, "variants": variants,
                "curves": {net: {str(s): c for s, c in by.items()} for net, by in curves.items()},
                "runs": sources,
                "protocol": {"epochs": spec["epochs"], "n_train": spec["n_train"] or 50000,
                             "n_eval": spec["n_eval"] or 10000, "batch_size": 128, "optimizer": "adam lr 1e-3",
                             "eg_m_step": "G-step alone (one Adam step on CE + RC + 0.5 NN); no CGLS block steps",
                             "exact_m_step": f"{EXACT}: {EXACT_LABEL}: each epoch the mini-batch G-step pass, then an "
                             "E-step over the whole training set and at its latents the closed forms and one exact "
                             f"CGLS block step on RC per block over the whole set; k_CG {EXACT_K_CG}, chunks of "
                             f"{spec['exact_chunk']} images, {EXACT_THREADS} thread; {spec['exact_epochs']} epoch(s)",
                             "exact_coverage": f"{ex['runs_finished']} of {ex['runs_planned']} planned {EXACT} runs "
                             f"finished (nets {ex['nets_measured']}); only "
                             f"{', '.join(f'{n} seed {args.seed + (s or 0)}' for n, s in spec['exact_budget'])} "
                             "is in this row's budget: it does not cover the same seeds and nets as the other rows "
                             "(cost)" if full else f"{ex['runs_finished']} of {ex['runs_planned']} planned {EXACT} "
                             "runs (quick: the same seed and net as the other rows, fewer epochs)",
                             "runs_folder": "$DRMM_REF_RUNS/em-vs-backprop-mnist (default ~/.cache/drmm_ref/runs)"
                             if full else "temporary",
                             "archive": "results/runs/em-vs-backprop-mnist/<run>/log.json" if full else None}}
    parts = []
    for net, v in verdicts.items():
        parts.append(f"{net}: E*={100 * v['E_star']:.2f}%, T_DRMM/T_DCN = "
                     f"{_fmt(v['drmm']['T_seconds'])}/{_fmt(v['dcn']['T_seconds'])} s, "
                     f"{_fmt(v['drmm']['T_epochs'])}/{_fmt(v['dcn']['T_epochs'])} epochs, "
                     f"EG/backprop s/epoch {v['eg_over_backprop_seconds_per_epoch']:.2f}, "
                     f"CPU-s T {_fmt(v['drmm']['T_cpu_seconds'])}/{_fmt(v['dcn']['T_cpu_seconds'])}")
    for net, e in ex["per_net"].items():
        if not e["seeds"]:
            parts.append(f"{EXACT} {net}: none of {len(e['planned_seeds'])} planned run(s) finished")
            continue
        parts.append(f"{EXACT} {net} ({len(e['seeds'])} of {len(e['planned_seeds'])} planned seeds): T "
                     f"{_fmt(e['T_epochs'])}/{_fmt(e['dcn_T_epochs'])} epochs, CPU-s "
                     f"{_fmt(e['T_cpu_seconds'])}/{_fmt(e['dcn_T_cpu_seconds'])}, final test error "
                     f"{100 * e['final_test_error_mean']:.1f}%")
    is_mnist = loaded.get("is_mnist", True)
    on = "" if is_mnist else "synthetic stand-in, not MNIST: "  # quick runs without the MNIST cache
    summary = on + "; ".join(parts) + (f"; PASS_seconds={pass_s}, PASS_epochs={pass_e}" if full
                                  else f"; reduced run, no verdict (would read PASS_seconds={pass_s})")
    if loaded:
        source = loaded["data"].source if is_mnist else loaded["data"].source + " (MNIST cache absent)"
    else:
        source = "; ".join(sorted(sources_of_data))
    extra = () if full else (
        f"quick: {spec['epochs']} epochs ({EXACT}: {spec['exact_epochs']}) on {spec['n_train']} training images, "
        f"{spec['n_eval']} validation/test images, one seed: too small for a verdict",)
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
