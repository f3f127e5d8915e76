"""The trainer: exact resume, logs, checkpoints, and a smoke run that beats chance (SPEC §3)."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np
import pytest

from drmm_ref.drmm import Layer, Network
from drmm_ref.learning import (CheckpointError, TrainConfig, latest_checkpoint, load_checkpoint, synthetic_digits,
                               train, trainable)

from ._helpers import host

# a narrow small2 (same layout, fewer filters) keeps the trainer tests to seconds
NARROW = Network((1, 28, 28), (Layer(4, 5, 0, 2), Layer(8, 5, 0, 2)), n_classes=10, name="narrow-small2")


def _arrays_equal(a, b):
    ta, tb = trainable(a), trainable(b)
    for name in ta:
        np.testing.assert_array_equal(host(ta[name]), host(tb[name]), err_msg=name)
    for name in ("class_prior", "switch_prior"):
        np.testing.assert_array_equal(host(getattr(a, name)), host(getattr(b, name)), err_msg=name)
    assert a.noise_variance == b.noise_variance


@pytest.mark.parametrize("model,optimizer", [("drmm", "adam"), ("dcn", "sgd")])
def test_resumed_run_is_bit_identical(tmp_path, model, optimizer):
    data = synthetic_digits(150, 60, 60, seed=1)
    cfg = TrainConfig(model=model, net=NARROW, epochs=3, batch_size=50, optimizer=optimizer, lr=0.01,
                      seed=3, data="synthetic", monitor_size=50)
    full = train(cfg, data, tmp_path / "full", progress=False)
    cut = TrainConfig(**{**cfg.__dict__, "epochs": 1})
    train(cut, data, tmp_path / "cut", progress=False)
    assert latest_checkpoint(tmp_path / "cut").name == "epoch-001.npz"
    resumed = train(cfg, data, tmp_path / "cut", progress=False)
    _arrays_equal(full.params, resumed.params)
    a = load_checkpoint(latest_checkpoint(tmp_path / "full"))
    b = load_checkpoint(latest_checkpoint(tmp_path / "cut"))
    assert a.opt_state.step == b.opt_state.step == 3 * 3
    assert a.rng_state == b.rng_state
    for slot in ("m", "v") if optimizer == "adam" else ("velocity",):
        for name, arr in getattr(a.opt_state, slot).items():
            np.testing.assert_array_equal(host(arr), host(getattr(b.opt_state, slot)[name]))
    errors = lambda log: [e["validation_error"] for e in log["epochs"]]  # noqa: E731
    assert errors(full.log) == errors(resumed.log)
    log = json.loads((tmp_path / "cut" / "log.json").read_text())
    assert log["finished"] and [e["epoch"] for e in log["epochs"]] == [0, 1, 2, 3]
    assert len(log["steps"]) == 3 and len(log["steps"][0]["objective"]) == 3


def test_resume_refuses_another_configuration(tmp_path):
    data = synthetic_digits(60, 20, 20, seed=0)
    cfg = TrainConfig(model="dcn", net=NARROW, epochs=1, batch_size=30, data="synthetic")
    train(cfg, data, tmp_path, progress=False)
    other = TrainConfig(model="dcn", net=NARROW, epochs=2, batch_size=30, data="synthetic", lr=0.5)
    with pytest.raises(ValueError, match="another configuration"):
        train(other, data, tmp_path, progress=False)


def test_corrupted_checkpoint_is_detected(tmp_path):
    data = synthetic_digits(60, 20, 20, seed=0)
    train(TrainConfig(model="dcn", net=NARROW, epochs=1, batch_size=30, data="synthetic"), data, tmp_path,
          progress=False)
    path = latest_checkpoint(tmp_path)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


def test_eg_log_traces_rc_after_e_and_m_steps(tmp_path):
    data = synthetic_digits(100, 40, 40, seed=2)
    res = train(TrainConfig(model="drmm", net=NARROW, epochs=2, batch_size=50, data="synthetic", monitor_size=40),
                data, tmp_path, progress=False)
    ep = res.log["epochs"][-1]
    for key in ("mean_rc_after_e", "mean_ce", "mean_nn", "noise_variance", "monitor"):
        assert ep[key] is not None, key
    assert "rc_after_m" in ep["monitor"] and isinstance(ep["monitor"]["e_step_raised_rc"], bool)
    assert len(ep["switch_prior"]) == 2 and abs(sum(ep["class_prior"]) - 1) < 1e-9
    steps = res.log["steps"][-1]  # the per-step trace after the M-step is off in training (EGConfig)
    assert all(v is None for v in steps["rc_after_m"]) and ep["mean_rc_after_m"] is None


@pytest.mark.parametrize("model", ["dcn", "drmm"])
def test_smoke_run_on_1000_images_beats_chance(tmp_path, model):
    data = synthetic_digits(1000, 500, 500, seed=0)
    res = train(TrainConfig(model=model, net=NARROW, epochs=1, batch_size=50, lr=3e-3, data="synthetic",
                            monitor_size=100), data, tmp_path, progress=False)
    err = res.log["epochs"][-1]["test_error"]
    assert res.log["epochs"][0]["test_error"] > 0.6  # chance level before training
    # chance is 0.9; with 500 test images its standard deviation is ~0.013
    assert err < 0.5, err


def test_trainer_runs_on_array_api_strict_with_block_steps(tmp_path):
    """The whole EG loop (E-step, G-step, CGLS block steps, closed forms, checkpoint) stays inside the standard."""
    data = synthetic_digits(40, 20, 20, seed=4)
    tiny = Network((1, 28, 28), (Layer(2, 5, 0, 2), Layer(3, 5, 0, 2)), n_classes=10, name="tiny28")
    cfg = TrainConfig(model="drmm", net=tiny, epochs=1, batch_size=20, data="synthetic", backend="array_api_strict",
                      cg_blocks=("filters_2", "class_templates"), k_cg=2, monitor_size=20, dtype="float64")
    res = train(cfg, data, tmp_path, progress=False)
    import array_api_strict

    from drmm_ref._backend import get_namespace

    assert get_namespace(res.params.class_templates) is get_namespace(array_api_strict.asarray(0.0))
    assert res.log["epochs"][-1]["monitor"]["rc_after_m"] is not None
    ck = load_checkpoint(latest_checkpoint(tmp_path), xp="array_api_strict")
    _arrays_equal(ck.params, res.params)


def test_checkpoint_checksum_keeps_0d_arrays_0d_regression(tmp_path):
    """Regression: unifying the checksum helpers once hashed 0-d arrays as shape (1,), so every
    checkpoint written before (the em-vs-backprop runs' included) failed its checksum. The stored
    checksum must stay the documented one: sha256 over each array's name, dtype, own shape and bytes."""
    from drmm_ref.learning.checkpoint import load_checkpoint

    data = synthetic_digits(20, 10, 10, seed=2)
    tiny = Network((1, 28, 28), (Layer(2, 5, 0, 2),), n_classes=10, name="tiny28-1")
    train(TrainConfig(model="drmm", net=tiny, epochs=1, batch_size=10, data="synthetic", monitor_size=10), data,
          tmp_path, progress=False)
    path = latest_checkpoint(tmp_path)
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["__meta__"]))
        arrays = {name: np.array(z[name]) for name in z.files if name != "__meta__"}
    assert any(a.ndim == 0 for a in arrays.values())  # noise_variance (and the optimiser's step) are 0-d
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = arrays[name]
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    assert meta["checksum"] == h.hexdigest()
    assert load_checkpoint(path).epoch == int(path.stem.split("-")[1])  # epoch-NNN.npz


