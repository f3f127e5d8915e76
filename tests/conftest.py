"""Shared fixtures and Hypothesis profiles.

Profiles: ``ci`` (Hypothesis' built-in one, loaded when ``CI=true``), ``dev`` (fast, the local
default) and ``thorough`` (many examples). Pick one with ``HYPOTHESIS_PROFILE=thorough``.

Backends: the ``xp`` fixture runs a test on NumPy and ``array_api_strict`` always, and on CuPy
when ``cupy.cuda.is_available()`` (those cases carry the ``gpu`` marker).
"""

from __future__ import annotations

import importlib.util
import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("dev", max_examples=25, deadline=None)
settings.register_profile("thorough", max_examples=500, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci_drmm", parent=settings.get_profile("ci"), max_examples=50)
_default = "ci_drmm" if os.environ.get("CI", "").lower() in ("1", "true", "yes") else "dev"
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", _default))


def _cupy_available() -> bool:
    if importlib.util.find_spec("cupy") is None:
        return False
    try:
        import cupy

        return bool(cupy.cuda.is_available())
    except Exception:
        return False


CUPY = _cupy_available()
BACKENDS = [
    pytest.param("numpy", id="numpy"),
    pytest.param("array_api_strict", id="strict"),
    pytest.param("cupy", id="cupy",
                 marks=[pytest.mark.gpu, pytest.mark.skipif(not CUPY, reason="CuPy with CUDA not available")]),
]


@pytest.fixture(scope="session", autouse=True)
def _one_blas_thread():
    """Tests are small matrix products: one BLAS thread is faster and immune to CPU contention."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        yield


@pytest.fixture(params=BACKENDS, scope="session")
def xp(request):
    """An Array API namespace: NumPy (compat), array_api_strict, or CuPy when a GPU is present."""
    from drmm_ref._backend import resolve_namespace

    return resolve_namespace(request.param)
