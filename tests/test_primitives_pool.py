"""maxpool2d / unpool2d / select2d: shapes, first-max ties, adjoints, VJPs by finite differences."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from drmm_ref import _backend
from drmm_ref import primitives as P
from drmm_ref.numerics import adjoint_relative_error, identity_tolerance

from ._helpers import assert_fd_close, assert_same_array_kind, central_fd_gradient, host


@st.composite
def pool_geometry(draw):
    n = draw(st.integers(1, 3))
    c = draw(st.integers(1, 4))
    p = draw(st.integers(1, 3))
    hp = draw(st.integers(1, 4))
    wp = draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2**32 - 1))
    return n, c, p, hp, wp, seed


def maxpool_oracle(x: np.ndarray, p: int):
    """Loops over windows; numpy's argmax returns the first maximum in row-major order."""
    n, c, h, w = x.shape
    vals = np.empty((n, c, h // p, w // p), dtype=x.dtype)
    pos = np.empty((n, c, h // p, w // p), dtype=np.int64)
    for i in range(n):
        for ch in range(c):
            for r in range(h // p):
                for s in range(w // p):
                    window = x[i, ch, r * p : (r + 1) * p, s * p : (s + 1) * p].reshape(-1)
                    pos[i, ch, r, s] = int(np.argmax(window))
                    vals[i, ch, r, s] = window.max()
    return vals, pos


@given(pool_geometry(), st.booleans())
def test_maxpool_matches_loop_oracle_with_first_max_ties(xp, geom, with_ties):
    n, c, p, hp, wp, seed = geom
    rng = np.random.default_rng(seed)
    # Values from {0, 1, 2} make ties frequent, so the first-max rule is exercised.
    raw = (rng.integers(0, 3, size=(n, c, hp * p, wp * p)).astype(np.float64) if with_ties
           else rng.standard_normal((n, c, hp * p, wp * p)))
    x = _backend.asarray(raw, xp=xp)
    vals, pos = P.maxpool2d(x, p)
    ref_vals, ref_pos = maxpool_oracle(raw, p)
    assert_same_array_kind(vals, x, xp)
    assert xp.isdtype(pos.dtype, "integral")
    np.testing.assert_array_equal(host(vals), ref_vals)
    np.testing.assert_array_equal(host(pos), ref_pos)
    # select2d with the positions reproduces the values.
    np.testing.assert_array_equal(host(P.select2d(x, pos, p)), ref_vals)


def test_maxpool_tie_goes_to_first_position():
    x = np.zeros((1, 1, 2, 2))
    _, pos = P.maxpool2d(x, 2)
    assert int(pos[0, 0, 0, 0]) == 0
    x = np.array([[[[0.0, 1.0], [1.0, 1.0]]]])
    _, pos = P.maxpool2d(x, 2)
    assert int(pos[0, 0, 0, 0]) == 1


@given(pool_geometry(), st.sampled_from(["float64", "float32"]))
def test_unpool_is_adjoint_of_select(xp, geom, dtype):
    n, c, p, hp, wp, seed = geom
    rng = np.random.default_rng(seed)
    v = _backend.asarray(rng.standard_normal((n, c, hp, wp)).astype(dtype), xp=xp)
    t = _backend.asarray(rng.integers(0, p * p, size=(n, c, hp, wp)), xp=xp)
    y = _backend.asarray(rng.standard_normal((n, c, hp * p, wp * p)).astype(dtype), xp=xp)
    up = P.unpool2d(v, t, p)
    assert_same_array_kind(up, v, xp)
    assert tuple(up.shape) == (n, c, hp * p, wp * p)
    sel = P.select2d(y, t, p)
    assert adjoint_relative_error(up, y, v, sel) <= identity_tolerance(dtype)
    # unpool places each value at its position and nothing else: select recovers it exactly.
    np.testing.assert_array_equal(host(P.select2d(up, t, p)), host(v))
    assert np.count_nonzero(host(up)) == np.count_nonzero(host(v))


@given(pool_geometry())
def test_pool_vjps_match_central_differences(geom):
    n, c, p, hp, wp, seed = geom
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, hp * p, wp * p))
    _, pos = P.maxpool2d(x, p)
    # Keep away from ties: the gap between each window's top two entries must exceed the step.
    win = np.sort(x.reshape(n, c, hp, p, wp, p).transpose(0, 1, 2, 4, 3, 5).reshape(n, c, hp, wp, p * p), axis=-1)
    assume(p == 1 or np.min(win[..., -1] - win[..., -2]) > 1e-4)
    g = rng.standard_normal((n, c, hp, wp))
    # max-pool is linear while no window's maximum changes: a step of 2e-5 < gap / 2 keeps it so.
    fd_pool = central_fd_gradient(lambda v: np.sum(P.maxpool2d(v, p)[0] * g), x, eps=2e-5)
    assert_fd_close(P.maxpool2d_vjp(g, pos, p), fd_pool)
    # unpool and select are linear: central differences are exact up to rounding, so a large step.
    gx = rng.standard_normal(x.shape)
    fd_unpool = central_fd_gradient(lambda v: np.sum(P.unpool2d(v, pos, p) * gx), g, eps=1e-3)
    assert_fd_close(P.unpool2d_vjp_values(gx, pos, p), fd_unpool)
    fd_select = central_fd_gradient(lambda v: np.sum(P.select2d(v, pos, p) * g), x, eps=1e-3)
    assert_fd_close(P.select2d_vjp(g, pos, p), fd_select)


# ----------------------------------------------------------------------------------------- bad input
def test_pool_size_must_divide_side():
    with pytest.raises(ValueError, match="pool size 2 does not divide the spatial side 5x4 of x"):
        P.maxpool2d(np.zeros((1, 1, 5, 4)), 2)
    with pytest.raises(ValueError, match="pool must be >= 1"):
        P.maxpool2d(np.zeros((1, 1, 4, 4)), 0)


def test_positions_must_be_integers_in_range():
    v = np.zeros((1, 1, 2, 2))
    with pytest.raises(TypeError, match="positions must be an integer array"):
        P.unpool2d(v, np.zeros((1, 1, 2, 2)), 2)
    with pytest.raises(ValueError, match=r"positions must lie in \[0, 3\]"):
        P.unpool2d(v, np.full((1, 1, 2, 2), 4), 2)
    with pytest.raises(ValueError, match="positions has shape"):
        P.unpool2d(v, np.zeros((1, 1, 2, 1), dtype=np.int64), 2)


def test_pool_rejects_integer_values_and_wrong_rank():
    with pytest.raises(TypeError, match="x must be a real floating array"):
        P.maxpool2d(np.zeros((1, 1, 4, 4), dtype=np.int32), 2)
    with pytest.raises(ValueError, match="x must have rank 4"):
        P.maxpool2d(np.zeros((4, 4)), 2)
    with pytest.raises(TypeError, match="values must be a real floating array"):
        P.unpool2d(np.zeros((1, 1, 2, 2), dtype=np.int64), np.zeros((1, 1, 2, 2), dtype=np.int64), 2)


def test_pool_rejects_mixed_namespaces():
    import array_api_strict as xs

    with pytest.raises(TypeError, match="positions is a numpy array"):
        P.unpool2d(xs.zeros((1, 1, 2, 2), dtype=xs.float64), np.zeros((1, 1, 2, 2), dtype=np.int64), 2)
