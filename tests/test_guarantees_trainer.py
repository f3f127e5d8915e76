"""What the trainer promises (docs/guarantees.md): a run owns its folder, divergence stops it with the
last good checkpoint intact, mid-epoch checkpoints resume bit for bit, a killed run leaves nothing
temporary and resumes exactly.

Named regressions are the cases of a hostile-user review that lost data or gave silent results.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from drmm_ref.drmm import Layer, Network
from drmm_ref.learning import (CheckpointError, TrainConfig, evaluate, latest_checkpoint, load_checkpoint,
                               synthetic_digits, train, trainable)
from drmm_ref.learning import fit_loop as F  # the steps are called from the fit loop
from drmm_ref.learning import trainer as T
from drmm_ref.learning.trainer import (MID_EPOCH_CHECKPOINT, FolderInUse, TrainingDiverged, check_output_folder,
                                       resume_point)

from ._helpers import host

ROOT = Path(__file__).resolve().parent.parent
TINY28 = Network((1, 28, 28), (Layer(2, 5, 0, 2), Layer(3, 5, 0, 2)), n_classes=10, name="tiny28")


def _cfg(**kw):
    base = dict(model="dcn", net=TINY28, epochs=1, batch_size=30, data="synthetic", monitor_size=20, lr=0.01)
    base.update(kw)
    return TrainConfig(**base)


def _data(n=60, m=20):
    return synthetic_digits(n, m, m, seed=0)


def _same_params(a, b):
    ta, tb = trainable(a), trainable(b)
    for name in ta:
        np.testing.assert_array_equal(host(ta[name]), host(tb[name]), err_msg=name)
    for name in ("class_prior", "switch_prior"):
        np.testing.assert_array_equal(host(getattr(a, name)), host(getattr(b, name)), err_msg=name)
    assert a.noise_variance == b.noise_variance


_TIMING = ("train_seconds", "cumulative_train_seconds", "train_cpu_seconds", "cumulative_train_cpu_seconds",
           "wall_seconds", "trace_seconds", "seconds")


def _untimed(log):
    """The log without wall/CPU times (they differ between runs; everything else must not)."""
    epochs = [{k: v for k, v in e.items() if k not in _TIMING} for e in log["epochs"]]
    steps = [{k: v for k, v in s.items() if k not in _TIMING} for s in log["steps"]]
    return epochs, steps


def _temporaries(out):
    return [p for p in Path(out).rglob("*") if p.name.endswith(".tmp")]


# ----------------------------------------------------------------------------------- the folder
def test_out_must_be_a_folder_path(tmp_path):
    with pytest.raises(ValueError, match="out is empty"):
        train(_cfg(), _data(), "", progress=False)
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        check_output_folder(f, _cfg())
    with pytest.raises(ValueError, match="is a file, not a folder"):
        train(_cfg(), _data(), f, progress=False)
    assert f.read_text() == "x"


def test_unrelated_log_json_is_refused_and_kept_regression(tmp_path):
    (tmp_path / "log.json").write_text('{"mine": 1}\n')
    with pytest.raises(FolderInUse, match="not a drmm_ref training log"):
        check_output_folder(tmp_path, _cfg())
    with pytest.raises(FolderInUse, match="not a drmm_ref training log"):
        train(_cfg(), _data(), tmp_path, progress=False)
    assert (tmp_path / "log.json").read_text() == '{"mine": 1}\n'
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.parametrize("resume", [True, False])
def test_a_folder_of_another_configuration_is_refused_naming_it(tmp_path, resume):
    first = train(_cfg(lr=0.01), _data(), tmp_path, progress=False)
    before = {p.name: p.read_bytes() for p in (tmp_path / "checkpoints").iterdir()}
    log_before = (tmp_path / "log.json").read_text()
    with pytest.raises(FolderInUse, match=r"lr=0\.01.*differs in \['lr'\]"):
        train(_cfg(lr=0.05), _data(), tmp_path, progress=False, resume=resume)
    assert {p.name: p.read_bytes() for p in (tmp_path / "checkpoints").iterdir()} == before
    assert (tmp_path / "log.json").read_text() == log_before
    assert first.log["finished"]


def test_a_log_of_another_configuration_without_checkpoint_is_refused(tmp_path):
    """A run killed during its initial evaluation leaves only log.json: it still owns the folder."""
    train(_cfg(epochs=0), _data(), tmp_path, progress=False)
    assert latest_checkpoint(tmp_path) is None
    with pytest.raises(FolderInUse, match=r"log\.json belongs to a run with another configuration"):
        train(_cfg(seed=5), _data(), tmp_path, progress=False)
    train(_cfg(epochs=1), _data(), tmp_path, progress=False)  # the same run may carry on


def test_a_folder_being_written_is_refused_naming_the_other_run(tmp_path):
    other = _cfg(lr=0.02)
    with T._folder_lock(tmp_path, other.to_dict()):
        for call in (lambda: check_output_folder(tmp_path, _cfg()),
                     lambda: train(_cfg(), _data(), tmp_path, progress=False)):
            with pytest.raises(FolderInUse, match=rf"another training run \(process {os.getpid()} .*lr=0\.02"):
                call()
    train(_cfg(), _data(), tmp_path, progress=False)  # the lock is released with its holder


_RUNNER = """
import sys
sys.path.insert(0, {root!r})
from drmm_ref.drmm import Layer, Network
from drmm_ref.learning import TrainConfig, synthetic_digits, train
net = Network((1, 28, 28), (Layer(2, 5, 0, 2), Layer(3, 5, 0, 2)), n_classes=10, name="tiny28")
cfg = TrainConfig(model="drmm", net=net, epochs={epochs}, batch_size=5, data="synthetic", monitor_size=10, seed=1,
                  lr={lr}, checkpoint_every_steps=1)
