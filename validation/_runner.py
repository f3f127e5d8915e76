"""``python -m validation``: run every claim script, write the records, print the table.

Exit status 1 when an identity claim fails or a claim script raises; a replication ``fail`` is
reported in the table and the JSON but does not change the exit status (README, "Set-up: two commands").
Exit status 2, with nothing run and nothing written, when the command line cannot be served: an
unknown claim id, or a backend that cannot be used here (``--backend cupy`` without CuPy or a CUDA
device) -- otherwise every claim would be recorded as failed and the records of the last good run
overwritten.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from . import _claim, _report
from ._provenance import git_state
from ._report import load_records

REQUIRED_FIELDS = ("id", "kind", "status", "passed", "paper_ref", "statement", "assumptions", "measured",
                   "tolerance", "backend", "dtype", "seed", "seconds", "data_source", "command")


def discover() -> list[Any]:
    """Every claim module of the package (names not starting with ``_``), sorted by claim id."""
    import validation

    modules = []
    for info in pkgutil.iter_modules(validation.__path__):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"validation.{info.name}")
        if hasattr(mod, "CLAIM") and hasattr(mod, "main"):
            modules.append(mod)
    order = {"identity": 0, "replication": 1}
    return sorted(modules, key=lambda m: (order[m.CLAIM.kind], m.CLAIM.id))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m validation",
        description="Run the claim scripts of drmm_ref (one per claim of Patel et al. 2016, see SPEC.md) and "
        "print a table of their measured values. Identity claims (derivations) must pass; replication claims "
        "(paper numbers) are measured, and get a verdict only in --full runs.",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", dest="mode", action="store_const", const="quick",
                      help="reduced runs, < 5 min on 2 cores, never download (default); records in results/quick/")
    mode.add_argument("--full", dest="mode", action="store_const", const="full",
                      help="the verdict runs; records in results/full/ (commit them)")
    parser.set_defaults(mode="quick")
    parser.add_argument("--only", nargs="+", metavar="ID", help="run only these claim ids")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default results/<mode>/)")
    parser.add_argument("--seed", type=int, default=0, help="base random seed passed to every claim (default 0)")
    parser.add_argument("--backend", default="numpy", choices=("numpy", "array_api_strict", "cupy"),
                        help="array namespace (default numpy)")
    parser.add_argument("--list", action="store_true", help="list the claims and exit")
    parser.add_argument("--update-readme", action="store_true",
                        help="after running, rewrite the claims table in README.md from results/full and results/quick")
    return parser


def _error_record(mod: Any, args: argparse.Namespace, seconds: float, exc: BaseException) -> dict[str, Any]:
    claim = mod.CLAIM
    return {
        "id": claim.id, "kind": claim.kind, "status": "fail", "passed": False, "paper_ref": claim.paper_ref,
        "statement": claim.statement, "assumptions": list(claim.assumptions), "measured": {},
        "summary": f"script raised {type(exc).__name__}: {exc}", "tolerance": None, "backend": args.backend,
        "dtype": None, "seed": args.seed, "mode": args.mode, "seconds": round(seconds, 3), "data_source": None,
        "command": f"python -m validation --only {claim.id} --{args.mode}",
        "error": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))[-4000:],
        **git_state(),
    }


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    modules = discover()
    if args.list:
        for mod in modules:
            print(f"{mod.CLAIM.id:28s} {mod.CLAIM.kind:12s} {mod.CLAIM.paper_ref}")
        return 0
    if args.only:
        known = {m.CLAIM.id: m for m in modules}
        unknown = [i for i in args.only if i not in known]
        if unknown:
            print(f"error: --only names unknown claim id(s) {unknown}; known: {sorted(known)}", file=sys.stderr)
            return 2
        modules = [known[i] for i in args.only]
    from drmm_ref.backend import backend_problem

    problem = backend_problem(args.backend)  # before any claim runs or any record is written
    if problem is not None:
        print(f"error: --backend {args.backend}: {problem}; no claim was run and no record was written",
              file=sys.stderr)
        return 2
    out = args.out if args.out is not None else _claim.DEFAULT_OUT[args.mode]
    if out.exists() and not out.is_dir():
        print(f"error: --out {out} is a file, not a folder", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    failed_identity, raised = [], []
    total_start = time.perf_counter()
    for mod in modules:
        claim = mod.CLAIM
        print(f"[{claim.kind}] {claim.id} ...", flush=True)
        start = time.perf_counter()
        sub = [f"--{args.mode}", "--out", str(out), "--seed", str(args.seed), "--backend", args.backend]
        try:
            record = mod.main(sub)
            missing = [f for f in REQUIRED_FIELDS if f not in record]
            if missing:
                raise RuntimeError(f"record of {claim.id} lacks fields {missing}")
        except Exception as exc:  # a raising script is reported and makes the run fail
            record = _error_record(mod, args, time.perf_counter() - start, exc)
            _claim.write_json_atomic(out / f"{claim.id}.json", record)
            raised.append(claim.id)
            print(record["error"], file=sys.stderr)
        print(f"    {record['status'].upper():9s} {record['seconds']:8.2f} s  {record.get('summary', '')}", flush=True)
        if record["kind"] == "identity" and record["status"] == "fail" and claim.id not in raised:
            failed_identity.append(claim.id)
    records = load_records(out)
    summary = {
        "mode": args.mode, "out": str(out), "seconds_this_run": round(time.perf_counter() - total_start, 2),
        "ran": [m.CLAIM.id for m in modules], "failed_identity": failed_identity, "raised": raised,
        "records": records,
    }
    _claim.write_json_atomic(out / "validation.json", summary)
    table = _report.markdown_table(records, title=f"drmm_ref claims ({args.mode} run, {out})")
    _claim.write_text_atomic(out / "validation.md", table)
    print()
    print(table)
    print(f"ran {len(modules)} claim(s) in {summary['seconds_this_run']:.1f} s")
    if args.update_readme:
        _report.update_readme()
    if failed_identity or raised:
        print(f"FAILED identity claims: {failed_identity}; scripts that raised: {raised}", file=sys.stderr)
        return 1
    return 0
