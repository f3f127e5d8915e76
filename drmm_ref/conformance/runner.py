"""The conformance runner: every fixture case through an adapter, compared, failures diagnosed.

``python -m drmm_ref.conformance --adapter module:object [--only PATTERN ...] [--json report.json]``

For each case the adapter's method is called with the case's inputs (NumPy arrays) and every
expected output is compared: floating outputs pass when ``max|actual - expected| <= atol + rtol *
max|expected|`` (the case's tolerance; the report gives the max absolute error and the relative
error ``max|actual - expected| / max|expected|``), integer and bool outputs must be equal. A case is
PASS, FAIL, ERROR (the method raised) or SKIP (the adapter has no such method). A FAIL is then
tested against every slip of :mod:`drmm_ref.conformance.slips`: the slips whose predicted outputs
the adapter matches are named, with how to fix them; failing that, a constant factor between the
outputs and ours is reported when one fits. The exit status is 1 when a case fails or errors.
"""

from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import importlib
import math
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

from .fixtures import Case, load_cases
from .spec import OPERATIONS, AdapterSpec, flatten_outputs

__all__ = ["CaseResult", "OutputError", "compare", "run_case", "run_cases", "load_adapter", "main", "select"]

#: A slip "matches" when the adapter agrees with its prediction to this many times the case tolerance.
SLIP_SLACK = 100.0


@dataclasses.dataclass
class OutputError:
    """The comparison of one output."""

    name: str
    ok: bool
    max_abs: float | None = None
    rel: float | None = None
    mismatches: int | None = None
    size: int | None = None
    message: str = ""


@dataclasses.dataclass
class CaseResult:
    """The outcome of one case."""

    name: str
    op: str
    status: str  # PASS, FAIL, ERROR, SKIP
    max_abs: float | None = None
    rel: float | None = None
    tolerance: dict[str, float] | None = None
    outputs: list[OutputError] = dataclasses.field(default_factory=list)
    diagnosis: list[dict[str, str]] = dataclasses.field(default_factory=list)
    message: str = ""
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["outputs"] = [dataclasses.asdict(o) for o in self.outputs]
        return d


def _as_array(a: Any) -> np.ndarray:
    if hasattr(a, "detach"):  # a framework tensor slipped through: accept it
        a = a.detach().cpu().numpy()
    return np.asarray(a)


def _compare_one(name: str, actual: np.ndarray, expected: np.ndarray, tol: dict[str, float]) -> OutputError:
    if actual.shape != expected.shape:
        if actual.size == expected.size and tuple(d for d in actual.shape if d != 1) == tuple(
                d for d in expected.shape if d != 1):
            actual = actual.reshape(expected.shape)
        else:
            return OutputError(name, False, message=f"shape {actual.shape}, expected {expected.shape}")
    if expected.dtype.kind in "biu":
        if actual.dtype.kind == "f":
            if not np.all(np.isfinite(actual)) or np.any(actual != np.round(actual)):
                return OutputError(name, False, message=f"non-integer values where {expected.dtype} is expected")
        bad = int(np.sum(actual.astype(expected.dtype) != expected))
        return OutputError(name, bad == 0, mismatches=bad, size=int(expected.size),
                           message="" if bad == 0 else f"{bad} of {expected.size} entries differ")
    if actual.dtype.kind not in "fiub":
        return OutputError(name, False, message=f"dtype {actual.dtype} is not numeric")
    actual = actual.astype(np.float64)
    if not np.all(np.isfinite(actual)) and not np.array_equal(np.isfinite(actual), np.isfinite(expected)):
        return OutputError(name, False, message="NaN or inf where the reference is finite")
    finite = np.isfinite(expected)
    if not np.array_equal(actual[~finite], expected[~finite]):
        return OutputError(name, False, message="infinite entries differ")
    diff = np.abs(actual[finite] - expected[finite])
    err = float(diff.max()) if diff.size else 0.0
    scale = float(np.abs(expected[finite]).max()) if diff.size else 0.0
    rel = err / scale if scale > 0 else (0.0 if err == 0 else math.inf)
    ok = err <= tol.get("atol", 0.0) + tol.get("rtol", 0.0) * scale
    return OutputError(name, bool(ok), max_abs=err, rel=rel, size=int(expected.size))


