"""Figure: semi-supervised MNIST, test error against the number of labels (SPEC §5; paper Table 1).

One line per row of the claim ``ssl-mnist`` (labels-only DCN, DRMM CE+RC, DRMM CE+RC+NN+H; any
further rows the record holds), mean test error over seeds with one standard deviation as error
bars and each seed as a dot, on a log x-axis of N_L; the paper's 0.57% at 100 labels as a star.
The title states the budget (network, epochs, seeds), since our runs are far shorter than the
paper's. When the record holds the longer-budget extra, a second panel plots those runs' test error
after every epoch (N_L = 100, one seed) against the paper's 0.57%. From ``results/full/ssl-mnist.json``
when it exists, else ``results/quick/`` (``--record``
picks a file; with ``--quick`` and no record the quick claim is run first into a temporary folder).
Writes ``fig_ssl.png`` and ``.pdf`` to ``figures/out/`` (``--out``).

``--claim ssl-mnist-converged`` draws the same table's shape from that claim's record at its many-epoch budget
(``measured["labels_table"]``: the DCN and the DRMM row on one net at N_L = 100 from the verdict runs, and at
600, 1,000 and 3,000 from its table runs) into ``fig_ssl_converged_table.png`` / ``.pdf``.

Usage: ``python figures/fig_ssl.py [--claim {ssl-mnist,ssl-mnist-converged}] [--record PATH] [--out DIR] [--quick]``
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import record_figure_main, save  # noqa: E402

CLAIM_ID = "ssl-mnist"
STYLE = {"dcn": ("tab:blue", "o", "DCN, labels only (backprop)"),
         "drmm-ce-rc": ("tab:orange", "s", "DRMM, EG: CE + RC"),
         "drmm-ce-rc-nn-h": ("tab:red", "D", "DRMM, EG: CE + RC + NN + H"),
         "pretrained-drmm-ce-rc-nn-h": ("tab:pink", "^", "DRMM, unsupervised epoch, then CE + RC + NN + H")}


def _plot_longer(ax, longer: list[dict], paper: float) -> None:
    for i, r in enumerate(longer):
        colour, marker, label = STYLE.get(r["row"], (f"C{i + 3}", "^", r["row"]))
        # the log's epoch 0 is the initial model (chance): the curve starts after the first epoch
        pairs = [(n, 100 * e) for n, e in zip(r["epoch_numbers"], r["test_error_per_epoch"]) if n >= 1]
        epochs, errs = [n for n, _ in pairs], [e for _, e in pairs]
        ax.plot(epochs, errs, color=colour, marker=marker, lw=1.5, label=label)
    ax.axhline(100 * paper, color="k", ls="--", lw=1, label="paper: 0.57%")
    ax.set_yscale("log")
    ax.get_yaxis().set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("test error (%)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    first = longer[0]
    ax.set_title(f"Longer budget: N_L = {first['n_labels']}, seed {first['seed']}, test error after each epoch",
                 fontsize=9)


def plot(record: dict, out: Path) -> list[Path]:
    m = record["measured"]
    converged = record.get("id") == "ssl-mnist-converged"
    table = m["labels_table"] if converged else m["table"]
    proto = m["protocol"]
    if converged:  # one net, the verdict's budget; seeds = the most any cell has
        proto = {"net": proto["table"]["net"], "epochs": proto["epochs"],
                 "seeds": range(max((v["n_seeds"] for rows in table.values() for v in rows.values()), default=0))}
    if not table:
        raise SystemExit("the record holds no label-count table (no finished runs of the table's net)")
    rows = list(dict.fromkeys(r for n_l in table for r in table[n_l]))
    longer = [] if converged else (m.get("longer_budget") or [])
    if longer:
        fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11.5, 4.4), gridspec_kw={"width_ratios": [1.25, 1]})
        _plot_longer(ax2, longer, m["paper_error_100"])
    else:
        fig, ax = plt.subplots(figsize=(6.4, 4.4))
    n_ls = sorted(int(n) for n in table)
    unfinished = False
    for i, row in enumerate(rows):
        colour, marker, label = STYLE.get(row, (f"C{i + 3}", "^", row))
        xs = [n for n in n_ls if row in table[str(n)]]
        if not xs:
            continue
        shift = 1.0 + 0.04 * (i - (len(rows) - 1) / 2)  # spread overlapping points apart on the log axis
        mean = [100 * table[str(n)][row]["mean"] for n in xs]
        std = [100 * table[str(n)][row]["std"] for n in xs]
        ax.errorbar([x * shift for x in xs], mean, yerr=std, color=colour, marker=marker, capsize=3, lw=1.5,
                    label=f"{label} (n={table[str(xs[0])][row]['n_seeds']})")
        for x, y in zip(xs, mean):
            ys = [100 * v for v in table[str(x)][row]["per_seed"]]
            ax.scatter([x * shift] * len(ys), ys, color=colour, s=10, alpha=0.45, zorder=3)
            if table[str(x)][row].get("n_unfinished"):  # an interim view: a run not at its last epoch yet
                ax.scatter([x * shift], [y], marker=marker, s=45, facecolor="white", edgecolor=colour, zorder=5)
                unfinished = True
    ax.scatter([100], [100 * m["paper_error_100"]], marker="*", s=160, color="k", zorder=4,
               label="paper: 0.57% (100 labels)")
    if unfinished:
        ax.scatter([], [], marker="o", s=45, facecolor="white", edgecolor="0.3",
                   label="hollow: a run still training (its last logged epoch)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(n_ls + ([100] if 100 not in n_ls else []))
    ax.set_xlim(min(n_ls + [100]) / 2, max(n_ls + [100]) * 2)
    ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.get_xaxis().set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.get_yaxis().set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_xlabel("number of labelled training images N_L")
    ax.set_ylabel("test error (%), last epoch")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    verdict = {"pass": "PASS", "fail": "FAIL"}.get(record.get("status"), record.get("status", "?").upper())
    budget = f"{proto['epochs']} epoch(s)" + (f", {proto_lr}" if (proto_lr := m["protocol"].get("lr_schedule")) else "")
    if converged:
        title = (f"Semi-supervised MNIST at a {budget} budget, {proto['net']}\n({record.get('mode', '?')} run, up to "
                 f"{len(proto['seeds'])} seed(s) a point; verdict at N_L = 100: {verdict})")
    else:
        title = (f"Semi-supervised MNIST ({record.get('mode', '?')} run: {proto['net']}, {budget}, "
                 f"{len(proto['seeds'])} seed(s); {verdict})")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return save(fig, out, "fig_ssl_converged_table" if converged else "fig_ssl")


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    claim = CLAIM_ID
    if "--claim" in argv:
        i = argv.index("--claim")
        if i + 1 >= len(argv) or argv[i + 1] not in (CLAIM_ID, "ssl-mnist-converged"):
            raise SystemExit("--claim must be ssl-mnist or ssl-mnist-converged")
        claim = argv[i + 1]
        del argv[i:i + 2]
    return record_figure_main(claim, plot, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
