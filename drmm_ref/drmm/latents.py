"""The DRMM's per-unit latent variables ``g^(l) = (t^(l), a^(l))`` (SPEC §2).

Every unit ``j`` of layer ``l`` (a point of the pooled grid ``C_l x H_l x W_l``) carries a
position ``t_j in {0, ..., p_l^2 - 1}`` inside its pooling window (row-major, as
:func:`drmm_ref.primitives.maxpool2d` returns it) and a switch ``a_j in {0, 1}``. The rendering
operator of the layer places ``a_j z_j`` at position ``t_j`` of the unit's window.

A configuration with ``a_j = 0`` renders the same whatever ``t_j`` is; :meth:`Latents.canonical`
sets ``t_j = 0`` there (the number of canonical configurations of layer ``l`` is
``(p_l^2 + 1)^(C_l H_l W_l)``, SPEC §2, D3).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from .. import _backend

__all__ = ["Latents", "check_latents"]


@dataclasses.dataclass(frozen=True, eq=False)
class Latents:
    """Positions and switches of every unit of every layer, for a batch of N examples.

    Parameters
    ----------
    positions : tuple of L int64 arrays, ``positions[l-1]`` of shape (N, C_l, H_l, W_l)
        ``t^(l)``, row-major positions in ``[0, p_l^2)`` (all zero where ``p_l = 1``).
    switches : tuple of L bool arrays, ``switches[l-1]`` of shape (N, C_l, H_l, W_l)
        ``a^(l)``.
    """

    positions: tuple[Any, ...]
    switches: tuple[Any, ...]

    def __post_init__(self):
        object.__setattr__(self, "positions", tuple(self.positions))
        object.__setattr__(self, "switches", tuple(self.switches))
        if len(self.positions) != len(self.switches):
            raise ValueError(f"latents have {len(self.positions)} position arrays but {len(self.switches)} "
                             "switch arrays; give one of each per layer")

    @property
    def n(self) -> int:
        """Batch size N."""
        return int(self.positions[0].shape[0]) if self.positions else 0

    def canonical(self) -> Latents:
        """Same renderings, with ``t = 0`` wherever ``a = 0`` (a = 0 frees t)."""
        xp = _backend.get_namespace(*self.positions)
        return Latents(tuple(xp.where(a, t, xp.zeros_like(t)) for t, a in zip(self.positions, self.switches)),
                       self.switches)

    def take(self, index: Any) -> Latents:
        """The latents of a subset of the batch (``index``: slice or integer array)."""
        xp = _backend.get_namespace(*self.positions)
        if isinstance(index, slice):
            return Latents(tuple(t[index, ...] for t in self.positions), tuple(a[index, ...] for a in self.switches))
        return Latents(tuple(xp.take(t, index, axis=0) for t in self.positions),
                       tuple(xp.take(a, index, axis=0) for a in self.switches))


def check_latents(net: Any, latents: Any, n: int | None, xp: Any, name: str = "latents") -> int:
    """Raise unless ``latents`` fit ``net`` (one pair per layer, shapes, dtypes, ranges); return N."""
    if not isinstance(latents, Latents):
        raise TypeError(f"{name} must be a drmm_ref Latents (e.g. bottom_up(...).latents), "
                        f"got {type(latents).__name__}")
    if len(latents.positions) != net.L:
        raise ValueError(f"{name} has {len(latents.positions)} layers but network {net.name!r} has {net.L}")
    for l in range(1, net.L + 1):
        t, a = latents.positions[l - 1], latents.switches[l - 1]
        space = _backend.get_namespace(t, a, names=(f"{name}.positions[{l - 1}]", f"{name}.switches[{l - 1}]"))
        if space is not xp:
            raise TypeError(f"{name} of layer {l} are {_backend.namespace_name(space)} arrays but the parameters "
                            f"use {_backend.namespace_name(xp)}")
        if n is None:
            n = int(t.shape[0])
        want = (n,) + tuple(net.shapes[l])
        for label, arr in (("positions", t), ("switches", a)):
            if tuple(arr.shape) != want:
                raise ValueError(f"{name}.{label}[{l - 1}] (layer {l}) has shape {tuple(arr.shape)}, expected {want}")
        if not xp.isdtype(t.dtype, "integral"):
            raise TypeError(f"{name}.positions[{l - 1}] (layer {l}) must be integer, got {t.dtype}")
        if a.dtype != xp.bool:
            raise TypeError(f"{name}.switches[{l - 1}] (layer {l}) must be bool, got {a.dtype}")
        p = net.layers[l - 1].pool
        if n and (bool(xp.any(t < 0)) or bool(xp.any(t >= p * p))):
            raise ValueError(f"{name}.positions[{l - 1}] (layer {l}) must lie in [0, {p * p - 1}] for pool size {p}")
    return int(n) if n is not None else 0