def compare(case: Case, actual: dict[str, Any], tol: dict[str, float] | None = None,
            expected: dict[str, np.ndarray] | None = None) -> list[OutputError]:
    """Compare flattened ``actual`` outputs with ``expected`` (default: the case's) output by output."""
    tol = tol or case.tolerance
    expected = case.expected if expected is None else expected
    results = []
    zero_ok = lambda k: any(k.startswith(p) for p in case.zero_default)  # noqa: E731
    overall = max((float(np.abs(v).max()) for v in expected.values() if v.dtype.kind == "f" and v.size), default=1.0)
    for name, exp in expected.items():
        if name in actual:
            results.append(_compare_one(name, _as_array(actual[name]), exp, tol))
        elif zero_ok(name):
            results.append(_compare_one(name, np.zeros_like(exp), exp, tol))
        else:
            results.append(OutputError(name, False, message="missing from the adapter's outputs"))
    for name, a in actual.items():
        if name not in expected and zero_ok(name):
            a = _as_array(a)
            if a.dtype.kind == "f" and a.size:
                err = float(np.abs(a).max())
                ok = err <= tol.get("atol", 0.0) + tol.get("rtol", 0.0) * overall
                results.append(OutputError(name, ok, max_abs=err, rel=err / overall, size=int(a.size),
                                           message="" if ok else "the reference has zero here (entry omitted)"))
    return results


def _summary(outputs: list[OutputError]) -> tuple[float | None, float | None]:
    errs = [o.max_abs for o in outputs if o.max_abs is not None]
    rels = [o.rel for o in outputs if o.rel is not None]
    return (max(errs) if errs else None), (max(rels) if rels else None)


def _is_missing(adapter: Any, op: str) -> bool:
    method = getattr(adapter, op, None)
    if method is None or not callable(method):
        return True
    spec = getattr(AdapterSpec, op, None)
    return spec is not None and getattr(type(adapter), op, None) is spec


def _scale_fit(actual: dict[str, Any], expected: dict[str, np.ndarray]) -> float | None:
    """The constant c with actual = c * expected over every floating output, when one fits to 1e-6."""
    a_parts, e_parts = [], []
    for name, e in expected.items():
        if e.dtype.kind == "f" and name in actual:
            a = _as_array(actual[name]).astype(np.float64)
            if a.shape != e.shape or not np.all(np.isfinite(a)) or not np.all(np.isfinite(e)):
                return None
            a_parts.append(a.ravel())
            e_parts.append(e.ravel())
    if not e_parts:
        return None
    a, e = np.concatenate(a_parts), np.concatenate(e_parts)
    ee = float(e @ e)
    if ee == 0:
        return None
    c = float(a @ e) / ee
    if np.max(np.abs(a - c * e)) <= 1e-6 * np.max(np.abs(c * e)) and not math.isclose(c, 1.0, rel_tol=1e-6):
        return c
    return None


def diagnose(case: Case, actual: dict[str, Any]) -> list[dict[str, str]]:
    """The slips whose predictions the failing ``actual`` outputs match (or a fitted constant factor)."""
    from .slips import hypotheses

    loose = {k: v * SLIP_SLACK for k, v in case.tolerance.items()}
    found, seen = [], set()
    for slip, predicted in hypotheses(case):
        if slip.name in seen:
            continue
        outs = compare(case, actual, loose, expected=predicted)
        if outs and all(o.ok for o in outs):
            # a slip whose prediction equals the reference itself says nothing
            same = all(o.ok for o in compare(case, {k: v for k, v in predicted.items()}, case.tolerance))
            if not same:
                found.append({"slip": slip.name, "hint": slip.hint})
                seen.add(slip.name)
    if not found:
        c = _scale_fit(actual, case.expected)
        if c is not None:
            found.append({"slip": "constant-factor",
                          "hint": f"every floating output is {c:.6g} times the reference (a sum/mean or scale "
                                  "convention: see docs/porting.md, 'Scale factors')"})
    return found


def run_case(adapter: Any, case: Case, *, diagnose_failures: bool = True) -> CaseResult:
    """Run one case through ``adapter``."""
    if _is_missing(adapter, case.op):
        return CaseResult(case.name, case.op, "SKIP", tolerance=case.tolerance, message=f"adapter has no {case.op}")
    start = time.perf_counter()
    inputs = {k: (v.copy() if isinstance(v, np.ndarray) else
                  {kk: (vv.copy() if isinstance(vv, np.ndarray) else vv) for kk, vv in v.items()}
                  if isinstance(v, dict) else v) for k, v in case.inputs.items()}
    try:
        actual = flatten_outputs(getattr(adapter, case.op)(**inputs))
    except Exception as exc:
        tb = traceback.format_exception(type(exc), exc, exc.__traceback__)
        return CaseResult(case.name, case.op, "ERROR", tolerance=case.tolerance,
                          message=f"{type(exc).__name__}: {exc}\n" + "".join(tb[-3:]),
                          seconds=time.perf_counter() - start)
    outputs = compare(case, actual)
    max_abs, rel = _summary(outputs)
    status = "PASS" if all(o.ok for o in outputs) else "FAIL"
    result = CaseResult(case.name, case.op, status, max_abs, rel, case.tolerance, outputs,
                        seconds=time.perf_counter() - start)
    if status == "FAIL":
        bad = [o for o in outputs if not o.ok]
        result.message = "; ".join(f"{o.name}: " + (o.message or f"max abs {o.max_abs:.3g}, rel {o.rel:.3g}")
                                   for o in bad[:4]) + (f"; ... {len(bad) - 4} more" if len(bad) > 4 else "")
        if diagnose_failures:
            result.diagnosis = diagnose(case, actual)
    return result


