"""Figure: EG-trained DRMM vs backprop-trained DCN on MNIST (Patel et al. 2016, Fig. 2, middle and right).

Test error against epochs and against cumulative training seconds, one row per network, from the
record of the claim ``em-vs-backprop-mnist`` (``results/full/`` when it exists, else
``results/quick/``; ``--record`` picks a file; with ``--quick`` and no record the quick claim is run
first into a temporary folder). The dashed line is ``E* + 0.2`` points, the level whose first
crossing defines T. Writes ``fig_em_vs_backprop.png`` and ``.pdf`` to ``figures/out/`` (``--out``).

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
COLOURS = {"dcn": "tab:blue", "drmm": "tab:red"}
LABELS = {"dcn": "DCN (backprop, CE)", "drmm": "DRMM (EG: CE + RC + NN)"}


def plot(record: dict, out: Path) -> list[Path]:
    curves = record["measured"]["curves"]
    per_net = record["measured"]["per_net"]
    nets = list(curves)
    fig, axes = plt.subplots(len(nets), 2, figsize=(10, 3.6 * len(nets)), squeeze=False)
    for row, net in enumerate(nets):
        thr = 100 * per_net[net]["threshold"]
        for col, xkey in enumerate(("epoch", "train_seconds")):
            ax = axes[row, col]
            for model in ("dcn", "drmm"):
                runs = [curves[net][s][model] for s in curves[net]]
                for i, c in enumerate(runs):
                    ax.plot(c[xkey], 100 * np.asarray(c["test_error"]), color=COLOURS[model], lw=0.8, alpha=0.35,
                            marker="o", ms=2.5, label=None)
                n = min(len(c["epoch"]) for c in runs)
                x = np.mean([c[xkey][:n] for c in runs], axis=0)
                y = 100 * np.mean([c["test_error"][:n] for c in runs], axis=0)
                ax.plot(x, y, color=COLOURS[model], lw=2, marker="o", ms=4,
                        label=f"{LABELS[model]} (mean of {len(runs)} seed{'s' if len(runs) > 1 else ''})")
            ax.axhline(thr, color="k", ls="--", lw=1, label="E* + 0.2 points")
            ax.set_yscale("log")  # the first epoch drops from ~90% to ~2%: a log axis keeps the end visible
            ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
            ax.set_xlabel("epoch" if xkey == "epoch" else "training seconds (steps only)")
            ax.set_ylabel("test error (%)")
            ax.set_title(f"{net}: test error vs {'epochs' if xkey == 'epoch' else 'time'}")
            ax.grid(True, alpha=0.3)
            if row == 0 and col == 0:
                ax.legend(fontsize=8)
    mode = record.get("mode", "?")
    fig.suptitle(f"EG vs backprop on MNIST ({mode} run; {record['measured']['protocol']['n_train']} training images; "
                 f"PASS_seconds={record['measured']['PASS_seconds']}, PASS_epochs={record['measured']['PASS_epochs']})",
                 fontsize=10)
    fig.tight_layout()
    return save(fig, out, "fig_em_vs_backprop")


def main(argv=None) -> int:
    return record_figure_main(CLAIM_ID, plot, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
