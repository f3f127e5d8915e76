"""One model file format (drmm_ref.io): a checkpoint is a parameter file plus the training state; load_params
reads both (and the former drmm_ref.checkpoint files), load_checkpoint only checkpoints; every file ever
written (results/, former versions 1 and 2) still reads; damage is always a clear error."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from drmm_ref.drmm import Layer, Network
from drmm_ref.io import (FORMAT, CheckpointError, DRMMFileError, NoTrainingState, load_checkpoint, load_params,
                         save_checkpoint, save_params)
from drmm_ref.learning import TrainConfig, latest_checkpoint, synthetic_digits, train, trainable
from drmm_ref.learning.trainer import MID_EPOCH_CHECKPOINT

from ._helpers import host

ROOT = Path(__file__).resolve().parent.parent
LEGACY = Path(__file__).resolve().parent / "data" / "legacy"
COMMITTED = ROOT / "results" / "runs" / "ssl-mnist" / "conv-small-drmm-ce-rc-nn-h-nl100-seed0-epochs5" / \
    "params-epoch-005.npz"
TINY28 = Network((1, 28, 28), (Layer(2, 5, 0, 2), Layer(3, 5, 0, 2)), n_classes=10, name="tiny28")
#: The configuration of the former-format files in tests/data/legacy (see the README there).
LEGACY_CONFIG = dict(model="drmm", net=TINY28, epochs=2, batch_size=10, data="synthetic", n_train=60, n_eval=20,
                     monitor_size=10, checkpoint_every_steps=4, checkpoint_every_seconds=None)


def _raw(path):
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: np.array(z[k]) for k in z.files}
    return json.loads(str(arrays.pop("__meta__"))), arrays


def _same_params(a, b):
    ta, tb = trainable(a), trainable(b)
    assert a.net == b.net and a.noise_variance == b.noise_variance
    for name in ta:
        np.testing.assert_array_equal(host(ta[name]), host(tb[name]), err_msg=name)
    for name in ("class_prior", "switch_prior"):
        np.testing.assert_array_equal(host(getattr(a, name)), host(getattr(b, name)), err_msg=name)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny EG run with an epoch checkpoint and a mid-epoch one (interrupted in epoch 2)."""
    out = tmp_path_factory.mktemp("run")
    data = synthetic_digits(60, 20, 20, seed=0)
    train(TrainConfig(**{**LEGACY_CONFIG, "epochs": 1}), data, out, progress=False, threads=1)
    from drmm_ref.learning import fit_loop

    real, calls = fit_loop.eg_step, {"n": 0}

    class Stop(Exception):
        pass

    def step(*a, **k):
        if calls["n"] == 5:
            raise Stop
        calls["n"] += 1
        return real(*a, **k)

    fit_loop.eg_step = step
    try:
        with pytest.raises(Stop):
            train(TrainConfig(**LEGACY_CONFIG), data, out, progress=False, threads=1)
    finally:
        fit_loop.eg_step = real
    assert (out / "checkpoints" / MID_EPOCH_CHECKPOINT).is_file()
    return out


# ----------------------------------------------------------------------------------- a checkpoint is a parameter file
@pytest.mark.parametrize("which", ["epoch", "mid"])
def test_a_checkpoint_is_the_parameter_file_plus_the_training_state(run, tmp_path, which):
    path = latest_checkpoint(run) if which == "epoch" else run / "checkpoints" / MID_EPOCH_CHECKPOINT
    ck = load_checkpoint(path)
    meta, arrays = _raw(path)
    pmeta, parrays = _raw(save_params(tmp_path / "p.npz", ck.params))
    assert set(parrays) <= set(arrays)  # the same arrays under the same names, bit for bit
    for name, a in parrays.items():
        assert a.dtype == arrays[name].dtype and a.shape == arrays[name].shape and a.tobytes() == arrays[name].tobytes()
    assert {k for k in arrays if k not in parrays} == {k for k in arrays if k.startswith(("opt/", "start/"))}
    assert set(pmeta) <= set(meta) and meta["format"] == pmeta["format"] == FORMAT
    assert (meta["kind"], pmeta["kind"]) == ("checkpoint", "params")
    assert all(meta[k] == pmeta[k] for k in ("version", "network", "dtype"))
    params, info = load_params(path, return_metadata=True)
    _same_params(params, ck.params)
    assert info["epoch"] == ck.epoch and info["config"] == ck.config
    assert info.get("mid_epoch_step") == (4 if which == "mid" else None)


def test_load_checkpoint_refuses_a_parameter_file_clearly(tmp_path, run):
    path = save_params(tmp_path / "p.npz", load_checkpoint(latest_checkpoint(run)).params, metadata={"a": 1})
    with pytest.raises(NoTrainingState, match="p.npz: a parameter file without training state.*load_params"):
        load_checkpoint(path)
    assert issubclass(NoTrainingState, CheckpointError) and issubclass(CheckpointError, DRMMFileError)


def test_the_meta_of_a_parameter_file_is_checksummed_too(tmp_path, run):
    path = save_params(tmp_path / "p.npz", load_checkpoint(latest_checkpoint(run)).params, metadata={"epoch": 3})
    meta, arrays = _raw(path)
    meta["metadata"]["epoch"] = 30
    with open(path, "wb") as fh:
        np.savez(fh, __meta__=np.asarray(json.dumps(meta)), **arrays)
    with pytest.raises(DRMMFileError, match="meta checksum mismatch"):
        load_params(path)


