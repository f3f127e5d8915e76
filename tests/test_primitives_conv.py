"""conv2d / conv2d_transpose: an independent oracle, exact adjoints, VJPs by finite differences."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from scipy.signal import correlate

from drmm_ref import _backend
from drmm_ref import primitives as P
from drmm_ref.numerics import adjoint_relative_error, identity_tolerance

from ._helpers import assert_fd_close, assert_identity_close, assert_same_array_kind, central_fd_gradient, host


@st.composite
def conv_geometry(draw, max_side=8):
    """(n, c, o, k, q, h, w, seed) with an output side >= 1."""
    n = draw(st.integers(1, 3))
    c = draw(st.integers(1, 4))
    o = draw(st.integers(1, 4))
    k = draw(st.integers(1, 5))
    q = draw(st.integers(0, k + 1))
    smallest = max(1, k - 2 * q)
    h = draw(st.integers(smallest, max(smallest, max_side)))
    w = draw(st.integers(smallest, max(smallest, max_side)))
    seed = draw(st.integers(0, 2**32 - 1))
    return n, c, o, k, q, h, w, seed


def _arrays(xp, seed, dtype, *shapes):
    rng = np.random.default_rng(seed)
    return [_backend.asarray(rng.standard_normal(s).astype(dtype), xp=xp) for s in shapes]


def conv2d_oracle(x: np.ndarray, w: np.ndarray, q: int) -> np.ndarray:
    """scipy.signal.correlate, channel by channel (independent of the im2col code)."""
    xp_ = np.pad(x, ((0, 0), (0, 0), (q, q), (q, q)))
    n, o = x.shape[0], w.shape[0]
    return np.stack([
        np.stack([sum(correlate(xp_[i, ci], w[oi, ci], mode="valid") for ci in range(x.shape[1])) for oi in range(o)])
        for i in range(n)
    ])


@given(conv_geometry())
def test_conv2d_matches_scipy_oracle(xp, geom):
    n, c, o, k, q, h, w, seed = geom
    x, wt = _arrays(xp, seed, "float64", (n, c, h, w), (o, c, k, k))
    y = P.conv2d(x, wt, q)
    assert_same_array_kind(y, x, xp)
    assert tuple(y.shape) == (n, o, h + 2 * q - k + 1, w + 2 * q - k + 1)
    assert_identity_close(y, conv2d_oracle(host(x), host(wt), q))


@given(conv_geometry(), st.sampled_from(["float64", "float32"]))
def test_conv2d_transpose_is_exact_adjoint(xp, geom, dtype):
    n, c, o, k, q, h, w, seed = geom
    x, wt = _arrays(xp, seed, dtype, (n, c, h, w), (o, c, k, k))
    ax = P.conv2d(x, wt, q)
    (y,) = _arrays(xp, seed + 1, dtype, tuple(ax.shape))
    aty = P.conv2d_transpose(y, wt, q)
    assert tuple(aty.shape) == tuple(x.shape)
    assert_same_array_kind(aty, y, xp)
    assert adjoint_relative_error(ax, y, x, aty) <= identity_tolerance(dtype)


@given(conv_geometry(), st.sampled_from(["float64", "float32"]))
def test_conv2d_weight_vjp_is_adjoint_of_weight_map(xp, geom, dtype):
    n, c, o, k, q, h, w, seed = geom
    x, wt = _arrays(xp, seed, dtype, (n, c, h, w), (o, c, k, k))
    ax = P.conv2d(x, wt, q)
    (y,) = _arrays(xp, seed + 1, dtype, tuple(ax.shape))
    gw = P.conv2d_vjp_weight(y, x, q)
    assert tuple(gw.shape) == tuple(wt.shape)
    assert_same_array_kind(gw, x, xp)
    flat = lambda a: xp.reshape(a, (1, -1))  # noqa: E731 - W is a batch of one
    assert adjoint_relative_error(flat(ax), flat(y), flat(wt), flat(gw)) <= identity_tolerance(dtype)


@given(conv_geometry(max_side=5))
@example(geom=(2, 1, 4, 4, 4, 4, 4, 4))  # regression: step 1e-6 gave rounding error 1.8e-8 > atol here
def test_conv_vjps_match_central_differences(geom):
    n, c, o, k, q, h, w, seed = geom
    x, wt = _arrays(np, seed, "float64", (n, c, h, w), (o, c, k, k))
    (g,) = _arrays(np, seed + 1, "float64", (n, o, h + 2 * q - k + 1, w + 2 * q - k + 1))
    # Every map here is linear (the objective bilinear), so central differences have no truncation
    # error and a large step keeps the rounding error (~ 1e-16 |f| / eps) far below atol.
    fd = lambda f, v: central_fd_gradient(f, v, eps=1e-3)  # noqa: E731
    fx = lambda v: np.sum(P.conv2d(v, wt, q) * g)  # noqa: E731
    fw = lambda v: np.sum(P.conv2d(x, v, q) * g)  # noqa: E731
    assert_fd_close(P.conv2d_vjp_input(g, wt, q), fd(fx, x))
    assert_fd_close(P.conv2d_vjp_weight(g, x, q), fd(fw, wt))
    # conv2d_transpose in y and in weight: cotangent gx lives on the input grid.
    (gx,) = _arrays(np, seed + 2, "float64", (n, c, h, w))
    ft_y = lambda v: np.sum(P.conv2d_transpose(v, wt, q) * gx)  # noqa: E731
    ft_w = lambda v: np.sum(P.conv2d_transpose(g, v, q) * gx)  # noqa: E731
    assert_fd_close(P.conv2d_transpose_vjp_input(gx, wt, q), fd(ft_y, g))
    assert_fd_close(P.conv2d_transpose_vjp_weight(gx, g, q), fd(ft_w, wt))


def test_conv2d_float32_in_float32_out(xp):
    x, wt = _arrays(xp, 0, "float32", (2, 3, 6, 6), (4, 3, 3, 3))
    for out in (P.conv2d(x, wt, 1), P.conv2d_transpose(P.conv2d(x, wt, 1), wt, 1),
                P.conv2d_vjp_weight(P.conv2d(x, wt, 1), x, 1)):
        assert_same_array_kind(out, x, xp)


def test_conv2d_large_batch_is_chunked_identically(monkeypatch):
    """The batch-chunked path (large inputs) gives the same numbers as one chunk."""
    from drmm_ref.primitives import batchlast

    x, wt = _arrays(np, 3, "float64", (7, 2, 6, 6), (3, 2, 3, 3))
    y = P.conv2d(x, wt, 1)
    xt = P.conv2d_transpose(y, wt, 1)
    gw = P.conv2d_vjp_weight(y, x, 1)
    monkeypatch.setattr(batchlast, "CHUNK_ELEMENTS", 200)  # forces one example per chunk
    np.testing.assert_allclose(P.conv2d(x, wt, 1), y, rtol=0, atol=1e-12)
    np.testing.assert_allclose(P.conv2d_transpose(y, wt, 1), xt, rtol=0, atol=1e-12)
    np.testing.assert_allclose(P.conv2d_vjp_weight(y, x, 1), gw, rtol=0, atol=1e-11)


# ----------------------------------------------------------------------------------------- bad input
def test_conv2d_rejects_wrong_rank():
    with pytest.raises(ValueError, match="x must have rank 4"):
        P.conv2d(np.zeros((3, 5, 5)), np.zeros((1, 3, 3, 3)))
    with pytest.raises(ValueError, match="weight must have rank 4"):
        P.conv2d(np.zeros((1, 3, 5, 5)), np.zeros((3, 3, 3)))


def test_conv2d_rejects_channel_mismatch():
    with pytest.raises(ValueError, match="x has 2 channels but weight expects 3"):
        P.conv2d(np.zeros((1, 2, 5, 5)), np.zeros((4, 3, 3, 3)))
    with pytest.raises(ValueError, match="y has 2 channels but weight has 4"):
        P.conv2d_transpose(np.zeros((1, 2, 5, 5)), np.zeros((4, 3, 3, 3)))


def test_conv2d_rejects_integer_arrays_and_mixed_dtypes():
    with pytest.raises(TypeError, match="x must be a real floating array"):
        P.conv2d(np.zeros((1, 1, 5, 5), dtype=np.int64), np.zeros((1, 1, 3, 3)))
    with pytest.raises(TypeError, match="weight has dtype float32"):
        P.conv2d(np.zeros((1, 1, 5, 5)), np.zeros((1, 1, 3, 3), dtype=np.float32))


def test_conv2d_rejects_bad_padding_and_kernels():
    with pytest.raises(ValueError, match="padding must be >= 0"):
        P.conv2d(np.zeros((1, 1, 5, 5)), np.zeros((1, 1, 3, 3)), -1)
    with pytest.raises(TypeError, match="padding must be an integer"):
        P.conv2d(np.zeros((1, 1, 5, 5)), np.zeros((1, 1, 3, 3)), 1.5)
    with pytest.raises(ValueError, match="does not fit an input of side"):
        P.conv2d(np.zeros((1, 1, 2, 2)), np.zeros((1, 1, 5, 5)), 0)
    with pytest.raises(ValueError, match="square kernels"):
        P.conv2d(np.zeros((1, 1, 5, 5)), np.zeros((1, 1, 3, 2)))
    with pytest.raises(ValueError, match="padding 3 is too large"):
        P.conv2d_transpose(np.zeros((1, 1, 2, 2)), np.zeros((1, 1, 2, 2)), 3)


def test_conv2d_rejects_mixed_namespaces_and_devices():
    import array_api_strict as xs

    with pytest.raises(TypeError, match="weight is a numpy array"):
        P.conv2d(xs.zeros((1, 1, 5, 5), dtype=xs.float64), np.zeros((1, 1, 3, 3)))
    other = xs.Device("device1")
    with pytest.raises(ValueError, match="weight is on device"):
        P.conv2d(xs.zeros((1, 1, 5, 5), dtype=xs.float64), xs.zeros((1, 1, 3, 3), dtype=xs.float64, device=other))
