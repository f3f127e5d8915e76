"""Argument checks shared by the primitives: every message names the argument to change."""

from __future__ import annotations

import operator
from typing import Any

from .._backend import get_namespace


def is_supported_float(dtype: Any, xp: Any) -> bool:
    """True for float32 and float64, the two working precisions (float16 and others are refused)."""
    return dtype == xp.float32 or dtype == xp.float64


def float_array(x: Any, name: str, xp: Any, ndim: int | None = None) -> None:
    """Raise unless ``x`` is a float32 or float64 array (of rank ``ndim`` when given).

    float16 (and any other floating type) is refused: the kernels' accumulations and the
    tolerances of the identity checks are stated for float32 and float64 only.
    """
    if not is_supported_float(x.dtype, xp):
        raise TypeError(f"{name} must be a real floating array (float32 or float64), got dtype {x.dtype}"
                        + ("; cast it with xp.astype(..., xp.float32)" if xp.isdtype(x.dtype, "real floating") else ""))
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
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, got the bool {value}")
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


def finite_result(value: Any, what: str, inputs: str = "images") -> Any:
    """Return ``value`` unless it holds inf or NaN, which finite inputs only produce by overflow.

    Used by the models' public functions on what they return (``docs/guarantees.md``): whether a
    product overflows depends on the parameters as much as on the inputs, so the outputs are
    checked rather than the inputs bounded. One reduction over the output.

    Raises
    ------
    ValueError
        Naming the result, the dtype and what to change.
    """
    xp = get_namespace(value)
    if any(d == 0 for d in value.shape):
        return value
    if not bool(xp.all(xp.isfinite(value))):
        dtype = value.dtype
        raise ValueError(f"{what} overflowed {dtype} (inf or NaN from finite {inputs}): the {inputs} or the "
                         f"parameters are too large for {dtype}; scale the {inputs} down (e.g. to [0, 1]) or use "
                         "float64")
    return value
