"""Flushing subnormal floats to zero on the host CPU while a training run computes (FTZ/DAZ).

A float32 below ``finfo(float32).tiny`` (1.2e-38) is *subnormal*; x86 CPUs compute with such
operands through a microcode assist that costs ~100 cycles per operation instead of ~1. Trained
DRMMs make them: a softmax of scores spread over hundreds of nats (probabilities like ``exp(-400)``),
and the top-down cotangents and Adam moments that inherit them. Inside the GEMMs of a step each
one is multiplied thousands of times, so the step slows down as training goes on: measured on the
2-core development machine (conv-small, batch 128, one thread), an EG step on the epoch-10
parameters of an N_L = 100 run took 647-667 ms CPU with subnormals kept, 295-297 ms flushed, the
same as on epoch-1 parameters (docs/learning.md, "Subnormal floats").

Setting the CPU's flush-to-zero (results below ``tiny`` become 0) and denormals-are-zero (such
operands read as 0) modes removes the assists. Values change only where a number would have been
below 1.2e-38 (float32) or 2.2e-308 (float64), far under every tolerance of SPEC §0; TensorFlow
and XLA run their CPU kernels this way by default, PyTorch offers ``set_flush_denormal``. NumPy
has no switch, so this module sets the modes through the C library's ``fegetenv``/``fesetenv``
(glibc's ``fenv_t`` holds the SSE control register MXCSR on x86-64 and FPCR on AArch64).

The modes belong to a CPU *thread*: a thread started while they are set inherits them (C11
7.6); one started before does not. Callers that keep worker threads (the data-parallel shards of
:mod:`drmm_ref.learning.parallel`) restart them inside the context. OpenBLAS's own worker threads,
started when NumPy loads, keep IEEE behaviour; a training run uses them only for block steps with
more than one thread.

Only :func:`drmm_ref.learning.train` turns this on (and records it per epoch); importing
:mod:`drmm_ref`, the identity tests and the claim scripts compute with IEEE subnormals.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import platform
import sys
import threading
from collections.abc import Iterator

__all__ = ["flush_denormals", "flush_denormals_problem", "denormals_flushed"]

# glibc's fenv_t: on x86-64 the x87 environment (28 bytes) then MXCSR; on AArch64 FPCR then FPSR.
_LAYOUT = {
    "x86_64": (32, 28, 0x8040),   # MXCSR: FTZ (bit 15) | DAZ (bit 6)
    "aarch64": (8, 0, 1 << 24),   # FPCR: FZ (bit 24), which flushes both inputs and results
}
_LIBM: ctypes.CDLL | None = None
_LIBM_LOCK = threading.Lock()


def flush_denormals_problem() -> str | None:
    """Why subnormal flushing cannot be set in this process, or None when it can."""
    if not sys.platform.startswith("linux"):
        return f"flushing subnormals is implemented for Linux (glibc) only, not {sys.platform}"
    machine = _machine()
    if machine not in _LAYOUT:
        return f"flushing subnormals is implemented for x86-64 and AArch64 only, not {machine}"
    if _libm() is None:
        return "the C library has no fegetenv/fesetenv (not glibc?)"
    return None


def _machine() -> str:
    machine = platform.machine().lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)


def _libm() -> ctypes.CDLL | None:
    global _LIBM
    with _LIBM_LOCK:
        if _LIBM is None:
            for name in (ctypes.util.find_library("m"), "libm.so.6"):
                if not name:
                    continue
                try:
                    lib = ctypes.CDLL(name)
                    lib.fegetenv.argtypes = lib.fesetenv.argtypes = [ctypes.c_void_p]
                    lib.fegetenv.restype = lib.fesetenv.restype = ctypes.c_int
                except (OSError, AttributeError):
                    continue
                _LIBM = lib
                break
        return _LIBM


def _control(field: int | None = None, mask: int = 0) -> int:
    """Read the control word of this thread; with ``field``, first set its ``mask`` bits to ``field``'s."""
    size, offset, _ = _LAYOUT[_machine()]
    env = ctypes.create_string_buffer(size)
    lib = _libm()
    if lib.fegetenv(env) != 0:
        raise OSError("fegetenv failed")
    word = ctypes.c_uint32.from_buffer(env, offset)
    if field is not None:
        word.value = (word.value & ~mask) | (field & mask)
        if lib.fesetenv(env) != 0:
            raise OSError("fesetenv failed")
    return int(word.value)


def denormals_flushed() -> bool:
    """Whether this thread flushes subnormals now (False where that cannot be set)."""
    if flush_denormals_problem() is not None:
        return False
    bits = _LAYOUT[_machine()][2]
    return _control() & bits == bits


@contextlib.contextmanager
def flush_denormals(enabled: bool = True) -> Iterator[bool]:
    """Flush subnormal floats to zero in this thread (and threads it starts) inside the block.

    Parameters
    ----------
    enabled : bool, default True
        False leaves the modes as they are (for callers with a switch).

    Yields
    ------
    bool
        Whether subnormals are flushed inside the block. With ``enabled`` False, or where the
        platform has no way to set it (:func:`flush_denormals_problem` says why), nothing changes
        and this is the state the thread already had (False unless an enclosing block set it).

    Notes
    -----
    On exit the two mode bits return to what they were; exception flags raised inside are kept.
    """
    if not enabled or flush_denormals_problem() is not None:
        yield denormals_flushed()
        return
    bits = _LAYOUT[_machine()][2]
    before = _control()
    _control(bits, bits)
    try:
        yield True
    finally:
        _control(before, bits)
