"""benchmarks/gpu_resume.py: a run's device step (here on NumPy), its stop at the time limit, and bringing a
device checkpoint back into the runs folder (refused for another configuration or a folder not behind it)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from drmm_ref.drmm import Layer, Network
from drmm_ref.learning import TrainConfig, synthetic_digits, train
from validation.ssl_mnist_converged import PlannedRun

ROOT = Path(__file__).resolve().parent.parent
NARROW = Network((1, 28, 28), (Layer(4, 5, 0, 2), Layer(8, 5, 0, 2)), n_classes=10, name="narrow-small2")


@pytest.fixture
def gpu_resume(monkeypatch, tmp_path):
    spec = importlib.util.spec_from_file_location("gpu_resume", ROOT / "benchmarks" / "gpu_resume.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.setenv("DRMM_REF_RUNS", str(tmp_path / "runs"))  # device() sets it: keep it to this test
    data = synthetic_digits(100, 20, 20, seed=0)
    monkeypatch.setattr("drmm_ref.data.load_mnist", lambda *a, **k: data)
    config = TrainConfig(model="drmm", net=NARROW, epochs=2, batch_size=20, data="synthetic", monitor_size=0,
                         n_labels=10)
    plans = {"tiny": PlannedRun("extra", "narrow", "drmm", 0, config, tmp_path / "runs" / "tiny")}

    def planned(name, root):
        if name not in plans:
            raise SystemExit(f"error: --run {name!r} is not one of the runs")
        return plans[name]

    monkeypatch.setattr(mod, "_planned", planned)
    monkeypatch.setattr(mod, "STAGE", tmp_path / ".gpu")
    (tmp_path / ".gpu").mkdir()
    (tmp_path / ".gpu" / "mnist.npz").touch()  # what --stage writes (load_mnist is replaced above)
    return mod, plans, data


def test_device_step_without_a_staged_mnist_says_what_to_do(gpu_resume, tmp_path):
    mod, plans, data = gpu_resume
    (tmp_path / ".gpu" / "mnist.npz").unlink()
    with pytest.raises(SystemExit, match="run --stage here first"):
        mod.device("tiny", 1.0, tmp_path / "out", "numpy")


def test_device_step_trains_logs_and_brings_back_the_checkpoint(gpu_resume, tmp_path):
    mod, plans, data = gpu_resume
    out = tmp_path / "out"
    assert mod.device("tiny", 10.0, out, "numpy") == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stopped_by"] == "finished" and summary["epochs_on_this_backend"] == [1, 2]
    log = json.loads((out / "log.json").read_text())
    assert [e["epoch"] for e in log["epochs"]] == [0, 1, 2] and "steps" not in log  # the slim form
    assert (out / "epoch-002.npz").is_file()


def test_device_step_stops_early_when_the_time_is_up(gpu_resume, tmp_path):
    mod, plans, data = gpu_resume
    out = tmp_path / "out"
    mod.device("tiny", 1e-4, out, "numpy")  # the deadline has passed by the end of the first epoch
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stopped_by"] == "time" and len(summary["epochs_on_this_backend"]) <= 1
    assert summary["epochs_logged"] < plans["tiny"].config.epochs


def test_unstage_puts_the_checkpoint_where_the_run_resumes_and_refuses_what_does_not_fit(gpu_resume, tmp_path):
    import dataclasses

    mod, plans, data = gpu_resume
    device_folder = tmp_path / "device"
    one = dataclasses.replace(plans["tiny"].config, epochs=1)
    train(one, data, device_folder, progress=False)
    mod.unstage("tiny", device_folder / "checkpoints")
    resumed = train(plans["tiny"].config, data, plans["tiny"].out, progress=False)  # goes on from epoch 1
    assert [e["epoch"] for e in resumed.log["epochs"]] == [0, 1, 2]
    with pytest.raises(SystemExit, match="already at epoch 2"):
        mod.unstage("tiny", device_folder / "checkpoints")
    plans["other"] = plans["tiny"]._replace(config=dataclasses.replace(plans["tiny"].config, seed=5))
    with pytest.raises(SystemExit, match=r"another configuration.*seed"):
        mod.unstage("other", device_folder / "checkpoints")
    with pytest.raises(SystemExit, match="no epoch checkpoint"):
        mod.unstage("tiny", tmp_path)
    with pytest.raises(SystemExit, match="not one of"):
        mod.main(["--run", "nope", "--unstage", str(tmp_path)])
