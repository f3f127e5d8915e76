"""The whole-set M-step wired into training (SPEC §3): ``TrainConfig.m_step = "whole-set"``, ``drmm-ref train
--m-step whole-set``.

An epoch is the mini-batch EG pass followed by the DRMM's EM M-step over the whole training set
(E-step over every image, closed forms, one exact CGLS block step per block at those latents). The
block steps themselves are checked against ``block_step`` in ``tests/test_whole_set.py``; here: the
wiring (config, fit, train, CLI, log, resume) and that the logged RC is the RC at the E-step's latents,
recomputed by ``drmm.render``, not by the CGLS code.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from drmm_ref.cli import main
from drmm_ref.drmm import Layer, Network, init_params, render
from drmm_ref.learning import (UNLABELLED, Batches, TrainConfig, block_names, e_step, fit, latest_checkpoint,
                               load_checkpoint, reconstruction, synthetic_digits, train, trainable)
from drmm_ref.learning.fit_loop import whole_set_update

from ._helpers import host

TINY = Network((1, 28, 28), (Layer(2, 5, 0, 2), Layer(3, 5, 0, 2)), n_classes=10, name="tiny28")
NEW_FIELDS = ("m_step", "chunk_size", "m_step_blocks", "m_step_latents")


def _config(**kw):
    base = dict(model="drmm", net=TINY, epochs=2, batch_size=20, data="synthetic", monitor_size=20, dtype="float64",
                lr=0.01, seed=5, m_step="whole-set", chunk_size=16, k_cg=3)
    return TrainConfig(**{**base, **kw})


def _assert_params_equal(a, b):
    ta, tb = trainable(a), trainable(b)
    for name in ta:
        np.testing.assert_array_equal(host(ta[name]), host(tb[name]), err_msg=name)
    for name in ("class_prior", "switch_prior"):
        np.testing.assert_array_equal(host(getattr(a, name)), host(getattr(b, name)), err_msg=name)
    assert a.noise_variance == b.noise_variance


def _check_whole_set_record(ws, blocks):
    assert [b["block"] for b in ws["blocks"]] == list(blocks)
    for b in ws["blocks"]:
        assert b["rc_after"] <= b["rc_before"], b  # a block step never raises RC at fixed latents
    assert ws["rc_m_step"] == ws["blocks"][-1]["rc_after"]
    assert ws["rc_m_step"] <= ws["blocks"][0]["rc_before"]
    # the first block starts at the E-step's rendering (the closed forms do not change it)
    assert ws["blocks"][0]["rc_before"] == pytest.approx(ws["rc_e_step"], rel=1e-9)
    assert ws["seconds"] > 0 and ws["cpu_seconds"] >= 0 and ws["latent_bytes"] > 0


# ------------------------------------------------------------------------------------------- configuration
def test_default_configuration_is_unchanged():
    d = TrainConfig().to_dict()
    assert not set(NEW_FIELDS) & set(d)
    assert TrainConfig.from_dict(d) == TrainConfig()
    cfg = _config(m_step_blocks=("class_templates", "filters_1"), m_step_latents="recompute")
    d = cfg.to_dict()
    assert d["m_step"] == "whole-set" and d["chunk_size"] == 16 and d["m_step_blocks"] == ["class_templates",
                                                                                              "filters_1"]
    assert json.loads(json.dumps(d)) == d and TrainConfig.from_dict(d).to_dict() == d
    assert _config(chunk_size=500).to_dict().get("chunk_size") is None  # a default is left out
    assert _config().whole_set_blocks == block_names(TINY.L)


@pytest.mark.parametrize("kw,match", [
    ({"m_step": "whole"}, "m_step must be one of"),
    ({"model": "dcn"}, "needs model='drmm'"),
    ({"relu_topdown": True}, "relu_topdown"),
    ({"chunk_size": 0}, "chunk_size"),
    ({"m_step_blocks": ("filters_9",)}, "m_step_blocks"),
    ({"m_step_blocks": ()}, "m_step_blocks"),
    ({"m_step_blocks": ("filters_1", "filters_1")}, "m_step_blocks"),
    ({"m_step_latents": "kept"}, "m_step_latents"),
    ({"m_step": "g-step", "chunk_size": 100}, "chunk_size"),
    ({"m_step": "g-step", "m_step_latents": "recompute"}, "m_step_latents"),
])
def test_bad_whole_set_settings_are_refused_naming_the_field(kw, match):
    with pytest.raises(ValueError, match=match):
        _config(**kw)


# ------------------------------------------------------------------------------------------- the M-step
def _data(n, seed):
    rng = np.random.default_rng(seed)
    return rng.random((n,) + TINY.image_shape), rng.integers(0, TINY.n_classes, size=n)


def test_logged_rc_is_the_rc_at_the_e_step_latents_recomputed_by_render():
    """``rc_before`` / ``rc_m_step`` against ``drmm.render`` at the latents of ``e_step`` on all images."""
    params = init_params(TINY, 2, dtype="float64", bias_scale=0.05)
    x, y = _data(37, 2)
    cfg = _config(chunk_size=10)
    new, stats, ws = whole_set_update(params, Batches.from_arrays(x, y, 20), cfg)
    _check_whole_set_record(ws, block_names(TINY.L))
    est = e_step(params, x, y)
    before = float(reconstruction(x, render(params, est.classes, est.latents).image)[0])
    after = float(reconstruction(x, render(new, est.classes, est.latents).image)[0])
    assert ws["blocks"][0]["rc_before"] == pytest.approx(before, rel=1e-10)
    assert ws["rc_m_step"] == pytest.approx(after, rel=1e-10)
    assert after < before  # the filters and templates did move
    assert stats.pixels == x.size and stats.class_counts.sum() == 37
    np.testing.assert_allclose(host(new.class_prior), np.bincount(y, minlength=10) / 37, atol=1e-6)


def test_unlabelled_images_render_from_the_prediction_not_their_hidden_labels():
    params = init_params(TINY, 3, dtype="float64", bias_scale=0.05)
    x, y = _data(24, 3)
    cfg = _config(chunk_size=7, m_step_blocks=("class_templates",))
    split_batches = lambda labels: Batches.from_arrays(x, labels, 8)  # noqa: E731
    masked = y.copy()
    masked[10:] = UNLABELLED
    base = split_batches(masked)
    assert base.split is not None
    other = Batches(x, np.where(np.arange(24) < 10, y, (y + 1) % 10), 8, base.split)  # other hidden labels
    a, _, ra = whole_set_update(params, base, cfg)
    b, _, rb = whole_set_update(params, other, cfg)
    _assert_params_equal(a, b)
    assert ra["rc_m_step"] == rb["rc_m_step"]
    c, _, _ = whole_set_update(params, Batches.from_arrays(x, y, 8), cfg)  # all labelled: another rendering
    assert not np.array_equal(host(a.class_templates), host(c.class_templates))


# ------------------------------------------------------------------------------------------- fit, train, CLI
def test_whole_set_training_runs_and_logs_each_epoch(tmp_path):
    data = synthetic_digits(40, 20, 20, seed=4)
    cfg = _config()
    res = train(cfg, data, tmp_path, progress=False)
    epochs = res.log["epochs"][1:]
    assert [e["epoch"] for e in epochs] == [1, 2]
    for rec in epochs:
        _check_whole_set_record(rec["whole_set"], block_names(TINY.L))
        assert rec["train_seconds"] >= rec["whole_set"]["seconds"]
        assert rec["steps"] == 2  # the mini-batch G-step pass still runs (CE trains)
    assert res.log["config"]["m_step"] == "whole-set"
    # the checkpoint is written after the M-step
    _assert_params_equal(load_checkpoint(latest_checkpoint(tmp_path)).params, res.params)
    # train is the fit loop plus files: the same parameters from fit on the same arrays
    xtr, ytr = np.asarray(data.train.images), np.asarray(data.train.labels)
    fitted = fit(init_params(TINY, cfg.seed, dtype="float64"), (xtr, ytr), cfg, threads=res.log["epochs"][1]["threads"])
    _assert_params_equal(fitted.params, res.params)
    assert fitted.history[-1]["whole_set"]["rc_m_step"] == epochs[-1]["whole_set"]["rc_m_step"]


def test_whole_set_resume_is_bit_identical(tmp_path):
    data = synthetic_digits(40, 20, 20, seed=6)
    cfg = _config(m_step_latents="recompute", m_step_blocks=("filters_2", "class_templates"))
    full = train(cfg, data, tmp_path / "full", progress=False)
    train(_config(**{**cfg.__dict__, "epochs": 1}), data, tmp_path / "cut", progress=False)
    assert latest_checkpoint(tmp_path / "cut").name == "epoch-001.npz"
    resumed = train(cfg, data, tmp_path / "cut", progress=False)
    _assert_params_equal(full.params, resumed.params)
    ws = lambda log: [e["whole_set"]["blocks"] for e in log["epochs"][1:]]  # noqa: E731
    assert ws(full.log) == ws(resumed.log)
    a, b = (load_checkpoint(latest_checkpoint(tmp_path / k)) for k in ("full", "cut"))
    assert a.rng_state == b.rng_state and a.opt_state.step == b.opt_state.step


def test_cli_whole_set(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--model", "drmm", "--net", "small2", "--epochs", "2", "--seed", "1", "--out", str(out),
            "--data", "synthetic", "--n-train", "24", "--n-eval", "20", "--batch-size", "12", "--no-progress",
            "--m-step", "whole-set", "--chunk-size", "10", "--k-cg", "2", "--threads", "1"]
    assert main(args) == 0
    log = json.loads((out / "log.json").read_text())
    assert log["config"]["m_step"] == "whole-set" and log["config"]["chunk_size"] == 10
    for rec in log["epochs"][1:]:
        _check_whole_set_record(rec["whole_set"], ("filters_1", "filters_2", "class_templates"))
    capsys.readouterr()
    bad = ["train", "--model", "drmm", "--epochs", "1", "--out", str(tmp_path / "bad"), "--chunk-size", "10"]
    assert main(bad) == 2
    err = capsys.readouterr().err
    assert "chunk_size" in err and "--chunk-size" in err and "--m-step" in err
