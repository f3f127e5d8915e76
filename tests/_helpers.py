"""Test helpers: host copies, dtype-keyed closeness, central finite differences, tiny DRMM nets."""

from __future__ import annotations

import functools
import itertools
import math

import numpy as np
from hypothesis import strategies as st

from drmm_ref import to_numpy
from drmm_ref.drmm import Layer, Network
from drmm_ref.drmm.enumerate import MAX_CONFIGURATIONS
from drmm_ref.numerics import FD_ATOL, FD_RTOL, dtype_name, identity_tolerance


def host(x) -> np.ndarray:
    return np.asarray(to_numpy(x))


def assert_identity_close(actual, expected, *, scale=None, err_msg=""):
    """Exact identity up to rounding: ``|a - e| <= tol * max(1, scale)`` with the dtype's identity tolerance."""
    a, e = host(actual), host(expected)
    assert a.shape == e.shape, f"shape {a.shape} != {e.shape}. {err_msg}"
    tol = identity_tolerance(a.dtype)
    s = scale if scale is not None else max(1.0, float(np.max(np.abs(e))) if e.size else 1.0)
    err = float(np.max(np.abs(a.astype(np.float64) - e.astype(np.float64)))) if a.size else 0.0
    assert err <= tol * s * 10, f"max abs error {err:.3e} > {tol * s * 10:.3e} ({dtype_name(a.dtype)}). {err_msg}"


def central_fd_gradient(f, x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Gradient of a scalar function of a float64 host array by central differences, entry by entry."""
    x = np.array(x, dtype=np.float64)
    g = np.zeros_like(x)
    flat, gflat = x.reshape(-1), g.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        fp = float(f(x))
        flat[i] = old - eps
        fm = float(f(x))
        flat[i] = old
        gflat[i] = (fp - fm) / (2 * eps)
    return g


def assert_fd_close(analytic, numeric, err_msg=""):
    """Finite-difference comparison with the project's float64 tolerances (rtol 1e-6, atol 1e-8)."""
    np.testing.assert_allclose(host(analytic), numeric, rtol=FD_RTOL, atol=FD_ATOL, err_msg=err_msg)


def assert_same_array_kind(out, like, xp):
    """Output keeps the namespace, device and dtype of ``like``."""
    from drmm_ref._backend import device_of, get_namespace

    assert get_namespace(out) is xp
    assert device_of(out) == device_of(like)
    assert out.dtype == like.dtype


_KERNELS, _PADDINGS, _POOLS = (1, 2, 3), (0, 1), (1, 2)


def _input_sides(out_side: int, pool: int, max_side: int, bottom: bool) -> dict[tuple[int, int], int]:
    """(kernel, padding) -> input side of a layer whose pooled output side is ``out_side`` (SPEC §0 sizes)."""
    conv = out_side * pool
    sides = {(k, q): conv - 2 * q + k - 1 for k in _KERNELS for q in _PADDINGS if 2 * q <= conv + k - 2}
    return {kq: s for kq, s in sides.items() if (2 if bottom else 1) <= s <= max_side}


@functools.lru_cache(maxsize=None)
def _least_configurations(out_side: int, pools: tuple[int, ...], max_side: int) -> float:
    """Fewest latent configurations of layers with these pools (top first), one channel each, below a level of
    side ``out_side``: ``prod_l (2 p_l^2)^(H_l W_l)`` minimised over kernels and paddings (inf if none fits)."""
    if not pools:
        return 1
    here = (2 * pools[0] ** 2) ** (out_side * out_side)
    rest = [_least_configurations(s, pools[1:], max_side)
            for s in _input_sides(out_side, pools[0], max_side, bottom=len(pools) == 1).values()]
    return here * min(rest, default=math.inf)


@st.composite
def tiny_nets(draw, max_configurations: int = MAX_CONFIGURATIONS, max_side: int = 8):
    """Random DRMM nets small enough for the brute-force oracle, built to a configuration budget.

    Layer ``l`` has ``(2 p_l^2)^(C_l H_l W_l)`` latent configurations per class (SPEC §2, D3). The
    strategy draws the top level's side and a pooling pattern (1-3 layers, pool 1 or 2 each) among
    the patterns that fit the budget at all, then builds the net from the top level down: each layer
    takes as many channels (1-3) and a kernel/padding (1-3 / 0-1) as leave room for the fewest
    configurations the layers below it can have. Every drawn net is valid and enumerable: nothing is
    discarded with ``assume``, so pooled nets are as likely as their patterns. The image side is at
    least 2 (the 1-pixel edge case is an explicit example in the tests).
    """
    side = draw(st.integers(1, 2))  # the top level's side
    patterns = [pools for n in (1, 2, 3) for pools in itertools.product(_POOLS, repeat=n)
                if _least_configurations(side, pools, max_side) <= max_configurations]
    pools = draw(st.sampled_from(patterns))
    room, layers = max_configurations, []
    for i, pool in enumerate(pools):
        rest, bottom = pools[i + 1:], i == len(pools) - 1
        need = {kq: _least_configurations(s, rest, max_side)
                for kq, s in _input_sides(side, pool, max_side, bottom).items()}
        need = {kq: v for kq, v in need.items() if v <= max_configurations}
        radix, units = 2 * pool * pool, side * side
        channels = draw(st.integers(1, max(c for c in (1, 2, 3)
                                           if c == 1 or radix ** (c * units) * min(need.values()) <= room)))
        room //= radix ** (channels * units)
        kernel, padding = draw(st.sampled_from(sorted(kq for kq, v in need.items() if v <= room)))
        layers.append(Layer(channels, kernel, padding, pool))
        side = _input_sides(side, pool, max_side, bottom)[(kernel, padding)]
    net = Network((draw(st.integers(1, 2)), side, side), tuple(reversed(layers)), draw(st.integers(2, 3)),
                  name="hypothesis-tiny")
    assert net.latent_configurations() <= max_configurations, net.describe()
    return net
