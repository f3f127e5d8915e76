"""Argument checks shared by the primitives: every message names the argument to change."""

from __future__ import annotations

import operator
from typing import Any

from .._backend import get_namespace


def float_array(x: Any, name: str, xp: Any, ndim: int | None = None) -> None:
    """Raise unless ``x`` is a real floating array (of rank ``ndim`` when given)."""
    if not xp.isdtype(x.dtype, "real floating"):
        raise TypeError(f"{name} must be a real floating array (float32 or float64), got dtype {x.dtype}")
    if ndim is not None and x.ndim != ndim:
        layout = {4: " (N, C, H, W)", 2: " (N, K)"}.get(ndim, "")
        raise ValueError(f"{name} must have rank {ndim}{layout}, got shape {tuple(x.shape)}")


def int_array(x: Any, name: str, xp: Any, ndim: int | None = None) -> None:
    """Raise unless ``x`` is an integer array (of rank ``ndim`` when given)."""
    if not xp.isdtype(x.dtype, "integral"):
        raise TypeError(f"{name} must be an integer array (pooling positions), got dtype {x.dtype}")
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"{name} must have rank {ndim} (N, C, H, W), got shape {tuple(x.shape)}")


def same_dtype(a: Any, b: Any, name_a: str, name_b: str) -> None:
    """Raise unless two floating arrays share a dtype (no silent promotion)."""
    if a.dtype != b.dtype:
        raise TypeError(f"{name_a} has dtype {a.dtype} but {name_b} has dtype {b.dtype}; cast one of them")


def int_at_least(value: Any, name: str, minimum: int) -> int:
    """``value`` as a Python int >= ``minimum``, or a clear error naming ``name`` (used by the models too)."""
    try:
        v = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}") from None
    if v < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {v}")
    return v


def nonneg_int(value: Any, name: str) -> int:
    """``value`` as a Python int >= 0, or a clear error."""
    return int_at_least(value, name, 0)


def pos_int(value: Any, name: str) -> int:
    """``value`` as a Python int >= 1, or a clear error."""
    return int_at_least(value, name, 1)


def namespace(*arrays: Any, names: tuple[str, ...], xp: Any = None) -> Any:
    """Namespace of the arguments (mixed namespaces or devices raise, naming the argument)."""
    return get_namespace(*arrays, xp=xp, names=names)
