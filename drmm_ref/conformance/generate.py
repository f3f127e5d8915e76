"""Write the golden fixtures: ``python -m drmm_ref.conformance.generate [--out DIR] [--only GROUP ...]``.

Every case of :mod:`drmm_ref.conformance.cases` is computed by the reference adapter (public
``drmm_ref`` functions, float64) and written to one file per group, ``<group>.npz``, plus
``manifest.json`` (SHA-256 and case count of every file). Without ``--out`` the files go to the
package's ``fixtures/`` folder (what the installed package ships). Running it twice on the same code
and machine gives byte-identical ``.npz`` files (:mod:`drmm_ref.conformance.fixtures`); on another CPU
the computed arrays may differ in the last bits (other SIMD paths in the BLAS and in NumPy's ``exp``;
the expected outputs and the inputs that earlier operations computed), the cases never. ``--check``
regenerates into a temporary folder and compares with the shipped files (:func:`compare_fixtures`):
the same bytes, or the same cases with every float array within :data:`ROUNDING_RTOL` of its scale,
passes; anything else exits 1.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from .cases import GROUPS, build_group
from .fixtures import FORMAT_VERSION, file_sha256, fixture_dir, read_fixture, write_fixture, write_manifest

__all__ = ["generate", "check", "compare_fixtures", "main", "GENERATOR", "ROUNDING_RTOL"]

#: What the files record about their generator (no dates, hosts or versions of other packages:
#: the bytes must not depend on when or where they were written).
GENERATOR = {"command": "python -m drmm_ref.conformance.generate", "drmm_ref": __version__,
             "fixture_version": FORMAT_VERSION}


def _shared_keys(cases) -> dict[int, str]:
    """Readable names for arrays used by several cases (parameters, images): ``shared/<arg>.<field>[-i]``."""
    count: dict[int, int] = {}
    label: dict[int, str] = {}
    for c in cases:
        for arg, value in c.inputs.items():
            items = value.items() if isinstance(value, dict) else [(None, value)]
            for field, v in items:
                if isinstance(v, np.ndarray):
                    count[id(v)] = count.get(id(v), 0) + 1
                    label.setdefault(id(v), arg if field is None else f"{arg}.{field}")
    names: dict[int, str] = {}
    used: dict[str, int] = {}
    for key, n in count.items():
        if n > 1:
            base = f"shared/{label[key]}"
            i = used.get(base, 0)
            used[base] = i + 1
            names[key] = base if i == 0 else f"{base}-{i}"
    return names


def generate(out: str | Path | None = None, groups: list[str] | None = None, *, verbose: bool = True) -> list[Path]:
    """Write the fixture files of ``groups`` (default all) to ``out`` (default the package's) and the manifest."""
    folder = Path(out) if out is not None else fixture_dir()
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for group in groups or list(GROUPS):
        start = time.perf_counter()
        cases = build_group(group)
        path = write_fixture(folder / f"{group}.npz", group, cases, _shared_keys(cases), GENERATOR)
        written.append(path)
        if verbose:
            print(f"{path}: {len(cases)} cases, {path.stat().st_size / 1024:.0f} KiB, "
                  f"{time.perf_counter() - start:.1f} s")
    order = {f"{g}.npz": i for i, g in enumerate(GROUPS)}
    files = sorted(folder.glob("*.npz"), key=lambda f: (order.get(f.name, len(order)), f.name))
    write_manifest(folder, files, GENERATOR)
    return written


#: How far a regenerated expected output may be from the shipped one, relative to the largest magnitude of the
#: shipped array: the same code on another CPU takes other SIMD paths in the BLAS and in NumPy's ``exp`` (e.g. AVX2
#: against AVX-512 kernels), which differ in the last bits (measured: at most 8.3e-16 of that scale over the four
#: groups the tests regenerate); 1e-13 is far above that and far below the cases' own tolerance (rtol 1e-10).
ROUNDING_RTOL = 1e-13


def _gap(a: Any, b: Any) -> float:
    """The largest ``|a - b| / max|b|`` over the float arrays of two inputs or outputs (nested dicts allowed);
    NaN when they differ in anything else (keys, dtypes, shapes, integers, plain values)."""
    if isinstance(a, dict) or isinstance(b, dict):
        if not (isinstance(a, dict) and isinstance(b, dict) and a.keys() == b.keys()):
            return float("nan")
        return max((_gap(a[k], b[k]) for k in a), default=0.0)
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        if a.dtype != b.dtype or a.shape != b.shape:
            return float("nan")
        if a.dtype.kind != "f" or not a.size:
            return 0.0 if np.array_equal(a, b) else float("nan")
        scale, gap = float(np.max(np.abs(b))), float(np.max(np.abs(a - b)))
        return gap / scale if scale > 0 else (0.0 if gap == 0 else float("inf"))
    return 0.0 if a == b else float("nan")


def compare_fixtures(new: str | Path, shipped: str | Path, rtol: float = ROUNDING_RTOL) -> tuple[str, float]:
    """Compare a regenerated fixture file with the shipped one: ``("identical", 0.0)`` for the same bytes,
    ``("rounding", d)`` when the cases, their operations, arguments, tolerances and tags are the same and every
    float array (inputs: some are outputs of earlier operations; expected outputs) is within ``rtol`` of the
    shipped one (``d``: the largest ``|new - shipped| / max|shipped|``; everything else equal), else
    ``("differ: <first difference>", d)``."""
    if file_sha256(new) == file_sha256(shipped):
        return "identical", 0.0
    (_, a), (_, b) = read_fixture(new), read_fixture(shipped)
    if [c.name for c in a] != [c.name for c in b]:
        return "differ: the cases are not the same", float("nan")
    worst = 0.0
    for x, y in zip(a, b):
        if (x.op, x.tolerance, x.tags, x.zero_default) != (y.op, y.tolerance, y.tags, y.zero_default):
            return f"differ: {x.name}: operation, tolerance or tags", float("nan")
        for what, u, v in (("inputs", x.inputs, y.inputs), ("outputs", x.expected, y.expected)):
            d = _gap(u, v)
            if not d <= rtol:  # also NaN: another structure
                return f"differ: {x.name}: {what}" + (f" off by {d:.1e} of their scale (> {rtol:.0e})"
                                                       if d == d else ""), d
            worst = max(worst, d)
    return "rounding", worst


def check(groups: list[str] | None = None, folder: str | Path | None = None) -> dict[str, tuple[str, float]]:
    """Regenerate ``groups`` into a temporary folder and compare each file with ``folder``'s
    (:func:`compare_fixtures`): ``{file name: (verdict, largest scaled difference)}``; a file missing from
    ``folder`` is ``("differ: not shipped", nan)``."""
    folder = Path(folder) if folder is not None else fixture_dir()
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for path in generate(tmp, groups, verbose=False):
            shipped = folder / path.name
            out[path.name] = (compare_fixtures(path, shipped) if shipped.is_file()
                              else ("differ: not shipped", float("nan")))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m drmm_ref.conformance.generate",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="target folder (default: the package's fixtures/)")
    parser.add_argument("--only", nargs="+", metavar="GROUP", choices=sorted(GROUPS), help="write only these groups")
    parser.add_argument("--check", action="store_true",
                        help="regenerate into a temporary folder and compare with the shipped files (the same "
                             "bytes, or the same cases with every float array equal to rounding); exit 1 if not")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.check:
        found = check(args.only, args.out)
        for name, (verdict, d) in found.items():
            print(f"{name}: {verdict}" + (f" (largest difference {d:.1e} of the array's scale)"
                                          if verdict == "rounding" else ""))
        return 1 if any(v not in ("identical", "rounding") for v, _ in found.values()) else 0
    generate(args.out, args.only)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
