"""Figure: semi-supervised MNIST at a many-epoch budget, test error against epochs (SPEC §5; ``ssl-mnist-converged``).

One panel per network of the record (conv-small, conv-small-ladder): every run's test error after each epoch,
one colour per row (labels-only DCN, DRMM CE + RC + NN + H, and the informational relu-topdown run), a thin line
per seed, the informational 50-epoch run dashed; the epoch each run's validation error selects is marked with a
ring (the result itself is the last epoch: nothing is selected on test); the paper's 0.57% at 100 labels and
the claim's 1.0% line dashed. From ``results/full/ssl-mnist-converged.json`` when it exists, else
``results/quick/`` (``--record`` picks a file; ``--quick`` runs the quick claim first when there is no record).
Writes ``fig_ssl_converged.png`` and ``.pdf`` to ``figures/out/`` (``--out``).

Usage: ``python figures/fig_ssl_converged.py [--record PATH] [--out DIR] [--quick]``
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import record_figure_main, save  # noqa: E402

CLAIM_ID = "ssl-mnist-converged"
STYLE = {"dcn": ("tab:blue", "DCN, labels only (backprop)"),
         "drmm-ce-rc-nn-h": ("tab:red", "DRMM, EG: CE + RC + NN + H (penalty)"),
         "drmm-relu-topdown": ("tab:green", "DRMM, EG: CE + RC + H, ReLU top-down (NIPS form)")}


def _style(r: dict, budget: int | None) -> tuple[str, str, str]:
    """Colour, legend label and line style of a run; a run at another number of epochs than the protocol's (the long
    extra) is drawn dashed in a darker shade, its epochs in the label."""
    colour, label = STYLE.get(r["row"], ("tab:gray", r["row"]))
    planned = r.get("planned_epochs", budget)
    if budget is None or planned == budget:
        return colour, label, "-"
    return {"tab:red": "darkred"}.get(colour, colour), f"{label}, {planned} epochs", "--"


def plot(record: dict, out: Path) -> list[Path]:
    m = record["measured"]
    runs = [r for r in m["runs"] if r.get("n_labels", 100) == 100]  # the other label counts: fig_ssl.py
    nets = list(dict.fromkeys(r["net"] for r in runs)) or ["(no runs)"]
    fig, axes = plt.subplots(1, len(nets), figsize=(5.2 * len(nets), 4.0), squeeze=False)
    budget = m.get("protocol", {}).get("epochs")
    for ax, net in zip(axes[0], nets):
        labelled = set()
        for r in (r for r in runs if r["net"] == net):
            colour, label, ls = _style(r, budget)
            errors = [100 * e for e in r["test_error_per_epoch"]]
            epochs = list(range(1, len(errors) + 1))
            ax.plot(epochs, errors, color=colour, lw=1.2, alpha=0.85, ls=ls,
                    label=None if label in labelled else label)
            labelled.add(label)
            sel = r["selected_epoch"]
            ax.plot([sel], [100 * r["selected_test_error"]], "o", mfc="none", mec=colour, ms=7)
        ax.axhline(100 * m.get("paper_error_100", 0.0057), color="k", ls="--", lw=1, label="paper: 0.57%")
        ax.axhline(100 * m.get("pass_error", 0.01), color="gray", ls=":", lw=1, label="claim's line: 1.0%")
        ax.set_yscale("log")
        ax.get_yaxis().set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        if budget:  # the whole budget (the longest planned run's): an unfinished run's curve stops short
            longest = max([budget] + [r.get("planned_epochs", budget) for r in runs if r["net"] == net])
            ax.set_xlim(0.5, longest + 0.5)
        ax.set_xlabel("epoch")
        ax.set_ylabel("test error (%)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="lower left", framealpha=0.7)
        ax.set_title(f"{net}, N_L = 100 (rings: validation-selected epoch)", fontsize=9)
    proto = m.get("protocol", {})
    verdict = {"pass": "PASS", "fail": "FAIL"}.get(record.get("status"), str(record.get("status", "?")).upper())
    fig.suptitle(f"Semi-supervised MNIST, {proto.get('epochs', '?')} epochs, {proto.get('lr_schedule', '?')} "
                 f"({record.get('mode', '?')} run; {verdict})", fontsize=10)
    fig.tight_layout()
    return save(fig, out, "fig_ssl_converged")


def main(argv=None) -> int:
    return record_figure_main(CLAIM_ID, plot, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
