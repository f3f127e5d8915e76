"""drmm_ref.numerics: the SPEC §0 inner product, adjoint error measure and tolerances."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from drmm_ref import _backend
from drmm_ref.numerics import adjoint_relative_error, dtype_name, identity_tolerance, inner


@given(st.integers(1, 4), st.integers(1, 5), st.integers(0, 2**32 - 1))
def test_inner_sums_all_but_batch_axis(xp, n, m, seed):
    rng = np.random.default_rng(seed)
    a, b = rng.standard_normal((n, m, 3)), rng.standard_normal((n, m, 3))
    out = _backend.to_numpy(inner(_backend.asarray(a, xp=xp), _backend.asarray(b, xp=xp)))
    np.testing.assert_allclose(out, np.einsum("nij,nij->n", a, b), rtol=1e-12, atol=1e-12)


def test_inner_rejects_mismatch():
    with pytest.raises(ValueError, match="a has shape"):
        inner(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="batch axis"):
        inner(np.zeros(3), np.zeros(3))


def test_adjoint_error_detects_a_wrong_adjoint():
    rng = np.random.default_rng(0)
    A = rng.standard_normal((5, 4))
    x, y = rng.standard_normal((1, 4)), rng.standard_normal((1, 5))
    good = adjoint_relative_error(x @ A.T, y, x, y @ A)
    bad = adjoint_relative_error(x @ A.T, y, x, y @ (A + 1e-3))
    assert good < 1e-15 < 1e-12 < bad


def test_tolerances_by_dtype():
    assert identity_tolerance(np.float64) == 1e-12 and identity_tolerance("float32") == 1e-5
    assert dtype_name(np.dtype("float32")) == "float32"
    with pytest.raises(ValueError, match="float32 or float64"):
        identity_tolerance(np.int64)
