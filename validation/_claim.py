"""What every claim script shares: its description, its command line, its record.

A claim script is a module of :mod:`validation` (name not starting with ``_``) with

* ``CLAIM``: a :class:`Claim` (id, kind, paper reference, statement, assumptions);
* ``run(args) -> Result``: the measurement itself, given the parsed command line;
* ``main(argv=None) -> dict``: ``return run_claim(CLAIM, run, argv)``, which parses the command
  line, times ``run``, builds the record, writes ``<out>/<id>.json`` atomically and returns the record.

The record has the fields STYLE.md ("Scripts, figures, packaging") asks for: ``id, kind, status, passed,
paper_ref, statement, assumptions, measured, tolerance, backend, dtype, seed, seconds, data_source,
command`` plus ``mode``, ``summary`` (one line for the table), ``versions``, ``host``, ``date`` and the
provenance ``git_commit`` / ``git_dirty`` (:mod:`validation._provenance`).

``kind`` is ``identity`` (a derivation that must hold: its ``fail`` is a bug and makes
``python -m validation`` exit 1) or ``replication`` (a paper number that is measured: its ``fail``
is an honest result). ``status`` is one of ``pass``, ``fail``, ``measured``, ``skipped``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Callable

from drmm_ref.backend import atomic_write_json, atomic_write_text

from ._provenance import git_state

KINDS = ("identity", "replication")
STATUSES = ("pass", "fail", "measured", "skipped")
REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = {"quick": REPO_ROOT / "results" / "quick", "full": REPO_ROOT / "results" / "full"}


def runs_root(claim_id: str) -> Path:
    """Where a claim's --full training runs keep their checkpoints (outside the repository):
    ``$DRMM_REF_RUNS/<claim_id>``, default ``$DRMM_REF_CACHE/runs/<claim_id>`` (``~/.cache/drmm_ref``)."""
    base = os.environ.get("DRMM_REF_RUNS") or Path(os.environ.get("DRMM_REF_CACHE") or Path.home() / ".cache"
                                                   / "drmm_ref") / "runs"
    return Path(base) / claim_id


def archive_root(claim_id: str) -> Path:
    """Where a claim's finished training logs are committed: ``results/runs/<claim_id>`` in the repository."""
    return REPO_ROOT / "results" / "runs" / claim_id


def finished_log(claim_id: str, run_name: str, config: Any, *, runs: Path | None = None,
                 archive: Path | None = None) -> dict | None:
    """The log of a finished run of ``config``, read instead of training it again; None when there is none
    (:func:`find_finished_log` without the place it was found)."""
    found = find_finished_log(claim_id, run_name, config, runs=runs, archive=archive)
    return None if found is None else found[0]


def find_finished_log(claim_id: str, run_name: str, config: Any, *, runs: Path | None = None,
                      archive: Path | None = None, finished: bool = True) -> tuple[dict, str] | None:
    """The log of a finished run of ``config`` and where it was found; None when there is none.

    Looks first in the runs folder (``runs_root(claim_id)/<run_name>/log.json``, or ``runs``), then in the
    committed archive (``results/runs/<claim_id>/<run_name>/log.json``, or ``archive``), whose checkpoints
    may be gone. A log is finished when its last epoch is ``config.epochs`` (epochs numbered 0, 1, ..., N).

    Parameters
    ----------
    claim_id, run_name : str
    config : drmm_ref.learning.TrainConfig
        The planned configuration; the log's ``config`` must be the same (read with
        ``TrainConfig.from_dict``, so fields added since the log was written take their defaults), except
        for the checkpoint cadence, ``epochs`` and ``backend`` (``drmm_ref.learning.trainer.RESUMABLE_CHANGES``).
    runs, archive : Path, optional
        The folders holding ``<run_name>/log.json`` (defaults above).
    finished : bool, default True
        False: the first log of ``config`` found, finished or not (how far a run has come).

    Returns
    -------
    (log, where) or None
        ``where`` is ``"runs folder"`` or the archived log's path relative to the repository.

    Raises
    ------
    ValueError
        A log of ``run_name`` was written with another configuration, or its epochs are not 0, 1, ..., N:
        using it (or training over it) would mix two experiments.
    """
    from drmm_ref.learning import TrainConfig
    from drmm_ref.learning.trainer import RESUMABLE_CHANGES

    planned = config.to_dict()
    places = [(Path(runs) if runs is not None else runs_root(claim_id), "runs folder"),
              (Path(archive) if archive is not None else archive_root(claim_id), None)]
    for folder, label in places:
        path = folder / run_name / "log.json"
        if not path.is_file():
            continue
        log = json.loads(path.read_text())
        saved = TrainConfig.from_dict(log.get("config")).to_dict()
        differ = sorted(k for k in set(saved) | set(planned)
                        if k not in RESUMABLE_CHANGES and saved.get(k) != planned.get(k))
        if differ:
            raise ValueError(f"{path}: run {run_name!r} was trained with another configuration than the planned one "
                             f"(fields {differ}: log {[saved.get(k) for k in differ]}, planned "
                             f"{[planned.get(k) for k in differ]}); move it away or fix the plan")
        epochs = [e.get("epoch") for e in log.get("epochs", [])]
        if epochs != list(range(len(epochs))):
            raise ValueError(f"{path}: the log's epochs are {epochs}, not 0, 1, ..., N: a damaged log")
        if not finished or (epochs and epochs[-1] == config.epochs):
            return log, label or _relative(path)
    return None


def _relative(path: Path) -> str:
    try:
        return Path(path).resolve().relative_to(REPO_ROOT).as_posix()
    except ValueError:
        return str(path)


