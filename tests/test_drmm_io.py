"""Save / load of DRMM parameters: bit-exact round trip, atomic writes, clear errors on bad files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from drmm_ref import drmm as D
from drmm_ref.io import FORMAT_VERSION, DRMMFileError, load_params, save_params

from ._helpers import host


def _equal_bits(a, b):
    a, b = host(a), host(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


@pytest.mark.parametrize("name, dtype", [("tiny", "float64"), ("conv-small-ladder", "float32"), ("small2", "float64")])
def test_round_trip_is_bit_exact(tmp_path, name, dtype):
    params = D.init_params(D.preset(name), 3, bias_scale=0.1, class_bias_scale=0.1, dtype=dtype,
                           noise_variance=0.1 + 1e-17, switch_prior=np.linspace(0.1, 0.9, D.preset(name).L))
    path = save_params(tmp_path / "p.npz", params, metadata={"step": 7})
    loaded, meta = load_params(path, return_metadata=True)
    assert meta == {"step": 7}
    assert loaded.net == params.net
    assert loaded.noise_variance == params.noise_variance
    for a, b in zip(params.filters + params.biases, loaded.filters + loaded.biases):
        assert _equal_bits(a, b)
    for field in ("class_templates", "class_biases", "class_prior", "switch_prior"):
        assert _equal_bits(getattr(params, field), getattr(loaded, field)), field
    assert [p.name for p in tmp_path.iterdir()] == ["p.npz"]  # no temporary file left behind


def test_load_onto_other_backend(tmp_path, xp):
    params = D.init_params(D.preset("tiny"), 1)
    loaded = load_params(save_params(tmp_path / "p.npz", params), xp=xp)
    assert loaded.xp is xp
    np.testing.assert_array_equal(host(loaded.class_templates), params.class_templates)


def test_missing_file(tmp_path):
    with pytest.raises(DRMMFileError, match="no such"):
        load_params(tmp_path / "absent.npz")


@pytest.mark.parametrize("damage", ["flip", "truncate", "garbage"])
def test_corrupted_file(tmp_path, damage):
    path = save_params(tmp_path / "p.npz", D.init_params(D.preset("tiny"), 0))
    raw = bytearray(path.read_bytes())
    if damage == "flip":
        raw[len(raw) // 3] ^= 0xFF
    elif damage == "truncate":
        raw = raw[: len(raw) // 2]
    else:
        raw = bytearray(b"not a zip file at all" * 10)
    path.write_bytes(bytes(raw))
    with pytest.raises(DRMMFileError, match=str(path.name)):
        load_params(path)


def _rewrite(path, **meta_changes):
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: np.array(data[k]) for k in data.files}
    meta = json.loads(str(arrays.pop("__meta__")))
    meta.update(meta_changes)
    return arrays, meta


def test_edited_array_fails_checksum(tmp_path):
    path = save_params(tmp_path / "p.npz", D.init_params(D.preset("tiny"), 0))
    arrays, meta = _rewrite(path)
    arrays["class_templates"] = arrays["class_templates"] + 1.0
    np.savez(path, __meta__=np.asarray(json.dumps(meta)), **arrays)
    with pytest.raises(DRMMFileError, match="checksum"):
        load_params(path)


def test_newer_version_and_foreign_format(tmp_path):
    path = save_params(tmp_path / "p.npz", D.init_params(D.preset("tiny"), 0))
    arrays, meta = _rewrite(path, version=FORMAT_VERSION + 1)
    np.savez(tmp_path / "v.npz", __meta__=np.asarray(json.dumps(meta)), **arrays)
    with pytest.raises(DRMMFileError, match="version"):
        load_params(tmp_path / "v.npz")
    arrays, meta = _rewrite(path, format="something.else")
    np.savez(tmp_path / "f.npz", __meta__=np.asarray(json.dumps(meta)), **arrays)
    with pytest.raises(DRMMFileError, match="format"):
        load_params(tmp_path / "f.npz")
    np.savez(tmp_path / "o.npz", x=np.zeros(3))
    with pytest.raises(DRMMFileError, match="not a drmm_ref parameter file"):
        load_params(tmp_path / "o.npz")


def test_save_rejects_non_params(tmp_path):
    with pytest.raises(TypeError):
        save_params(tmp_path / "p.npz", {"filters": []})