def select(cases: list[Case], patterns: list[str] | None) -> list[Case]:
    """Cases whose name or operation matches a pattern (fnmatch; a plain word matches as a prefix or an op name)."""
    if not patterns:
        return cases
    out = []
    for c in cases:
        for p in patterns:
            if (fnmatch.fnmatchcase(c.name, p) or fnmatch.fnmatchcase(c.op, p) or c.name.startswith(p)
                    or c.group == p or p in c.tags):
                out.append(c)
                break
    return out


def run_cases(adapter: Any, cases: list[Case] | None = None, *, only: list[str] | None = None,
              progress: Any = None) -> list[CaseResult]:
    """Run ``cases`` (default: every shipped case), filtered by ``only``; ``progress(result)`` after each."""
    cases = load_cases() if cases is None else cases
    results = []
    for case in select(cases, only):
        r = run_case(adapter, case)
        results.append(r)
        if progress is not None:
            progress(r)
    return results


def load_adapter(spec: str) -> Any:
    """``module:object`` -> the object (a class is instantiated without arguments)."""
    if ":" not in spec:
        raise ValueError("--adapter must look like module:object (e.g. drmm_ref.conformance.reference:ADAPTER), "
                         f"got {spec!r}")
    module, _, attr = spec.partition(":")
    obj = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj() if isinstance(obj, type) else obj


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.2e}"


def _line(r: CaseResult) -> str:
    tol = "" if r.tolerance is None else f"rtol {r.tolerance.get('rtol', 0):.0e}"
    head = f"{r.status:<5} {r.name:<48} max abs {_fmt(r.max_abs):>9}  rel {_fmt(r.rel):>9}  {tol}"
    lines = [head]
    if r.status in ("FAIL", "ERROR") and r.message:
        lines.append("      " + r.message.strip().splitlines()[0])
    for d in r.diagnosis:
        lines.append(f"      likely slip: {d['slip']} -- {d['hint']}")
    return "\n".join(lines)


def _json_clean(x: Any) -> Any:
    """JSON-ready copy: non-finite floats become None, NumPy scalars plain numbers."""
    if isinstance(x, dict):
        return {str(k): _json_clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_clean(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m drmm_ref.conformance",
        description="Check a port of the DRMM against drmm_ref's golden fixtures (docs/porting.md).")
    parser.add_argument("--adapter", required=False, default=None,
                        help="module:object of the adapter (e.g. drmm_ref.conformance.reference:ADAPTER, "
                             "torch_drmm.adapter:ADAPTER)")
    parser.add_argument("--only", nargs="+", metavar="PATTERN",
                        help="case names, name prefixes, operations, groups or tags (fnmatch patterns allowed)")
    parser.add_argument("--fixtures", type=Path, default=None, help="fixture folder (default: the shipped fixtures)")
    parser.add_argument("--json", type=Path, default=None, help="write the report as JSON to this file")
    parser.add_argument("--list", action="store_true", help="list the cases (and the operations) and exit")
    parser.add_argument("--quiet", action="store_true", help="print only failures and the summary")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    cases = select(load_cases(args.fixtures), args.only)
    if args.list:
        for c in cases:
            print(f"{c.name:<50} {c.op:<22} {' '.join(c.tags)}")
        print(f"{len(cases)} cases; operations: {', '.join(op.name for op in OPERATIONS)}")
        return 0
    if args.adapter is None:
        parser.error("--adapter is required (or --list)")
    adapter = load_adapter(args.adapter)
    name = getattr(adapter, "name", args.adapter)
    print(f"conformance of {name} ({args.adapter}) on {len(cases)} cases")

    def show(r: CaseResult):
        if not args.quiet or r.status in ("FAIL", "ERROR"):
            print(_line(r), flush=True)

    start = time.perf_counter()
    results = run_cases(adapter, cases, progress=show)
    counts = {s: sum(r.status == s for r in results) for s in ("PASS", "FAIL", "ERROR", "SKIP")}
    worst = max((r.rel for r in results if r.status == "PASS" and r.rel is not None), default=None)
    print(f"{counts['PASS']} passed, {counts['FAIL']} failed, {counts['ERROR']} errors, {counts['SKIP']} skipped "
          f"(worst relative error of a pass {_fmt(worst)}; {time.perf_counter() - start:.1f} s)")
    if counts["PASS"] + counts["FAIL"] + counts["ERROR"] == 0:
        print("note: no case ran (the adapter has none of the operations selected)")
    if args.json is not None:
        from .._files import atomic_write_json

        payload = {"adapter": args.adapter, "name": name, "counts": counts,
                   "results": [r.to_dict() for r in results]}
        atomic_write_json(args.json, _json_clean(payload))
    return 1 if counts["FAIL"] or counts["ERROR"] else 0