train(cfg, synthetic_digits(100, 20, 20, seed=0), {out!r}, progress=False)
"""


def _runner(out, epochs=2, lr=0.01):
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    code = _RUNNER.format(root=str(ROOT), epochs=epochs, lr=lr, out=str(out))
    return subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


@pytest.mark.slow
def test_two_concurrent_runs_of_different_configurations_second_refuses_first_intact(tmp_path):
    """Regression: both used to exit 0 and the folder ended up with a mix of the two runs."""
    a = _runner(tmp_path, lr=0.01)
    deadline = time.time() + 60
    while not (tmp_path / T.LOCK_NAME).is_file() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    b = _runner(tmp_path, lr=0.05)
    _, err_b = b.communicate(timeout=120)
    _, err_a = a.communicate(timeout=120)
    assert a.returncode == 0, err_a
    assert b.returncode != 0 and "FolderInUse" in err_b and "lr=0.01" in err_b, err_b
    log = json.loads((tmp_path / "log.json").read_text())
    assert log["finished"] and log["config"]["lr"] == 0.01
    for path in (tmp_path / "checkpoints").glob("*.npz"):
        assert load_checkpoint(path).config["lr"] == 0.01


# ----------------------------------------------------------------------------------- sizes
@pytest.mark.parametrize("field,value", [("n_train", -1), ("n_train", 0), ("n_eval", 0), ("n_eval", -9990),
                                         ("n_train", 2.5), ("batch_size", 0), ("seed", -1), ("lr", float("inf")),
                                         ("lr", 0.0), ("momentum", 1.0), ("k_cg", 0), ("cg_eta", 0.0),
                                         ("cg_damping", float("nan")), ("monitor_size", -1), ("eval_batch", 0),
                                         ("epochs", True), ("checkpoint_every_steps", 0),
                                         ("checkpoint_every_seconds", float("inf")), ("backend", "torch"),
                                         ("cg_blocks", ("filters_9",)), ("dtype", "float16")])
def test_config_refuses_bad_values_naming_the_field_regression(field, value):
    with pytest.raises((ValueError, TypeError), match=field if field != "dtype" else "dtype"):
        _cfg(**{field: value})


def test_sizes_larger_than_the_data_are_errors_not_slices(tmp_path):
    with pytest.raises(ValueError, match=r"n_train=100 but the training split has only 60"):
        train(_cfg(n_train=100), _data(60), tmp_path / "a", progress=False)
    with pytest.raises(ValueError, match=r"n_eval=50 but the validation split has only 20"):
        train(_cfg(n_eval=50), _data(60), tmp_path / "b", progress=False)
    with pytest.raises(ValueError, match="n_labels=20 leaves no unlabelled image among n_train=20"):
        _cfg(model="drmm", n_labels=20, n_train=20)


def test_evaluate_refuses_an_empty_set_regression_zero_percent():
    """Regression: --n-eval 0 printed 'validation error 0.00%'."""
    from drmm_ref.drmm import init_params

    params = init_params(TINY28, 0, dtype="float32")
    with pytest.raises(ValueError, match="images is empty"):
        evaluate(params, np.zeros((0, 1, 28, 28), np.float32), np.zeros(0, np.int64))


def test_config_from_a_newer_version_is_a_clear_error(tmp_path):
    train(_cfg(), _data(), tmp_path, progress=False)
    path = latest_checkpoint(tmp_path)
    ck = load_checkpoint(path)
    from drmm_ref.learning import save_checkpoint

    save_checkpoint(path, ck.__class__(ck.params, ck.optimizer, ck.opt_state, ck.rng_state, ck.epoch,
                                       {**ck.config, "future_field": 1}, ck.history))
    with pytest.raises(CheckpointError, match=r"unknown configuration fields \['future_field'\]"):
        train(_cfg(epochs=2), _data(), tmp_path, progress=False)
    with pytest.raises(ValueError, match="future_field"):
        TrainConfig.from_dict({**ck.config, "future_field": 1})


# ----------------------------------------------------------------------------------- divergence
def test_divergence_stops_at_the_step_naming_the_term_and_keeps_the_last_good_checkpoint(tmp_path):
    """Regression: divergence surfaced only when the epoch's checkpoint was written ('Out of range float
    values are not JSON compliant') and the epoch was lost."""
    cfg = _cfg(model="drmm", epochs=3, batch_size=10, optimizer="sgd", momentum=0.0, lr=1e7, checkpoint_every_steps=1)
    with pytest.raises(TrainingDiverged) as info:
        train(cfg, _data(), tmp_path, progress=False)
    exc = info.value
    assert f"epoch {exc.epoch}, step {exc.step}" in str(exc) and exc.term in str(exc)
    assert exc.term in ("objective", "ce", "rc", "nn", "rc_after_m", "parameters")
    for path in (tmp_path / "checkpoints").glob("*.npz"):
        load_checkpoint(path)
    log = json.loads((tmp_path / "log.json").read_text())  # still valid JSON (no NaN)
    assert not log["finished"]
    assert _temporaries(tmp_path) == []


