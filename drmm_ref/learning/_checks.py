"""Argument checks of the learning layer: labels, batches, settings and the array backend.

Every check raises ``ValueError`` or ``TypeError`` naming the argument and what to change
(``docs/guarantees.md``). Values are never rounded or clipped into range: a float label ``0.7``
is an error, not class 0; a learning rate of ``inf`` is an error, not a diverging run.
"""

from __future__ import annotations

import math
from typing import Any

from .. import _backend
from .._backend import backend_problem
from ..primitives._checks import int_at_least

__all__ = ["check_labels", "check_batch", "finite_positive", "finite_nonnegative", "fraction", "count",
           "optional_count", "backend_problem", "check_backend"]


def check_labels(labels: Any, n: int | None, n_classes: int, *, name: str = "labels",
                 allow_unlabelled: bool = True, check_range: bool = True, xp: Any = None) -> Any:
    """Namespace of ``labels`` after checking them: an integer array of shape ``(n,)`` in range.

    Parameters
    ----------
    labels : int array of shape (N,)
    n : int or None
        The batch size they must match (None: any N >= 1).
    n_classes : int
        ``K``: labels lie in ``0..K-1``, or are ``-1`` (``UNLABELLED``) when ``allow_unlabelled``.
    name : str
        The argument's name in messages.
    check_range : bool, default True
        Also check the values (two reductions, one host synchronisation each on a GPU). False
        checks only the dtype and the shape (no synchronisation): for hot paths whose caller
        checked the values once.

    Raises
    ------
    TypeError
        Not an array of the expected namespace, or not of an integer dtype (``0.7`` would be
        truncated to class 0: refused).
    ValueError
        Wrong shape, an empty batch, or a label out of range.
    """
    space = _backend.get_namespace(labels, xp=xp, names=(name,))
    if not space.isdtype(labels.dtype, "integral"):
        raise TypeError(f"{name} must be an integer array of class indices, got dtype {labels.dtype} "
                        "(float labels are not rounded; cast them with xp.astype(labels, xp.int64) if they are whole)")
    if labels.ndim != 1 or (n is not None and labels.shape[0] != n):
        want = f"({n},)" if n is not None else "(N,)"
        raise ValueError(f"{name} must have shape {want} (one per image), got {tuple(labels.shape)}")
    if labels.shape[0] == 0:
        raise ValueError(f"{name} is empty (N = 0): the batch must hold at least one example")
    if not check_range:
        return space
    low = -1 if allow_unlabelled else 0
    if bool(space.any(labels < low)) or bool(space.any(labels >= n_classes)):
        allowed = f"0..{n_classes - 1}" + (" or -1 (unlabelled)" if allow_unlabelled else "")
        raise ValueError(f"{name} out of range: the network has K = {n_classes} classes ({allowed})")
    return space


def check_batch(params: Any, images: Any, labels: Any, *, allow_unlabelled: bool = True) -> Any:
    """Check a training batch at the learning boundary: images (``drmm._common.check_images``) and labels."""
    from ..drmm._common import check_images

    xp = check_images(params, images)
    if labels is not None:
        check_labels(labels, int(images.shape[0]), params.net.n_classes, allow_unlabelled=allow_unlabelled, xp=xp)
    return xp


def _real(value: Any, name: str) -> float:
    if isinstance(value, (bool, str, bytes)):
        raise TypeError(f"{name} must be a number, got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, got {value!r}") from None


def finite_positive(value: Any, name: str) -> float:
    """``value`` as a float, finite and > 0 (a learning rate, a time)."""
    v = _real(value, name)
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return v


def finite_nonnegative(value: Any, name: str) -> float:
    """``value`` as a float, finite and >= 0."""
    v = _real(value, name)
    if not (math.isfinite(v) and v >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return v


def fraction(value: Any, name: str, *, low_open: bool = True, high_open: bool = False) -> float:
    """``value`` as a float in ``(0, 1]`` (by default; the ends are chosen by ``low_open``/``high_open``)."""
    v = _real(value, name)
    low_ok = v > 0 if low_open else v >= 0
    high_ok = v < 1 if high_open else v <= 1
    if not (math.isfinite(v) and low_ok and high_ok):
        interval = ("(" if low_open else "[") + "0, 1" + (")" if high_open else "]")
        raise ValueError(f"{name} must lie in {interval}, got {value!r}")
    return v


def count(value: Any, name: str, minimum: int = 1) -> int:
    """``value`` as a Python int >= ``minimum`` (floats, strings and bools are refused, not truncated)."""
    return int_at_least(value, name, minimum)


def optional_count(value: Any, name: str, minimum: int = 1) -> int | None:
    """None, or :func:`count`."""
    return None if value is None else count(value, name, minimum)


def check_backend(name: str, *, argument: str = "backend") -> None:
    """Raise ``ValueError`` naming ``argument`` when :func:`backend_problem` finds one."""
    problem = backend_problem(name)
    if problem is not None:
        raise ValueError(f"{argument}: {problem}")
