"""What the figure scripts share: finding a claim's record, saving PNG + PDF, the record-plot command line."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import tempfile
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "figures" / "out"


def find_record(claim_id: str, record: Path | None, quick: bool) -> dict:
    """``record`` if given; else ``results/full/<id>.json``, then ``results/quick/<id>.json``; else, with
    ``quick``, the quick claim run into a temporary folder."""
    if record is not None:
        return json.loads(Path(record).read_text())
    for mode in ("full", "quick"):
        path = ROOT / "results" / mode / f"{claim_id}.json"
        if path.is_file():
            return json.loads(path.read_text())
    if not quick:
        raise SystemExit(f"no {claim_id} record in results/full or results/quick; run "
                         f"`python -m validation --only {claim_id}` first, or pass --quick")
    sys.path.insert(0, str(ROOT))
    module = importlib.import_module("validation." + claim_id.replace("-", "_"))
    with tempfile.TemporaryDirectory() as tmp:
        return module.main(["--quick", "--out", tmp])


def save(fig, out: Path, name: str, **savefig_kwargs) -> list[Path]:
    """Write ``<out>/<name>.png`` (150 dpi) and ``.pdf``, close the figure, return the paths."""
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.png", out / f"{name}.pdf"]
    for p in paths:
        fig.savefig(p, dpi=150, **savefig_kwargs)
    plt.close(fig)
    return paths


def record_figure_main(claim_id: str, plot: Callable[[dict, Path], list[Path]], doc: str, argv=None) -> int:
    """``--record PATH --out DIR --quick``: plot a claim's record (see :func:`find_record`)."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--record", type=Path, default=None, help=f"{claim_id}.json to plot")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default figures/out)")
    parser.add_argument("--quick", action="store_true", help="run the quick claim first if no record exists")
    args = parser.parse_args(argv)
    for p in plot(find_record(claim_id, args.record, args.quick), args.out):
        print(p)
    return 0
