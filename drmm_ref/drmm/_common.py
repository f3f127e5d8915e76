"""Argument checks and small helpers shared by the DRMM modules (messages name what to change).

The public model functions (``bottom_up``, ``top_down`` / ``render``, ``log_joint``, ``sample``)
and the learning steps built on them share these rules (``docs/guarantees.md``):

* an empty batch (N = 0) is an error naming the argument (:func:`check_images`,
  :func:`as_classes`); the primitives below them map empty to empty;
* counts are integers (``2.7`` or ``"3"`` are refused, not truncated: :func:`check_count`);
* class indices are integers (``0.5`` is refused, not truncated: :func:`as_classes`);
* a result that overflows the working precision (inf or NaN out of finite inputs, e.g. float32
  images of magnitude 1e30) is an error saying so (:func:`check_finite_output`), never returned.
"""

from __future__ import annotations

import operator
from typing import Any

import array_api_compat
import numpy as np

from .. import _backend
from ..primitives._checks import finite_result, int_at_least

__all__ = ["host_rng", "check_images", "check_count", "check_finite_output", "as_classes", "one_hot", "channel_bias"]


host_rng = _backend.host_rng


def check_images(params: Any, images: Any, name: str = "images", *, check_finite: bool = True) -> Any:
    """Namespace of ``images`` after checking them against ``params``.

    Checks: an array of the parameters' namespace and device, real floating of the parameters'
    dtype, shape ``(N, C_0, H_0, W_0)`` of the network with ``N >= 1`` (an empty batch is an error
    at the model boundary), and finite values (unless ``check_finite=False``).
    """
    xp = _backend.get_namespace(images, params.class_templates, names=(name, "params.class_templates"))
    net = params.net
    if not xp.isdtype(images.dtype, "real floating"):
        raise TypeError(f"{name} must be a real floating array, got dtype {images.dtype}")
    if images.ndim != 4 or tuple(images.shape[1:]) != net.image_shape:
        raise ValueError(f"{name} must have shape (N, {', '.join(map(str, net.image_shape))}) for network "
                         f"{net.name!r}, got {tuple(images.shape)}")
    if images.shape[0] < 1:
        raise ValueError(f"{name} must hold at least one image, got an empty batch of shape {tuple(images.shape)}")
    if images.dtype != params.dtype:
        raise TypeError(f"{name} has dtype {images.dtype} but the parameters are {params.dtype}; cast one of them "
                        "(params.to(xp, dtype=...) or xp.astype(images, ...))")
    if check_finite and images.shape[0] and not bool(xp.all(xp.isfinite(images))):
        raise ValueError(f"{name} contain NaN or infinite values; clean the data first")
    return xp


def check_count(value: Any, name: str = "n") -> int:
    """``value`` as a Python int >= 1: a count of examples (``2.7``, ``"3"``, ``True`` and 0 are refused)."""
    return int_at_least(value, name, 1)


def check_finite_output(value: Any, what: str, inputs: str = "images") -> Any:
    """Return ``value`` unless it holds inf or NaN (overflow of finite inputs): see
    :func:`drmm_ref.primitives._checks.finite_result`, which raises ``ValueError`` naming ``what``."""
    return finite_result(value, what, inputs)


def as_classes(classes: Any, n_classes: int, n: int | None, xp: Any, device: Any, name: str = "classes") -> Any:
    """``classes`` as an int64 array of shape (N,) in ``[0, K)``; a Python int is broadcast to ``n``."""
    if isinstance(classes, (int, np.integer)) and not isinstance(classes, bool):
        c = operator.index(classes)
        if not 0 <= c < n_classes:
            raise ValueError(f"{name}={c} is out of range: the network has K = {n_classes} classes "
                             f"(0..{n_classes - 1})")
        if n is None:
            raise ValueError(f"{name} is a single int; pass an array of shape (N,) when N is not otherwise known")
        return _nonempty(xp.full((n,), c, dtype=xp.int64, device=device), name)
    if not array_api_compat.is_array_api_obj(classes):
        if not isinstance(classes, (list, tuple)):
            raise TypeError(f"{name} must be an int, a sequence or an integer array, got {type(classes).__name__}")
        host = np.asarray(classes)
        if host.size and not np.issubdtype(host.dtype, np.integer):
            raise TypeError(f"{name} must hold integer class indices, got {classes!r} (dtype {host.dtype}); "
                            "class indices are never rounded")
        classes = _backend.asarray(host.astype(np.int64).reshape(-1), xp=xp, device=device)
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
    return _nonempty(xp.astype(classes, xp.int64), name)


def _nonempty(classes: Any, name: str) -> Any:
    if classes.shape[0] == 0:
        raise ValueError(f"{name} is empty (N = 0): the batch must hold at least one example")
    return classes


def one_hot(classes: Any, n_classes: int, dtype: Any, xp: Any) -> Any:
    """``(N, K)`` float one-hot rows of int ``classes``."""
    ks = xp.arange(n_classes, dtype=classes.dtype, device=_backend.device_of(classes))
    return xp.astype(xp.expand_dims(classes, axis=1) == ks, dtype)


def channel_bias(b: Any, xp: Any) -> Any:
    """A per-channel bias ``(C,)`` reshaped to broadcast over NCHW maps."""
    return xp.reshape(b, (1, b.shape[0], 1, 1))
