"""Resume one of `ssl-mnist-converged`'s runs on a GPU (CuPy) for a fixed time, and bring its log back.

An extra beside the claim (``docs/ssl.md``, "The converged runs"): a run begun with NumPy here goes on with
CuPy on a machine with an NVIDIA GPU for as many whole epochs as fit the time given, then comes back, log and
latest checkpoint, so that it can go on here again (a run may change its backend on resume; each epoch record
names the backend that trained it: ``docs/guarantees.md``). The default run is the informational 50-epoch DRMM
(``conv-small-drmm-ce-rc-nn-h-nl100-seed0-e50``); a run without a checkpoint yet starts from its beginning.

Two steps::

    # here: copy MNIST (compressed, checksummed on reading) and the run's resume point into .gpu/ (git-ignored),
    # and array-api-compat's wheel into .whl/ (the GPU machine lacks it)
    python benchmarks/gpu_resume.py --stage [--run NAME]
    # there (the device tool, carry [".gpu", ".whl"]); OUT comes back:
    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site;
    python3 benchmarks/gpu_resume.py --minutes 7 --out "$OUT" [--run NAME]

The device step stops at the end of the last epoch that fits ``--minutes`` (each epoch's time measured, the
next one assumed as long), with a hard stop (SIGALRM) at the limit itself; the run keeps every finished epoch.
``OUT`` receives ``log.json`` (the claim's slim form: no per-step traces), ``summary.json`` (epochs trained on
the GPU, seconds per epoch, test error per epoch, the device) and the latest epoch checkpoint. Back here,
``--unstage OUT_FOLDER`` puts log and checkpoint into the runs folder (``$DRMM_REF_RUNS``), where the queued
command resumes the run on NumPy. ``--backend numpy --minutes 1`` rehearses the device step on a CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

STAGE = REPO / ".gpu"
CLAIM_ID = "ssl-mnist-converged"
DEFAULT_RUN = "conv-small-drmm-ce-rc-nn-h-nl100-seed0-e50"
ARRAY_API_COMPAT = "array-api-compat==1.16.0"


class TimeUp(Exception):
    """The time given to the device step has run out."""


def _planned(name: str, root: Path):
    from validation.ssl_mnist_converged import FULL, planned_runs

    plan = {p.out.name: p for p in planned_runs(FULL, root)}
    if name not in plan:
        raise SystemExit(f"error: --run {name!r} is not one of ssl-mnist-converged's runs: {', '.join(plan)}")
    return plan[name]


def _exclude(entry: str) -> None:
    """Keep ``entry`` out of git (the device tool carries ignored folders only when named)."""
    git_dir = Path(subprocess.run(["git", "rev-parse", "--git-common-dir"], cwd=REPO, capture_output=True,
                                  text=True, check=True).stdout.strip())
    exclude = (REPO / git_dir if not git_dir.is_absolute() else git_dir) / "info" / "exclude"
    exclude.parent.mkdir(parents=True, exist_ok=True)
    lines = exclude.read_text().splitlines() if exclude.exists() else []
    if entry not in lines:
        exclude.write_text("\n".join(lines + [entry]) + "\n")


def stage(name: str) -> None:
    import numpy as np

    from drmm_ref.data.mnist import load_uint8
    from drmm_ref.learning.trainer import resume_point
    from validation._claim import runs_root

    _exclude("/.gpu/")
    _exclude("/.whl/")
    planned = _planned(name, runs_root(CLAIM_ID))
    mnist = STAGE / "mnist.npz"
    if not mnist.exists():
        arrays, origin = load_uint8(None, offline=True, progress=False)
        STAGE.mkdir(exist_ok=True)
        np.savez_compressed(mnist, **arrays)
        print(f"{mnist} ({mnist.stat().st_size / 2**20:.1f} MiB, from {origin})")
    src, dst = planned.out, STAGE / "runs" / CLAIM_ID / name
    if dst.exists():
        shutil.rmtree(dst)
    (dst / "checkpoints").mkdir(parents=True)
    point = resume_point(src) if src.is_dir() else None
    if point is not None:
        shutil.copy2(point, dst / "checkpoints" / point.name)
        shutil.copy2(src / "log.json", dst / "log.json")
        print(f"{dst}: resumes from {point.name}")
    else:
        print(f"{dst}: no checkpoint yet; the device step starts the run")
    wheels = REPO / ".whl"
    if not list(wheels.glob("array_api_compat-*.whl")):
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                        "--python-version", "3.12", "-d", str(wheels), ARRAY_API_COMPAT], check=True)
    size = sum(f.stat().st_size for d in (STAGE, wheels) for f in d.rglob("*") if f.is_file())
    print(f"staged {size / 2**20:.1f} MiB; on the device: carry ['.gpu', '.whl'] and run the device step "
          "(this file's docstring)")


def device(name: str, minutes: float, out: Path, backend: str) -> int:
    os.environ["DRMM_REF_RUNS"] = str(STAGE / "runs")
    import dataclasses

    from drmm_ref._files import atomic_write_json, atomic_write_text
    from drmm_ref.data import load_mnist
    from drmm_ref.learning import train
    from validation._claim import runs_root
    from validation.ssl_mnist_converged import slim_log

    if minutes <= 0:
        raise SystemExit(f"error: --minutes must be positive, got {minutes}")
    planned = _planned(name, runs_root(CLAIM_ID))
    config = dataclasses.replace(planned.config, backend=backend)
    if not (STAGE / "mnist.npz").is_file():
        raise SystemExit(f"error: {STAGE / 'mnist.npz'} is missing: run --stage here first, and carry .gpu")
    data = load_mnist(STAGE / "mnist.npz", offline=True, progress=False)
    out.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    deadline = start + 60 * minutes
    previous = {"end": start}

    def stop_if_the_next_epoch_does_not_fit(rec: dict) -> None:
        now = time.monotonic()
        last, previous["end"] = now - previous["end"], now  # the epoch with its evaluation and checkpoint
        print(f"epoch {rec['epoch']}: test error {100 * rec['test_error']:.2f}%, train {rec['train_seconds']:.1f} s, "
              f"{last:.1f} s with evaluation and checkpoint", flush=True)
        if now + last > deadline:
            raise TimeUp

    def hard_stop(signum, frame):
        raise TimeUp

    signal.signal(signal.SIGALRM, hard_stop)
    signal.alarm(max(1, int(60 * minutes)))
    stopped = "finished"
    try:
        train(config, data, planned.out, threads=1, progress=False, on_epoch=stop_if_the_next_epoch_does_not_fit)
    except TimeUp:
        stopped = "time"
    finally:
        signal.alarm(0)
    from drmm_ref.learning.trainer import latest_checkpoint

    log = json.loads((planned.out / "log.json").read_text())
    atomic_write_text(out / "log.json", json.dumps(slim_log(log), separators=(",", ":")) + "\n")
    mine = [e for e in log["epochs"] if e.get("backend") == backend]
    summary = {
        "run": name, "backend": backend, "minutes_given": minutes, "stopped_by": stopped,
        "seconds": round(time.monotonic() - start, 1), "epochs_logged": log["epochs"][-1]["epoch"],
        "epochs_on_this_backend": [e["epoch"] for e in mine],
        "train_seconds_per_epoch": [e.get("train_seconds") for e in mine],
        "test_error": {e["epoch"]: e["test_error"] for e in log["epochs"]},
        "device": _device_name(backend),
    }
    atomic_write_json(out / "summary.json", summary, indent=1)
    ckpt = latest_checkpoint(planned.out)
    if ckpt is not None and ckpt.stat().st_size < 15 * 2**20:  # what the device tool brings back
        shutil.copy2(ckpt, out / ckpt.name)
    print(json.dumps(summary, indent=1))
    return 0


def _device_name(backend: str) -> str:
    if backend != "cupy":
        return "cpu"
    import cupy

    return cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()


def unstage(name: str, folder: Path) -> None:
    """Put the device step's log and checkpoint into the runs folder, where the queued command resumes them."""
    from drmm_ref._files import atomic_write
    from drmm_ref.learning import latest_checkpoint, load_checkpoint
    from drmm_ref.learning.trainer import _same_run, write_json_atomic
    from validation._claim import runs_root

    planned = _planned(name, runs_root(CLAIM_ID))
    ckpts = sorted(folder.glob("epoch-*.npz"))
    if not ckpts:
        raise SystemExit(f"error: {folder} holds no epoch checkpoint (epoch-*.npz)")
    ckpt = load_checkpoint(ckpts[-1])  # checksummed: a truncated transfer is refused here
    differ = _same_run(ckpt.config, planned.config.to_dict())
    if differ:
        raise SystemExit(f"error: {ckpts[-1]} is a checkpoint of another configuration than {name} "
                         f"(differs in {differ})")
    here = latest_checkpoint(planned.out) if planned.out.is_dir() else None
    here_epoch = load_checkpoint(here).epoch if here is not None else None
    if here_epoch is not None and here_epoch >= ckpt.epoch:
        raise SystemExit(f"error: {planned.out} is already at epoch {here_epoch}, not behind the "
                         f"device's {ckpt.epoch}: nothing to bring back")
    (planned.out / "checkpoints").mkdir(parents=True, exist_ok=True)
    data = ckpts[-1].read_bytes()  # written atomically: a half-copied checkpoint never sits where a run resumes
    atomic_write(planned.out / "checkpoints" / ckpts[-1].name, lambda fh: fh.write(data))
    # the full log (with the per-step traces) is in the checkpoint's history
    write_json_atomic(planned.out / "log.json", ckpt.history)
    print(f"{planned.out}: resumes from {ckpts[-1].name} (epoch {ckpt.epoch})")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", default=DEFAULT_RUN, help=f"the run (default {DEFAULT_RUN})")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--stage", action="store_true", help="here: copy MNIST and the run's resume point to .gpu/")
    mode.add_argument("--unstage", type=Path, default=None, metavar="FOLDER",
                      help="here: put a device step's log and checkpoint (from FOLDER) into the runs folder")
    ap.add_argument("--minutes", type=float, default=7.0, help="device step: time to train (default 7)")
    ap.add_argument("--out", type=Path, default=None, help="device step: where the log and summary go")
    ap.add_argument("--backend", default="cupy", choices=("cupy", "numpy"), help="device step's backend")
    args = ap.parse_args(argv)
    if args.stage:
        stage(args.run)
        return 0
    if args.unstage is not None:
        unstage(args.run, args.unstage)
        return 0
    if args.out is None:
        ap.error("the device step needs --out (the folder that comes back)")
    return device(args.run, args.minutes, args.out, args.backend)


if __name__ == "__main__":
    sys.exit(main())
