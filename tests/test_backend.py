"""The backend module: namespace inference, overrides, devices, host copies, seeded arrays."""

from __future__ import annotations

import subprocess
import sys

import array_api_strict as xs
import numpy as np
import pytest

from drmm_ref import _backend


def test_importing_drmm_ref_never_imports_cupy():
    code = "import sys, drmm_ref, drmm_ref.primitives; print('cupy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_namespace_inferred_and_overridden():
    a = np.zeros(3)
    assert _backend.namespace_name(_backend.get_namespace(a)) == "numpy"
    assert _backend.namespace_name(_backend.get_namespace(xs.zeros(3))) == "array_api_strict"
    assert _backend.get_namespace(a, xp=np) is _backend.get_namespace(a)
    assert _backend.get_namespace(a, xp="numpy") is _backend.get_namespace(a)
    assert _backend.namespace_name(_backend.get_namespace(xp="array_api_strict")) == "array_api_strict"


def test_mixed_namespaces_and_wrong_override_raise():
    with pytest.raises(TypeError, match="b is a numpy array but the computation uses array_api_strict"):
        _backend.get_namespace(xs.zeros(2), np.zeros(2), names=("a", "b"))
    with pytest.raises(TypeError, match="a is a numpy array but the computation uses array_api_strict"):
        _backend.get_namespace(np.zeros(2), xp=xs, names=("a",))
    with pytest.raises(ValueError, match="xp='torchy' is not a known backend"):
        _backend.resolve_namespace("torchy")
    with pytest.raises(TypeError, match="no array arguments"):
        _backend.get_namespace(None)
    with pytest.raises(TypeError, match="a must be an array, got list"):
        _backend.get_namespace([1.0], names=("a",))


def test_mixed_devices_raise():
    a = xs.zeros(2, device=xs.Device("CPU_DEVICE"))
    b = xs.zeros(2, device=xs.Device("device1"))
    with pytest.raises(ValueError, match="b is on device .* but a is on device"):
        _backend.get_namespace(a, b, names=("a", "b"))


def test_to_numpy_round_trips():
    host = np.arange(6.0).reshape(2, 3)
    assert _backend.to_numpy(host) is host
    strict = xs.asarray(host)
    np.testing.assert_array_equal(_backend.to_numpy(strict), host)
    with pytest.raises(TypeError, match="x must be an array"):
        _backend.to_numpy(object())


@pytest.mark.parametrize("name", ["numpy", "array_api_strict"])
def test_seeded_arrays_identical_across_backends(name):
    a = _backend.random_normal((3, 4), seed=7, dtype="float32", xp=name)
    b = _backend.random_normal((3, 4), seed=7, dtype="float32", xp="numpy")
    np.testing.assert_array_equal(_backend.to_numpy(a), _backend.to_numpy(b))
    assert "float32" in str(a.dtype)
    u = _backend.random_uniform((5,), seed=1, low=2.0, high=3.0, xp=name)
    assert np.all((_backend.to_numpy(u) >= 2.0) & (_backend.to_numpy(u) < 3.0))
    k = _backend.to_numpy(_backend.random_integers((100,), 4, seed=2, xp=name))
    assert k.dtype == np.int64 and k.min() >= 0 and k.max() < 4
    with pytest.raises(ValueError, match="dtype must be float32 or float64"):
        _backend.random_normal((2,), seed=0, dtype="int32", xp=name)
    with pytest.raises(TypeError, match="seed must be an int"):
        _backend.random_normal((2,), seed="x", xp=name)


def test_asarray_on_a_named_device():
    dev = xs.Device("device1")
    a = _backend.asarray([1.0, 2.0], xp="array_api_strict", device=dev)
    assert _backend.device_of(a) == dev


def test_allocator_setting_is_opt_in_idempotent_and_can_be_turned_off():
    """Importing drmm_ref leaves glibc alone; keep_freed_host_memory() is idempotent; DRMM_REF_MALLOPT=0 disables it."""
    import os
    import subprocess
    import sys

    code = ("import drmm_ref, drmm_ref._backend as b; assert b._ALLOCATOR_TUNED is None; "
            "first = b.keep_freed_host_memory(); assert b.keep_freed_host_memory() is first; print(first)")
    env = dict(os.environ)
    on = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    env["DRMM_REF_MALLOPT"] = "0"
    off = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert off.stdout.strip() == "False"
    expected = ("True" if sys.platform.startswith("linux") and "glibc" in " ".join(__import__("platform").libc_ver())
                else None)
    if expected:
        assert on.stdout.strip() == expected