def test_resuming_with_another_thread_count_warns(tmp_path):
    """A run's numbers depend on its thread count: resuming with another one says so (and still trains)."""
    data = synthetic_digits(120, 40, 40, seed=3)
    cfg = TrainConfig(model="drmm", net=NARROW, epochs=1, batch_size=40, data="synthetic", monitor_size=0)
    train(cfg, data, tmp_path, progress=False, threads=2)
    longer = dataclasses.replace(cfg, epochs=2)
    with pytest.warns(RuntimeWarning, match="2 thread"):
        res = train(longer, data, tmp_path, progress=False, threads=1)
    assert res.log["epochs"][-1]["epoch"] == 2 and res.log["epochs"][-1]["threads"] == 1


def test_runs_record_subnormal_flushing_and_a_resume_with_the_other_setting_warns(tmp_path):
    """Each epoch says whether subnormals were flushed; off or on, a run's numbers agree far above ``tiny``."""
    from drmm_ref.backend import flush_denormals_problem

    data = synthetic_digits(120, 40, 40, seed=3)
    cfg = TrainConfig(model="drmm", net=NARROW, epochs=1, batch_size=40, data="synthetic", monitor_size=0)
    on = train(cfg, data, tmp_path / "on", progress=False, threads=1)
    off = train(cfg, data, tmp_path / "off", progress=False, threads=1, flush_denormals=False)
    supported = flush_denormals_problem() is None
    assert on.log["epochs"][-1]["flush_denormals"] is supported
    assert off.log["epochs"][-1]["flush_denormals"] is False
    ta, tb = trainable(on.params), trainable(off.params)
    for name in ta:
        np.testing.assert_allclose(host(ta[name]), host(tb[name]), rtol=1e-5, atol=1e-7, err_msg=name)
    if supported:
        with pytest.warns(RuntimeWarning, match="subnormal flushing off"):
            res = train(dataclasses.replace(cfg, epochs=2), data, tmp_path / "off", progress=False, threads=1)
        assert [e.get("flush_denormals") for e in res.log["epochs"]] == [None, False, True]
