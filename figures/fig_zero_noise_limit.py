"""Figure: the zero-noise limit of RMM inference (SPEC §1, claim R2 ``rmm-zero-noise-limit``).

Two panels over ``sigma / sigma_0`` in {4, 2, 1, ..., 1/64}, energies fixed at ``sigma_0``:

(a) class agreement between sum-product (``S_c = sigma^2 lse(E / sigma^2)``) and max-sum
    (``E*_c = max E``), the fraction of examples whose max-sum margin exceeds the bound
    ``sigma^2 ln(2 M |G|)`` (where agreement is guaranteed), and the accuracy of both against the true class;
(b) the gap ``S_c - E*_c`` in units of ``sigma^2`` (largest and smallest over examples and classes)
    against the theorem's band ``[0, ln(2 M |G|)]``.

The data come from the claim's JSON record: ``--record PATH``, else ``results/full/`` (with ``--full``)
or ``results/quick/``; when no record exists the claim is rerun in its quick mode (seconds). Writes
``fig_zero_noise_limit.png`` and ``.pdf``.

Usage::

    python figures/fig_zero_noise_limit.py --quick
    python figures/fig_zero_noise_limit.py --full --out figures/out
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from _common import save  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = Path(__file__).resolve().parent / "out"
CLAIM_ID = "rmm-zero-noise-limit"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", dest="mode", action="store_const", const="quick",
                      help="use the quick record (rerun the quick claim if there is none); the default")
    mode.add_argument("--full", dest="mode", action="store_const", const="full",
                      help="prefer the committed results/full record")
    parser.set_defaults(mode="quick")
    parser.add_argument("--record", type=Path, default=None, help="a rmm-zero-noise-limit JSON record to plot")
    parser.add_argument("--rerun", action="store_true", help="rerun the quick claim instead of reading a record")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default figures/out)")
    return parser


def load_record(args) -> dict:
    """The claim record to plot (see the module docstring for the order of preference)."""
    if args.record is not None:
        return json.loads(Path(args.record).read_text(encoding="utf-8"))
    if not args.rerun:
        order = ["full", "quick"] if args.mode == "full" else ["quick"]
        for mode in order:
            path = REPO / "results" / mode / f"{CLAIM_ID}.json"
            if path.exists():
                rec = json.loads(path.read_text(encoding="utf-8"))
                if rec.get("measured", {}).get("curve"):
                    return rec
    from validation import rmm_zero_noise_limit

    with tempfile.TemporaryDirectory() as tmp:
        return rmm_zero_noise_limit.main(["--quick", "--out", tmp])


def plot(record: dict, out: Path) -> list[Path]:
    curve = record["measured"]["curve"]
    ratio = [c["sigma_over_sigma0"] for c in curve]
    log_size = record["measured"]["log_2M_G"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10.5, 4.0), constrained_layout=True)

    ax1.plot(ratio, [c["agreement"] for c in curve], "o-", color="C0", label="agreement: sum-product vs max-sum")
    ax1.plot(ratio, [c["fraction_meeting_margin"] for c in curve], "s--", color="C1",
             label=r"margin $> \sigma^2 \ln(2M|G|)$ (agreement guaranteed)")
    ax1.plot(ratio, [c["accuracy_sum_product"] for c in curve], "^:", color="C2", label="accuracy, sum-product")
    ax1.plot(ratio, [c["accuracy_max_sum"] for c in curve], "v:", color="C3", label="accuracy, max-sum")
    ax1.axvline(1.0, color="0.6", lw=0.8)
    ax1.text(1.0, 0.02, r" $\sigma_0$", color="0.4", transform=ax1.get_xaxis_transform())
    ax1.set_xscale("log", base=2)
    ax1.invert_xaxis()
    ax1.set_ylim(-0.02, 1.05)
    ax1.set_xlabel(r"$\sigma / \sigma_0$ (noise decreases to the right)")
    ax1.set_ylabel("fraction of examples")
    ax1.set_title("(a) class decisions")
    ax1.legend(loc="lower right", fontsize=8)
    ax1.grid(alpha=0.3)

    ax2.fill_between(ratio, 0, log_size, color="C0", alpha=0.12,
                     label=r"theorem: $0 \leq (S_c - E^*_c)/\sigma^2 \leq \ln(2M|G|)$")
    ax2.plot(ratio, [c["max_gap"] / c["sigma2"] for c in curve], "o-", color="C0", label="largest gap")
    ax2.plot(ratio, [c["min_gap"] / c["sigma2"] for c in curve], "s-", color="C4", label="smallest gap")
    ax2.axhline(log_size, color="C0", lw=0.8, ls="--")
    ax2.set_xscale("log", base=2)
    ax2.invert_xaxis()
    ax2.set_ylim(-0.05 * log_size, 1.15 * log_size)
    ax2.set_xlabel(r"$\sigma / \sigma_0$")
    ax2.set_ylabel(r"$(S_c - E^*_c) / \sigma^2$")
    ax2.set_title("(b) sum-product minus max-sum score")
    ax2.legend(loc="center right", fontsize=8)
    ax2.grid(alpha=0.3)

    status = record.get("status", "?").upper()
    fig.suptitle(f"RMM zero-noise limit (SPEC §1, R2): {record['measured']['examples']} examples, "
                 f"{record.get('mode', '?')} run, claim {status}", fontsize=10)
    return save(fig, out, "fig_zero_noise_limit")


def main(argv=None) -> list[Path]:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    paths = plot(load_record(args), args.out)
    for p in paths:
        print(p)
    return paths


if __name__ == "__main__":
    main()
