"""Figure: EG-trained DRMM vs backprop-trained DCN on MNIST (Patel et al. 2016, Fig. 2, middle and right).

Test error against epochs and against cumulative training seconds, one row per network, from the
record of the claim ``em-vs-backprop-mnist`` (``results/full/`` when it exists, else
``results/quick/``; ``--record`` picks a file; with ``--quick`` and no record the quick claim is run
first into a temporary folder). The dashed line is ``E* + 0.2`` points, the level whose first
crossing defines T. Records with the third row ``drmm-exact`` (EM with an exact M-step: the whole-set CGLS
M-step, docs/learning.md) get its curves too, in green; its epochs cost ~10x the others', so the time panels
then have a logarithmic time axis. Writes ``fig_em_vs_backprop.png`` and ``.pdf`` to ``figures/out/`` (``--out``).

Usage: ``python figures/fig_em_vs_backprop.py [--record PATH] [--out DIR] [--quick]``
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator  # noqa: E402
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import record_figure_main, save  # noqa: E402

CLAIM_ID = "em-vs-backprop-mnist"
COLOURS = {"dcn": "tab:blue", "drmm": "tab:red", "drmm-exact": "tab:green"}
LABELS = {"dcn": "DCN (backprop, CE)", "drmm": "DRMM (EG: CE + RC + NN)",
          "drmm-exact": "DRMM, EM with exact M-step (whole-set CGLS, k_CG 5)"}
SHORT = {"dcn": "DCN", "drmm": "EG", "drmm-exact": "exact M-step"}


def plot(record: dict, out: Path) -> list[Path]:
    curves = record["measured"]["curves"]
    per_net = record["measured"]["per_net"]
    nets = list(curves)
    fig, axes = plt.subplots(len(nets), 2, figsize=(10, 3.6 * len(nets)), squeeze=False)
    handles = {}
    for row, net in enumerate(nets):
        thr = 100 * per_net[net]["threshold"]
        exact = any("drmm-exact" in by_model for by_model in curves[net].values())
        counts = {m: sum(m in by_model for by_model in curves[net].values()) for m in LABELS}
        seeds = ", ".join(f"{SHORT[m]} {counts[m]}" for m in LABELS if counts[m])
        for col, xkey in enumerate(("epoch", "train_seconds")):
            ax = axes[row, col]
            log_x = exact and xkey == "train_seconds"  # the exact M-step's epochs are ~10x longer
            for model in LABELS:
                runs = [curves[net][s][model] for s in curves[net] if model in curves[net][s]]
                if not runs:
                    continue
                first = 1 if log_x else 0  # epoch 0 sits at 0 s: off a logarithmic axis
                for c in runs:
                    ax.plot(c[xkey][first:], 100 * np.asarray(c["test_error"][first:]), color=COLOURS[model], lw=0.8,
                            alpha=0.35, marker="o", ms=2.5, label=None)
                n = min(len(c["epoch"]) for c in runs)
                x = np.mean([c[xkey][:n] for c in runs], axis=0)
                y = 100 * np.mean([c["test_error"][:n] for c in runs], axis=0)
                handles[model], = ax.plot(x[first:], y[first:], color=COLOURS[model], lw=2, marker="o", ms=4)
            handles["thr"] = ax.axhline(thr, color="k", ls="--", lw=1)
            ax.set_yscale("log")  # the first epoch drops from ~90% to ~2%: a log axis keeps the end visible
            ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
            if log_x:
                ax.set_xscale("log")
                ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
                ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
            ax.set_xlabel("epoch" if xkey == "epoch" else
                          "training seconds (steps only" + (", log scale)" if log_x else ")"))
            ax.set_ylabel("test error (%)")
            ax.set_title(f"{net}: test error vs {'epochs' if xkey == 'epoch' else 'time'} (seeds: {seeds})",
                         fontsize=10)
            ax.grid(True, alpha=0.3)
    mode = record.get("mode", "?")
    title = (f"EG vs backprop on MNIST ({mode} run; {record['measured']['protocol']['n_train']} training images; "
             f"PASS_seconds={record['measured']['PASS_seconds']}, PASS_epochs={record['measured']['PASS_epochs']})")
    ex = record["measured"].get("variants", {}).get("drmm-exact")
    if ex and ex["runs_finished"]:
        title += (f"\nEM with exact M-step: {ex['runs_finished']} of {ex['runs_planned']} planned runs; "
                  f"PASS_epochs={ex['PASS_epochs']}, PASS_cpu_seconds={ex['PASS_cpu_seconds']}")
    fig.suptitle(title, fontsize=10)
    names = [m for m in LABELS if m in handles]
    fig.legend([handles[m] for m in names] + [handles["thr"]],
               [f"{LABELS[m]} (thin: one seed, thick: mean)" for m in names] + ["E* + 0.2 points"],
               loc="lower center", ncol=2, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.1 / len(nets) + 0.02, 1, 1))
    return save(fig, out, "fig_em_vs_backprop")


def main(argv=None) -> int:
    return record_figure_main(CLAIM_ID, plot, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