def test_byte_flips_in_a_mid_epoch_checkpoint_are_caught_by_both_loaders(run, tmp_path):
    path = run / "checkpoints" / MID_EPOCH_CHECKPOINT
    raw, ref = path.read_bytes(), load_checkpoint(path)
    rng = np.random.default_rng(1)
    bad = tmp_path / "bad.npz"
    errors = 0
    for i in range(150):
        data = bytearray(raw)
        if i < 120:
            j = int(rng.integers(len(data)))
            data[j] ^= int(rng.integers(1, 256))
        else:
            data = data[:int(rng.integers(len(data)))]
        bad.write_bytes(bytes(data))
        try:
            ck = load_checkpoint(bad)
        except CheckpointError as exc:
            assert str(bad) in str(exc)
            errors += 1
            with pytest.raises(DRMMFileError, match="bad.npz"):
                load_params(bad)
        else:  # a flip in the zip's padding: the very same checkpoint
            _same_params(ck.params, ref.params)
            assert ck.history == ref.history and ck.mid_epoch == ref.mid_epoch and ck.rng_state == ref.rng_state
    assert errors > 100


# ----------------------------------------------------------------------------------- files of every earlier version
def test_the_committed_parameter_file_reads_as_a_model_not_as_a_checkpoint():
    params, meta = load_params(COMMITTED, return_metadata=True)
    assert params.net.name == "conv-small" and meta["epoch"] == 5 and meta["config"]["n_labels"] == 100
    with pytest.raises(NoTrainingState, match="without training state"):
        load_checkpoint(COMMITTED)


@pytest.mark.parametrize("name,epoch,mid", [("checkpoint-v1-epoch-001.npz", 1, None),
                                            ("checkpoint-v2-epoch-001.npz", 1, None),
                                            ("checkpoint-v2-mid-epoch.npz", 1, 4)])
def test_former_checkpoints_read_with_both_loaders(tmp_path, name, epoch, mid):
    path = LEGACY / name
    meta, arrays = _raw(path)
    assert meta["format"] == "drmm_ref.checkpoint"  # written by the former writer (tests/data/legacy/README.md)
    ck = load_checkpoint(path)
    assert ck.epoch == epoch and (ck.mid_epoch or {}).get("step") == mid and ck.lr_schedule is None
    np.testing.assert_array_equal(host(ck.params.class_templates), arrays["param/class_templates"])
    np.testing.assert_array_equal(host(ck.opt_state.m["filters_1"]), arrays["opt/m/filters_1"])
    assert (ck.start_params is not None) == (mid is not None)
    _same_params(load_params(path), ck.params)
    again = load_checkpoint(save_checkpoint(tmp_path / name, ck))  # written again in the current format
    assert _raw(tmp_path / name)[0]["format"] == FORMAT
    _same_params(again.params, ck.params)
    assert again.history == ck.history and again.mid_epoch == ck.mid_epoch and again.rng_state == ck.rng_state


def test_a_flipped_byte_in_a_former_checkpoint_is_caught(tmp_path):
    raw = (LEGACY / "checkpoint-v1-epoch-001.npz").read_bytes()
    rng = np.random.default_rng(3)
    folder = tmp_path
    caught = 0
    for i in range(60):
        data = bytearray(raw)
        data[int(rng.integers(len(data)))] ^= 0xFF
        (folder / "bad.npz").write_bytes(bytes(data))
        try:
            load_checkpoint(folder / "bad.npz")
        except CheckpointError:
            caught += 1
    assert caught >= 55


def test_resuming_from_a_former_mid_epoch_checkpoint_equals_resuming_from_its_rewrite(tmp_path):
    """A run resumes from a version-2 mid-epoch checkpoint, and the same checkpoint rewritten in the current
    format gives a bit-identical run: the former file carries everything a resume needs."""
    data = synthetic_digits(60, 20, 20, seed=0)
    cfg = TrainConfig(**LEGACY_CONFIG)
    a, b = tmp_path / "former", tmp_path / "rewritten"
    for out in (a, b):
        (out / "checkpoints").mkdir(parents=True)
        shutil.copy(LEGACY / "checkpoint-v2-epoch-001.npz", out / "checkpoints" / "epoch-001.npz")
    shutil.copy(LEGACY / "checkpoint-v2-mid-epoch.npz", a / "checkpoints" / MID_EPOCH_CHECKPOINT)
    save_checkpoint(b / "checkpoints" / MID_EPOCH_CHECKPOINT, load_checkpoint(LEGACY / "checkpoint-v2-mid-epoch.npz"))
    ra = train(cfg, data, a, progress=False, threads=1)
    rb = train(cfg, data, b, progress=False, threads=1)
    _same_params(ra.params, rb.params)
    def untimed(log):
        return [{k: v for k, v in t.items() if k != "seconds"} for t in log["steps"]]

    assert untimed(ra.log) == untimed(rb.log) and ra.log["epochs"][-1]["steps"] == 6
    assert len(ra.log["steps"][-1]["objective"]) == 6  # 4 steps from the former file, 2 after the resume
    assert load_checkpoint(latest_checkpoint(a)).params.net.name == "tiny28"


def test_a_version_1_parameter_file_still_reads():
    params, meta = load_params(LEGACY / "params-v1.npz", return_metadata=True)
    assert _raw(LEGACY / "params-v1.npz")[0]["version"] == 1 and meta["epoch"] == 1
    _same_params(params, load_checkpoint(LEGACY / "checkpoint-v2-epoch-001.npz").params)
    with pytest.raises(NoTrainingState):
        load_checkpoint(LEGACY / "params-v1.npz")
