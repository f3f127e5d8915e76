"""Argument checks and small helpers shared by the DRMM modules (messages name what to change)."""

from __future__ import annotations

import operator
from typing import Any

import array_api_compat
import numpy as np

from .. import _backend

__all__ = ["host_rng", "check_images", "as_classes", "one_hot", "channel_bias"]


host_rng = _backend.host_rng


def check_images(params: Any, images: Any, name: str = "images", *, check_finite: bool = True) -> Any:
    """Namespace of ``images`` after checking them against ``params`` (shape, dtype, device, finiteness)."""
    xp = _backend.get_namespace(images, params.class_templates, names=(name, "params.class_templates"))
    net = params.net
    if not xp.isdtype(images.dtype, "real floating"):
        raise TypeError(f"{name} must be a real floating array, got dtype {images.dtype}")
    if images.ndim != 4 or tuple(images.shape[1:]) != net.image_shape:
        raise ValueError(f"{name} must have shape (N, {', '.join(map(str, net.image_shape))}) for network "
                         f"{net.name!r}, got {tuple(images.shape)}")
    if images.dtype != params.dtype:
        raise TypeError(f"{name} has dtype {images.dtype} but the parameters are {params.dtype}; cast one of them "
                        "(params.to(xp, dtype=...) or xp.astype(images, ...))")
    if check_finite and images.shape[0] and not bool(xp.all(xp.isfinite(images))):
        raise ValueError(f"{name} contain NaN or infinite values; clean the data first")
    return xp


def as_classes(classes: Any, n_classes: int, n: int | None, xp: Any, device: Any, name: str = "classes") -> Any:
    """``classes`` as an int64 array of shape (N,) in ``[0, K)``; a Python int is broadcast to ``n``."""
    if isinstance(classes, (int, np.integer)) and not isinstance(classes, bool):
        c = operator.index(classes)
        if not 0 <= c < n_classes:
            raise ValueError(f"{name}={c} is out of range: the network has K = {n_classes} classes "
                             f"(0..{n_classes - 1})")
        if n is None:
            raise ValueError(f"{name} is a single int; pass an array of shape (N,) when N is not otherwise known")
        return xp.full((n,), c, dtype=xp.int64, device=device)
    if not array_api_compat.is_array_api_obj(classes):
        if not isinstance(classes, (list, tuple)):
            raise TypeError(f"{name} must be an int, a sequence or an integer array, got {type(classes).__name__}")
        classes = _backend.asarray(np.asarray(classes, dtype=np.int64).reshape(-1), xp=xp, device=device)
    space = _backend.get_namespace(classes, names=(name,))
    if space is not xp:
        raise TypeError(f"{name} is a {_backend.namespace_name(space)} array but the parameters use "
                        f"{_backend.namespace_name(xp)}; move it with xp.asarray")
    if not xp.isdtype(classes.dtype, "integral"):
        raise TypeError(f"{name} must be an integer array of class indices, got dtype {classes.dtype}")
    if classes.ndim != 1 or (n is not None and classes.shape[0] != n):
        want = f"({n},)" if n is not None else "(N,)"
        raise ValueError(f"{name} must have shape {want}, got {tuple(classes.shape)}")
    if classes.shape[0] and (bool(xp.any(classes < 0)) or bool(xp.any(classes >= n_classes))):
        raise ValueError(f"{name} out of range: the network has K = {n_classes} classes (0..{n_classes - 1})")
    return xp.astype(classes, xp.int64)


def one_hot(classes: Any, n_classes: int, dtype: Any, xp: Any) -> Any:
    """``(N, K)`` float one-hot rows of int ``classes``."""
    ks = xp.arange(n_classes, dtype=classes.dtype, device=_backend.device_of(classes))
    return xp.astype(xp.expand_dims(classes, axis=1) == ks, dtype)


def channel_bias(b: Any, xp: Any) -> Any:
    """A per-channel bias ``(C,)`` reshaped to broadcast over NCHW maps."""
    return xp.reshape(b, (1, b.shape[0], 1, 1))
