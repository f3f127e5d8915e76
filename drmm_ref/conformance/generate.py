"""Write the golden fixtures: ``python -m drmm_ref.conformance.generate [--out DIR] [--only GROUP ...]``.

Every case of :mod:`drmm_ref.conformance.cases` is computed by the reference adapter (public
``drmm_ref`` functions, float64) and written to one file per group, ``<group>.npz``, plus
``manifest.json`` (SHA-256 and case count of every file). Without ``--out`` the files go to the
package's ``fixtures/`` folder (what the installed package ships). Running it twice on the same code
gives byte-identical ``.npz`` files (:mod:`drmm_ref.conformance.fixtures`); ``--check`` regenerates
into a temporary folder and exits 1 if any file differs from the shipped one (after an exact rewrite of
the internals, differences are expected only at rounding level: then run the reference adapter
through the runner, ``python -m drmm_ref.conformance``, which compares to the tolerances).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from .. import __version__
from .cases import GROUPS, build_group
from .fixtures import FORMAT_VERSION, file_sha256, fixture_dir, write_fixture, write_manifest

__all__ = ["generate", "main", "GENERATOR"]

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


def check(groups: list[str] | None = None, folder: str | Path | None = None) -> list[str]:
    """Regenerate ``groups`` into a temporary folder; the names of files whose bytes differ from ``folder``'s."""
    folder = Path(folder) if folder is not None else fixture_dir()
    differ = []
    with tempfile.TemporaryDirectory() as tmp:
        for path in generate(tmp, groups, verbose=False):
            shipped = folder / path.name
            if not shipped.is_file() or file_sha256(shipped) != file_sha256(path):
                differ.append(path.name)
    return differ


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m drmm_ref.conformance.generate",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="target folder (default: the package's fixtures/)")
    parser.add_argument("--only", nargs="+", metavar="GROUP", choices=sorted(GROUPS), help="write only these groups")
    parser.add_argument("--check", action="store_true",
                        help="regenerate into a temporary folder and compare bytes with the shipped files")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.check:
        differ = check(args.only, args.out)
        print("identical" if not differ else "differ: " + ", ".join(differ))
        return 1 if differ else 0
    generate(args.out, args.only)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
