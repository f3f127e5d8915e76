"""Flushing subnormal floats on the host CPU (drmm_ref.backend.flush_denormals; docs/learning.md)."""

from __future__ import annotations

import concurrent.futures
import threading

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from drmm_ref.backend import denormals_flushed, flush_denormals, flush_denormals_problem
from drmm_ref.learning import parallel

needs_fenv = pytest.mark.skipif(flush_denormals_problem() is not None,
                                reason=str(flush_denormals_problem()))
TINY32, TINY64 = np.finfo(np.float32).tiny, np.finfo(np.float64).tiny


def _products():
    """A float32 and a float64 product whose exact value is subnormal, and a subnormal operand times one."""
    return (np.float32(TINY32) * np.float32(0.25), np.float64(TINY64) * 0.25,
            (np.array([TINY32 / 8], np.float32) * np.float32(1.0))[0])


@needs_fenv
def test_flushing_inside_the_block_and_ieee_outside():
    assert not denormals_flushed()
    ieee = _products()
    assert all(0 < abs(v) < TINY32 for v in ieee[::2]) and 0 < ieee[1] < TINY64
    with flush_denormals() as on:
        assert on and denormals_flushed()
        assert _products() == (0.0, 0.0, 0.0)  # FTZ (results) and DAZ (operands), both widths
    assert not denormals_flushed()
    assert _products() == ieee


@needs_fenv
def test_disabled_and_nested_blocks_leave_the_mode_alone():
    with flush_denormals(False) as on:
        assert not on and _products()[0] > 0
    with flush_denormals():
        with flush_denormals(False) as on:  # a switch that is off does not undo an enclosing block
            assert on and _products()[0] == 0
        with flush_denormals() as on:
            assert on
        assert denormals_flushed()  # the inner block restored what it found: flushing
    assert not denormals_flushed()


@needs_fenv
def test_the_mode_is_restored_when_the_block_raises():
    with pytest.raises(ZeroDivisionError), flush_denormals():
        1 / 0
    assert not denormals_flushed() and _products()[0] > 0


@needs_fenv
def test_threads_started_inside_the_block_inherit_it_and_older_ones_do_not():
    old = concurrent.futures.ThreadPoolExecutor(1)
    old.submit(int).result()  # its thread starts before the block
    with flush_denormals():
        got = []
        t = threading.Thread(target=lambda: got.append(denormals_flushed()))
        t.start()
        t.join()
        assert got == [True]
        assert old.submit(denormals_flushed).result() is False
        parallel.restart_pools()
        assert parallel._pool(2).submit(denormals_flushed).result() is True
    parallel.restart_pools()
    assert parallel._pool(2).submit(denormals_flushed).result() is False
    old.shutdown()


@needs_fenv
@given(seed=st.integers(0, 2**32 - 1), dtype=st.sampled_from([np.float32, np.float64]))
def test_arithmetic_far_from_the_subnormal_range_is_bit_identical(seed, dtype):
    """Flushing changes only numbers below ``tiny``: a matmul and a softmax of ordinary numbers agree bit for bit."""
    rng = np.random.default_rng(seed)
    a = rng.uniform(0.5, 2.0, (6, 5)).astype(dtype) * rng.choice([-1, 1], (6, 5))
    b = rng.uniform(0.5, 2.0, (5, 4)).astype(dtype)
    s = rng.uniform(-20, 20, (3, 7)).astype(dtype)

    def compute():
        e = np.exp(s - s.max(axis=1, keepdims=True))
        return a @ b, e / e.sum(axis=1, keepdims=True)

    ieee = compute()
    with flush_denormals():
        flushed = compute()
    for x, y in zip(ieee, flushed):
        np.testing.assert_array_equal(x, y)


@needs_fenv
def test_a_softmax_with_underflowing_tail_differs_only_below_tiny():
    """What made trained runs slow: probabilities like exp(-95) are subnormal in float32; flushed, they are 0."""
    s = np.array([[0.0, -1.0, -95.0, -400.0]], np.float32)
    ieee = np.exp(s)
    with flush_denormals():
        flushed = np.exp(s)
    assert 0 < ieee[0, 2] < TINY32 and flushed[0, 2] == 0
    np.testing.assert_array_equal(np.where(np.abs(ieee) < TINY32, 0, ieee), flushed)