@dataclasses.dataclass(frozen=True)
class Claim:
    """Static description of a claim: what it states and where the paper (or SPEC) says it."""

    id: str
    kind: str
    paper_ref: str
    statement: str
    assumptions: tuple[str, ...] = ()
    #: BLAS threads while the claim runs: an int, None (leave the pool alone) or "auto" (1 for identity
    #: claims, None for replication claims). Identity claims are many small matrix products, where
    #: OpenBLAS threads cost more than they give and spin under CPU contention (rmm-em --quick: 5 s
    #: with one thread, 260 s with two on a loaded 2-core machine); training runs keep every thread.
    blas_threads: int | None | str = "auto"

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"Claim kind must be one of {KINDS}, got {self.kind!r}")
        if self.blas_threads == "auto":
            object.__setattr__(self, "blas_threads", 1 if self.kind == "identity" else None)

    @property
    def module(self) -> str:
        return "validation." + self.id.replace("-", "_")


@dataclasses.dataclass
class Result:
    """What ``run`` measured. ``measured`` must be JSON-serialisable (plain floats, ints, lists, dicts)."""

    status: str
    measured: dict[str, Any]
    tolerance: Any
    summary: str
    dtype: str = "float64"
    data_source: str = "synthetic (seeded)"
    extra_assumptions: tuple[str, ...] = ()

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ValueError(f"Result status must be one of {STATUSES}, got {self.status!r}")


def build_parser(claim: Claim) -> argparse.ArgumentParser:
    """The command line every claim script accepts."""
    parser = argparse.ArgumentParser(
        prog=f"python -m {claim.module}",
        description=f"[{claim.kind}] {claim.id}: {claim.statement}",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", dest="mode", action="store_const", const="quick",
                      help="reduced run, minutes at most, never downloads (default)")
    mode.add_argument("--full", dest="mode", action="store_const", const="full",
                      help="the run whose record gives the verdict (results/full/)")
    parser.set_defaults(mode="quick")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for the JSON record (default results/quick or results/full)")
    parser.add_argument("--seed", type=int, default=0, help="base random seed (default 0)")
    parser.add_argument("--backend", default="numpy", choices=("numpy", "array_api_strict", "cupy"),
                        help="array namespace the claim runs on (default numpy)")
    return parser


def _versions(backend: str) -> dict[str, str]:
    import numpy
    import scipy

    import drmm_ref

    out = {"python": platform.python_version(), "numpy": numpy.__version__, "scipy": scipy.__version__,
           "drmm_ref": drmm_ref.__version__}
    if backend != "numpy":
        try:
            out[backend] = __import__(backend).__version__
        except Exception:  # pragma: no cover - reported, not fatal
            out[backend] = "unavailable"
    return out


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (drmm_ref.backend.atomic_write_text)."""
    atomic_write_text(path, text)


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write JSON (no NaN or inf allowed) to ``path`` atomically."""
    atomic_write_json(path, payload)


def command_line(claim: Claim, args: argparse.Namespace) -> str:
    """The exact command that reproduces this record from the repository root."""
    parts = ["python", "-m", "validation", "--only", claim.id, f"--{args.mode}", "--seed", str(args.seed)]
    if args.backend != "numpy":
        parts += ["--backend", args.backend]
    if args.out is not None and Path(args.out).resolve() != DEFAULT_OUT[args.mode].resolve():
        parts += ["--out", str(args.out)]
    return shlex.join(parts)


def make_record(claim: Claim, result: Result, args: argparse.Namespace, seconds: float) -> dict[str, Any]:
    """Assemble the JSON record of one claim run."""
    return {
        "id": claim.id,
        "kind": claim.kind,
        "status": result.status,
        "passed": result.status == "pass",
        "paper_ref": claim.paper_ref,
        "statement": claim.statement,
        "assumptions": list(claim.assumptions) + list(result.extra_assumptions)
        + ([f"BLAS limited to {claim.blas_threads} thread(s) for this claim"] if claim.blas_threads else []),
        "measured": result.measured,
        "summary": result.summary,
        "tolerance": result.tolerance,
        "backend": args.backend,
        "dtype": result.dtype,
        "seed": args.seed,
        "mode": args.mode,
        "seconds": round(seconds, 3),
        "data_source": result.data_source,
        "command": command_line(claim, args),
        "versions": _versions(args.backend),
        "host": {"machine": platform.machine(), "system": platform.system(), "cpus": os.cpu_count()},
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        **git_state(),
    }


def run_claim(claim: Claim, run: Callable[[argparse.Namespace], Result],
              argv: list[str] | None = None) -> dict[str, Any]:
    """Parse ``argv``, run the claim, write ``<out>/<id>.json`` and return the record."""
    args = build_parser(claim).parse_args(sys.argv[1:] if argv is None else argv)
    from drmm_ref.backend import backend_problem

    problem = backend_problem(args.backend)
    if problem is not None:  # a claim that cannot run is not a failed claim: nothing is recorded
        print(f"error: --backend {args.backend}: {problem}; {claim.id} was not run and no record was written",
              file=sys.stderr)
        raise SystemExit(2)
    out = Path(args.out) if args.out is not None else DEFAULT_OUT[args.mode]
    start = time.perf_counter()
    if claim.blas_threads is not None:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=claim.blas_threads, user_api="blas"):
            result = run(args)
    else:
        result = run(args)
    record = make_record(claim, result, args, time.perf_counter() - start)
    write_json_atomic(out / f"{claim.id}.json", record)
    return record


def exit_code(record: dict[str, Any]) -> int:
    """1 for a failed identity claim, else 0 (a replication ``fail`` is a result, not an error)."""
    return 1 if record["kind"] == "identity" and record["status"] == "fail" else 0
