"""The pure fit loop (learning.fit_loop.fit): equal to the trainer's run, callbacks, arrays in memory, exact
continuation, divergence, bad input; and the learning-rate schedules it applies."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from drmm_ref.drmm import Layer, Network, init_params
from drmm_ref.learning import (UNLABELLED, Batches, EpochProgress, FitResult, LRSchedule, TrainConfig,
                               TrainingDiverged, fit, lr_schedule, synthetic_digits, train, trainable)
from drmm_ref.learning.semi import label_split

from ._helpers import host

TINY28 = Network((1, 28, 28), (Layer(2, 5, 0, 2), Layer(3, 5, 0, 2)), n_classes=10, name="tiny28")
DATA = synthetic_digits(60, 20, 20, seed=0)
X, Y = np.asarray(DATA.train.images), np.asarray(DATA.train.labels).astype(np.int64)


def _cfg(**kw):
    base = dict(model="drmm", net=TINY28, epochs=2, batch_size=12, data="synthetic", monitor_size=12, lr=0.01,
                n_train=60, n_eval=20, checkpoint_every_seconds=None)
    base.update(kw)
    return TrainConfig(**base)


def _init(cfg):
    return init_params(cfg.network, cfg.seed, dtype=cfg.dtype)


def _same_params(a, b):
    ta, tb = trainable(a), trainable(b)
    for name in ta:
        np.testing.assert_array_equal(host(ta[name]), host(tb[name]), err_msg=name)
    for name in ("class_prior", "switch_prior"):
        np.testing.assert_array_equal(host(getattr(a, name)), host(getattr(b, name)), err_msg=name)
    assert a.noise_variance == b.noise_variance


# ----------------------------------------------------------------------------------- fit == train
@pytest.mark.parametrize("kw", [dict(model="drmm"), dict(model="dcn"), dict(model="drmm", optimizer="sgd"),
                                dict(model="drmm", lr_schedule="step:1:0.5")])
def test_fit_on_arrays_equals_train_bit_for_bit(tmp_path, kw):
    """The trainer is a layer of files, logs and evaluation around fit: the same configuration, seed and
    threads give the same parameters, and fit's per-epoch summaries are the log's."""
    cfg = _cfg(**kw)
    ran = train(cfg, DATA, tmp_path, progress=False, threads=1)
    got = fit(_init(cfg), (X, Y), cfg, threads=1)
    assert isinstance(got, FitResult) and got.epoch == cfg.epochs
    _same_params(got.params, ran.params)
    for rec, logged in zip(got.history, ran.log["epochs"][1:]):
        assert rec["epoch"] == logged["epoch"] and rec["steps"] == logged["steps"] == 5
        assert rec["mean_objective"] == logged["mean_objective"]
        assert rec.get("class_prior") == logged.get("class_prior")
    assert [t["objective"] for t in ran.log["steps"]] == [r["step_trace"]["objective"] for r in got.history]


@pytest.mark.parametrize("model", ["drmm", "dcn"])
def test_fit_with_unlabelled_marks_equals_the_semi_supervised_run(tmp_path, model):
    """Labels UNLABELLED in the arrays make fit pair batches as the trainer does for n_labels (same split)."""
    cfg = _cfg(model=model, n_labels=10, epochs=1)
    ran = train(cfg, DATA, tmp_path, progress=False, threads=1)
    split = label_split(Y, 10, cfg.seed, 10)
    y = np.full_like(Y, UNLABELLED)
    y[split.labelled] = Y[split.labelled]
    got = fit(_init(cfg), (X, y), cfg, threads=1)
    _same_params(got.params, ran.params)


def test_fit_from_numpy_arrays_writes_no_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = TrainConfig(model="drmm", net=TINY28, epochs=1, batch_size=20, lr=0.01)  # data/file fields unused
    res = fit(_init(cfg), (X, Y), cfg, threads=1)
    assert os.listdir(tmp_path) == []
    assert res.history[0]["steps"] == 3 and res.history[0]["lr"] == 0.01
    assert abs(sum(res.history[0]["class_prior"]) - 1.0) < 1e-9
    assert not np.array_equal(host(res.params.class_templates), host(_init(cfg).class_templates))


# ----------------------------------------------------------------------------------- callbacks and continuation
def test_callback_sees_every_step_and_epoch_in_order():
    cfg = _cfg(lr_schedule="linear-decay:1", epochs=3)
    seen = []

    def callback(s):
        seen.append((s.kind, s.epoch, s.step, s.n_steps, s.lr, s.epoch_rng_state["state"]["state"],
                     s.progress.step, None if s.record is None else s.record["epoch"]))

    res = fit(_init(cfg), (X, Y), cfg, callback=callback, threads=1)
    steps = [e for e in seen if e[0] == "step"]
    ends = [e for e in seen if e[0] == "epoch"]
    assert len(steps) == 3 * 5 and [e[1] for e in ends] == [1, 2, 3] and [e[7] for e in ends] == [1, 2, 3]
    assert [e[2] for e in steps] == [1, 2, 3, 4, 5] * 3 and all(e[2] == e[6] and e[3] == 5 for e in steps)
    assert [e[4] for e in ends] == [0.01, 0.01 * (2 / 3), 0.01 * (1 / 3)] == [r["lr"] for r in res.history]
    for epoch in (1, 2, 3):  # one generator state per epoch: the one its schedule was drawn from
        assert len({e[5] for e in seen if e[1] == epoch}) == 1


def test_a_callback_that_raises_stops_the_fit():
    class Stop(Exception):
        pass

    def callback(s):
        if s.kind == "step" and s.step == 2:
            raise Stop

    with pytest.raises(Stop):
        fit(_init(_cfg()), (X, Y), _cfg(), callback=callback, threads=1)


def test_continuing_a_fit_between_and_inside_epochs_is_bit_identical():
    """fit(epochs=1) then fit(epoch=1, ...) equals fit(epochs=2); and from a mid-epoch position (what a
    mid-epoch checkpoint stores: the progress, the optimiser state and the generator at the epoch's start)."""
    cfg = _cfg(epochs=2)
    whole = fit(_init(cfg), (X, Y), cfg, threads=1)
    first = fit(_init(cfg), (X, Y), dataclasses.replace(cfg, epochs=1), threads=1)
    second = fit(first.params, (X, Y), cfg, optimizer_state=first.opt_state, rng=first.rng_state, epoch=1, threads=1)
    _same_params(whole.params, second.params)
    assert second.rng_state == whole.rng_state and [r["epoch"] for r in second.history] == [2]

    saved = {}

    class Stop(Exception):
        pass

    def kill_at_step_3_of_epoch_2(s):
        if s.kind == "step" and (s.epoch, s.step) == (2, 3):
            saved.update(progress=s.progress.to_json(s.epoch), start=s.progress.start_params, params=s.params,
                         opt=s.opt_state, rng=s.epoch_rng_state)
            raise Stop

    with pytest.raises(Stop):
        fit(_init(cfg), (X, Y), cfg, callback=kill_at_step_3_of_epoch_2, threads=1)
    resumed = fit(saved["params"], (X, Y), cfg, optimizer_state=saved["opt"], rng=saved["rng"], epoch=1,
                  partial=EpochProgress.from_json(saved["progress"], saved["start"]), threads=1)
    _same_params(whole.params, resumed.params)
    assert resumed.history[0]["step_trace"]["objective"] == whole.history[1]["step_trace"]["objective"]


def test_fit_does_not_advance_a_generator_it_is_given():
    rng = np.random.default_rng(5)
    before = rng.bit_generator.state
    a = fit(_init(_cfg()), (X, Y), _cfg(epochs=1), rng=rng, threads=1)
    assert rng.bit_generator.state == before
    b = fit(_init(_cfg()), (X, Y), _cfg(epochs=1), rng=5, threads=1)
    _same_params(a.params, b.params)


# ----------------------------------------------------------------------------------- divergence and bad input
def test_divergence_names_epoch_step_and_term_without_a_checkpoint():
    cfg = _cfg(optimizer="sgd", momentum=0.0, lr=1e7)
    with pytest.raises(TrainingDiverged, match=r"training diverged at epoch \d+, step \d+") as info:
        fit(_init(cfg), (X, Y), cfg, threads=1)
    assert info.value.checkpoint is None and "checkpoint" not in str(info.value)
    assert info.value.term in ("objective", "ce", "rc", "nn", "parameters")


@pytest.mark.parametrize("change,match", [
    (lambda x, y: (x.astype(np.float64), y, "float64"), "params are float64 but config.dtype is float32"),
    (lambda x, y: (np.where(np.arange(x.size).reshape(x.shape) == 7, np.nan, x), y, None), "NaN or inf"),
    (lambda x, y: (x, np.where(y == 3, 10, y), None), r"labels must lie in 0\.\.9"),
    (lambda x, y: (x, np.where(y == 3, -2, y), None), r"labels must lie in 0\.\.9 \(or -1"),
    (lambda x, y: (x[:, :, :20], y, None), "network 'tiny28' needs"),
    (lambda x, y: (x, y.astype(np.float32), None), "labels must be a 1-D integer array"),
    (lambda x, y: (x, y[:-1], None), "images of shape"),
])
def test_bad_arrays_are_clear_errors(change, match):
    x, y, dtype = change(X, Y)
    cfg = _cfg()
    params = init_params(TINY28, 0, dtype=dtype or "float32")
    with pytest.raises(ValueError, match=match):
        fit(params, (x, y), cfg, threads=1)


def test_bad_arguments_are_clear_errors():
    cfg = _cfg()
    with pytest.raises(TypeError, match="params must be DRMMParams"):
        fit({"filters": []}, (X, Y), cfg)
    with pytest.raises(TypeError, match="config must be a TrainConfig"):
        fit(_init(cfg), (X, Y), {"epochs": 1})
    with pytest.raises(TypeError, match="batches must be a Batches or an"):
        fit(_init(cfg), X, cfg)
    with pytest.raises(ValueError, match="epoch must be an integer in 0..config.epochs=2"):
        fit(_init(cfg), (X, Y), cfg, epoch=3)
    with pytest.raises(TypeError, match="rng must be"):
        fit(_init(cfg), (X, Y), cfg, rng="seed")
    with pytest.raises(ValueError, match="DCN needs labelled images"):
        fit(_init(cfg), (X, np.full_like(Y, UNLABELLED)), _cfg(model="dcn"))


def test_batches_cut_an_epoch_as_documented():
    b = Batches.from_arrays(X, Y, 25)
    plan = b.schedule(np.random.default_rng(0))
    assert b.n_batches == len(plan) == 3 and sorted(np.concatenate([p[0] for p in plan]).tolist()) == list(range(60))
    y = Y.copy()
    y[10:] = UNLABELLED
    paired = Batches.from_arrays(X, y, 25)
    assert paired.split.labelled.tolist() == list(range(10)) and paired.n_batches == 2  # 50 unlabelled images


# ----------------------------------------------------------------------------------- learning-rate schedules
@given(epochs=st.integers(1, 40), start=st.integers(0, 39), lr=st.floats(1e-6, 1.0))
def test_linear_decay_holds_lr_until_start_then_falls_on_a_line_to_zero_after_the_last_epoch(epochs, start, lr):
    if start >= epochs:
        with pytest.raises(ValueError, match="START_EPOCH below epochs"):
            lr_schedule(f"linear-decay:{start}").check_epochs(epochs)
        return
    s = lr_schedule(f"linear-decay:{start}")
    rates = [s.lr_at(lr, e, epochs) for e in range(1, epochs + 1)]
    assert rates[:start] == [lr] * start
    assert all(b <= a for a, b in zip(rates, rates[1:])) and rates[-1] > 0
    np.testing.assert_allclose(rates[-1], lr / (epochs + 1 - start), rtol=1e-12)
    steps = np.diff([lr] + rates[start:] + [0.0])  # the points (S, lr), (S+1, .), ..., (E+1, 0) lie on one line
    np.testing.assert_allclose(steps, steps[0], rtol=1e-9, atol=1e-15)


@given(every=st.integers(1, 5), factor=st.floats(0.01, 1.0), epochs=st.integers(1, 20))
def test_step_schedule_multiplies_by_factor_every_k_epochs(every, factor, epochs):
    s = lr_schedule(f"step:{every}:{factor!r}")
    assert lr_schedule(s.spec) == s  # the canonical form parses back to the same schedule
    for e in range(1, epochs + 1):
        assert s.lr_at(0.1, e, epochs) == 0.1 * factor ** ((e - 1) // every)


def test_constant_schedule_is_the_rate_itself_and_bad_schedules_are_errors():
    assert lr_schedule(None) == lr_schedule("constant") == LRSchedule()
    assert lr_schedule("constant").lr_at(0.1234567, 7, 9) == 0.1234567
    for bad, match in (("linear", "must be 'constant'"), ("step:0:0.5", "EVERY must be an integer >= 1"),
                       ("step:2:1.5", r"FACTOR must be a number in \(0, 1\]"), ("step:2:nan", "FACTOR"),
                       ("linear-decay:x", "START_EPOCH must be an integer >= 0")):
        with pytest.raises(ValueError, match=match):
            TrainConfig(net=TINY28, lr_schedule=bad)
    with pytest.raises(ValueError, match="starts its decay after epoch 5, but the run has 5 epoch"):
        TrainConfig(net=TINY28, epochs=5, lr_schedule="linear-decay:5")


# ----------------------------------------------------------------------------------- schedules in the trainer
def test_a_constant_rate_run_logs_and_stores_its_configuration_as_before(tmp_path):
    cfg = _cfg(epochs=1, model="dcn")
    assert "lr_schedule" not in cfg.to_dict() and TrainConfig.from_dict(cfg.to_dict()).lr_schedule == "constant"
    res = train(cfg, DATA, tmp_path, progress=False, threads=1)
    assert "lr_schedule" not in res.log["config"] and all("lr" not in e for e in res.log["epochs"])
    assert _cfg(lr_schedule="step:1:0.5").to_dict()["lr_schedule"] == "step:1:0.5"


def _interrupt_after(monkeypatch, n):
    from drmm_ref.learning import fit_loop

    calls = {"n": 0}

    class Stop(Exception):
        pass

    for name in ("eg_step", "backprop_step"):
        real = getattr(fit_loop, name)

        def wrapped(*a, _real=real, **k):
            if calls["n"] >= n:
                raise Stop
            calls["n"] += 1
            return _real(*a, **k)

        monkeypatch.setattr(fit_loop, name, wrapped)
    return Stop


@pytest.mark.parametrize("schedule,cut", [("linear-decay:1", 12), ("step:1:0.5", 8)])
def test_a_scheduled_run_resumed_mid_epoch_is_bit_identical_and_logs_its_rates(tmp_path, monkeypatch, schedule, cut):
    from drmm_ref.learning import load_checkpoint
    from drmm_ref.learning.trainer import MID_EPOCH_CHECKPOINT, resume_point

    cfg = _cfg(epochs=3, lr_schedule=schedule, checkpoint_every_steps=2)
    full = train(cfg, DATA, tmp_path / "full", progress=False, threads=1)
    rates = [cfg.schedule.lr_at(cfg.lr, e, 3) for e in (1, 2, 3)]
    assert [e["lr"] for e in full.log["epochs"][1:]] == rates and rates[2] < rates[0]
    with monkeypatch.context() as m:
        stop = _interrupt_after(m, cut)
        with pytest.raises(stop):
            train(cfg, DATA, tmp_path / "cut", progress=False, threads=1)
    point = resume_point(tmp_path / "cut")
    assert point.name == MID_EPOCH_CHECKPOINT
    ck = load_checkpoint(point)
    assert ck.lr_schedule == {"schedule": schedule, "epoch": ck.epoch + 1, "lr": rates[ck.epoch]}
    resumed = train(cfg, DATA, tmp_path / "cut", progress=False, threads=1)
    _same_params(full.params, resumed.params)
    strip = ("seconds", "train_seconds", "cumulative_train_seconds", "train_cpu_seconds",
             "cumulative_train_cpu_seconds", "wall_seconds", "trace_seconds")
    assert ([{k: v for k, v in e.items() if k not in strip} for e in full.log["epochs"]]
            == [{k: v for k, v in e.items() if k not in strip} for e in resumed.log["epochs"]])


def test_epochs_may_not_change_on_resume_when_the_schedule_depends_on_them(tmp_path):
    from drmm_ref.learning.trainer import FolderInUse

    train(_cfg(epochs=2, lr_schedule="linear-decay:1", model="dcn"), DATA, tmp_path / "a", progress=False)
    with pytest.raises(FolderInUse, match=r"differs in \['epochs'\]"):
        train(_cfg(epochs=3, lr_schedule="linear-decay:1", model="dcn"), DATA, tmp_path / "a", progress=False)
    train(_cfg(epochs=1, lr_schedule="step:1:0.5", model="dcn"), DATA, tmp_path / "b", progress=False)
    res = train(_cfg(epochs=2, lr_schedule="step:1:0.5", model="dcn"), DATA, tmp_path / "b", progress=False)
    assert [e["lr"] for e in res.log["epochs"][1:]] == [0.01, 0.005]
    with pytest.raises(FolderInUse, match=r"differs in \['lr_schedule'\]"):
        train(_cfg(epochs=3, model="dcn"), DATA, tmp_path / "b", progress=False)


def test_an_edited_schedule_position_is_refused_on_resume(tmp_path):
    import json

    from drmm_ref.io.params import meta_checksum
    from drmm_ref.learning import CheckpointError, latest_checkpoint

    cfg = _cfg(epochs=1, lr_schedule="step:1:0.5", model="dcn")
    train(cfg, DATA, tmp_path, progress=False)
    path = latest_checkpoint(tmp_path)
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: np.array(z[k]) for k in z.files}
    meta = json.loads(str(arrays.pop("__meta__")))
    meta["lr_schedule"]["lr"] = 0.02
    meta["meta_checksum"] = meta_checksum(meta)  # resealed: only the consistency check can see it
    with open(path, "wb") as fh:
        np.savez(fh, __meta__=np.asarray(json.dumps(meta)), **arrays)
    with pytest.raises(CheckpointError, match="learning-rate schedule stood at 'step:1:0.5', epoch 1, lr 0.02"):
        train(dataclasses.replace(cfg, epochs=2), DATA, tmp_path, progress=False)