@pytest.mark.parametrize("bad_call,term", [(13, "objective"), (4, "rc"), (10, "parameters")])
def test_divergence_keeps_every_good_checkpoint_byte_for_byte(tmp_path, monkeypatch, bad_call, term):
    """A non-finite value injected at a known step: the run stops there, naming it, and the checkpoints
    written before (epoch and mid-epoch) are left exactly as they were."""
    import dataclasses

    from drmm_ref.drmm.params import NonFiniteParameters

    real, calls, snapshot = F.eg_step, {"n": 0}, {}

    def step(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == bad_call:
            snapshot.update({p.name: p.read_bytes() for p in (tmp_path / "checkpoints").glob("*.npz")})
            if term == "parameters":
                raise NonFiniteParameters("filters[0] (layer 1) contains NaN or inf", "filters[0] (layer 1)")
        params, state, tr = real(*args, **kwargs)
        if calls["n"] == bad_call:
            tr = dataclasses.replace(tr, terms=dataclasses.replace(tr.terms, **{term: float("nan")}))
        return params, state, tr

    monkeypatch.setattr(F, "eg_step", step)
    cfg = _cfg(model="drmm", epochs=3, batch_size=6, checkpoint_every_steps=3, checkpoint_every_seconds=None)
    with pytest.raises(TrainingDiverged) as info:
        train(cfg, _data(), tmp_path, progress=False)
    exc = info.value
    epoch, step_no = (bad_call - 1) // 10 + 1, (bad_call - 1) % 10 + 1
    assert (exc.epoch, exc.step, exc.term) == (epoch, step_no, term)
    assert f"training diverged at epoch {epoch}, step {step_no}" in str(exc)
    assert snapshot and {p.name: p.read_bytes() for p in (tmp_path / "checkpoints").glob("*.npz")} == snapshot
    assert exc.checkpoint is not None and exc.checkpoint.name in snapshot and str(exc.checkpoint) in str(exc)
    assert resume_point(tmp_path) == exc.checkpoint


def test_adam_with_a_huge_learning_rate_is_caught_at_its_step(tmp_path):
    """Adam(lr=1e6): the first update leaves finite but huge parameters; a later step overflows."""
    with pytest.raises(TrainingDiverged, match=r"epoch \d+, step \d+"):
        train(_cfg(model="drmm", epochs=2, batch_size=10, lr=1e6), _data(), tmp_path, progress=False)


# ----------------------------------------------------------------------------------- mid-epoch checkpoints
class _Interrupt(Exception):
    pass


def _interrupting_step(monkeypatch, after_calls):
    """Make the trainer's steps raise after ``after_calls`` successful ones (an in-process 'kill')."""
    calls = {"n": 0}
    for name in ("eg_step", "backprop_step"):
        real = getattr(F, name)

        def wrapped(*args, _real=real, **kwargs):
            if calls["n"] >= after_calls:
                raise _Interrupt
            calls["n"] += 1
            return _real(*args, **kwargs)

        monkeypatch.setattr(F, name, wrapped)
    return calls


@pytest.mark.parametrize("model,every,cut", [("drmm", 3, 8), ("dcn", 1, 13), ("drmm", 4, 4)])
def test_mid_epoch_resume_is_bit_identical(tmp_path, monkeypatch, model, every, cut):
    data = _data(60)
    cfg = _cfg(model=model, epochs=2, batch_size=6, checkpoint_every_steps=every, checkpoint_every_seconds=None)
    full = train(cfg, data, tmp_path / "full", progress=False)
    assert not (tmp_path / "full" / "checkpoints" / MID_EPOCH_CHECKPOINT).exists()  # removed at the epoch's end
    with monkeypatch.context() as m:
        _interrupting_step(m, cut)
        with pytest.raises(_Interrupt):
            train(cfg, data, tmp_path / "cut", progress=False)
    point = resume_point(tmp_path / "cut")
    mids = list((tmp_path / "cut" / "checkpoints").glob("mid-*"))
    assert point is not None and point.name == MID_EPOCH_CHECKPOINT and len(mids) == 1  # only the latest is kept
    ck = load_checkpoint(point)
    assert ck.mid_epoch["step"] == (cut % 10) // every * every and ck.epoch == cut // 10
    resumed = train(cfg, data, tmp_path / "cut", progress=False)
    _same_params(full.params, resumed.params)
    assert _untimed(full.log) == _untimed(resumed.log)
    a, b = load_checkpoint(latest_checkpoint(tmp_path / "full")), load_checkpoint(latest_checkpoint(tmp_path / "cut"))
    assert a.rng_state == b.rng_state and a.opt_state.step == b.opt_state.step


@pytest.mark.parametrize("model", ["drmm", "dcn"])
def test_a_run_resumes_mid_epoch_on_another_backend_with_a_warning(tmp_path, monkeypatch, model):
    """``backend`` may change on resume (a CPU run continued on a GPU): checkpoints load onto the new namespace,
    the run warns that it is no longer bit-identical, each epoch names its backend, the result agrees with an
    uninterrupted run to rounding, and the run goes back to NumPy the same way. array_api_strict stands in for
    CuPy here (another namespace, on any machine)."""
    import array_api_strict

    from drmm_ref._backend import get_namespace

    data = _data(60)
    cfg = _cfg(model=model, epochs=3, batch_size=6, checkpoint_every_steps=4, checkpoint_every_seconds=None)
    full = train(cfg, data, tmp_path / "full", progress=False)
    with monkeypatch.context() as m:
        _interrupting_step(m, 14)  # four steps into epoch 2: its mid-epoch checkpoint
        with pytest.raises(_Interrupt):
            train(cfg, data, tmp_path / "cut", progress=False)
    assert resume_point(tmp_path / "cut").name == MID_EPOCH_CHECKPOINT
    strict = dataclasses.replace(cfg, epochs=2, backend="array_api_strict")
    with pytest.warns(RuntimeWarning, match="trained on the numpy backend and resumes on array_api_strict"):
        moved = train(strict, data, tmp_path / "cut", progress=False)
    assert get_namespace(moved.params.class_templates) is get_namespace(array_api_strict.asarray(0.0))
    with pytest.warns(RuntimeWarning, match="trained on the array_api_strict backend and resumes on numpy"):
        back = train(cfg, data, tmp_path / "cut", progress=False)
    assert [e.get("backend") for e in back.log["epochs"]] == [None, "numpy", "array_api_strict", "numpy"]
    assert back.log["finished"] and back.log["config"]["backend"] == "numpy"
    ta, tb = trainable(full.params), trainable(back.params)
    for name in ta:
        np.testing.assert_allclose(host(tb[name]), host(ta[name]), rtol=1e-4, atol=1e-6, err_msg=name)
    for a, b in zip(full.log["epochs"], back.log["epochs"]):
        assert a["test_error"] == pytest.approx(b["test_error"], abs=1 / 20)  # at most one image in 20 flips


def test_checkpoint_cadence_may_change_on_resume_and_restart_clears_the_run(tmp_path, monkeypatch):
    cfg = _cfg(epochs=2, batch_size=6, checkpoint_every_steps=2)
    with monkeypatch.context() as m:
        _interrupting_step(m, 5)
        with pytest.raises(_Interrupt):
            train(cfg, _data(), tmp_path, progress=False)
    again = TrainConfig(**{**cfg.__dict__, "checkpoint_every_steps": None, "checkpoint_every_seconds": 3600.0})
    res = train(again, _data(), tmp_path, progress=False)
    assert res.log["finished"]
    train(again, _data(), tmp_path, progress=False, resume=False)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["epoch-001.npz", "epoch-002.npz"]


# ----------------------------------------------------------------------------------- fault injection
@pytest.mark.slow
def test_sigkill_at_random_points_then_resume_is_bit_identical_and_leaves_no_temporaries(tmp_path):
    """A tiny EG run (2 epochs of 20 steps, a mid-epoch checkpoint every step) is killed with SIGKILL
    several times at random points, each time after it made progress; resumed each time; the end is
    bit-identical to an uninterrupted run and nothing temporary is left."""
    ref = tmp_path / "ref"
    p = _runner(ref)
    assert p.wait(timeout=120) == 0, p.stderr.read()
    out = tmp_path / "killed"
    rng = random.Random(7)
    kills = 0
    for _ in range(12):
        if kills >= 4:
            break
        p = _runner(out)
        mid = out / "checkpoints" / MID_EPOCH_CHECKPOINT
        seen = mid.stat().st_mtime_ns if mid.exists() else None
        deadline = time.time() + 60
        while p.poll() is None and time.time() < deadline:  # wait for progress, then kill at a random moment
            if mid.exists() and mid.stat().st_mtime_ns != seen:
                break
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.4))
        if p.poll() is not None:
            break
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=30)
        kills += 1
    assert kills >= 2, "the run finished before it could be killed: make it longer"
    p = _runner(out)
    assert p.wait(timeout=120) == 0, p.stderr.read()
    a, b = load_checkpoint(latest_checkpoint(ref)), load_checkpoint(latest_checkpoint(out))
    _same_params(a.params, b.params)
    assert a.rng_state == b.rng_state and a.opt_state.step == b.opt_state.step
    for slot in ("m", "v"):
        for name, arr in getattr(a.opt_state, slot).items():
            np.testing.assert_array_equal(host(arr), host(getattr(b.opt_state, slot)[name]))
    assert _untimed(json.loads((ref / "log.json").read_text())) == _untimed(json.loads((out / "log.json").read_text()))
    assert _temporaries(out) == [] and not (out / "checkpoints" / MID_EPOCH_CHECKPOINT).exists()
