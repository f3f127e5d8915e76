"""Parameters of the shallow Rendering Mixture Model (SPEC §1; Patel et al. 2016 §2.1).

The model renders one template at one position of a blank image and adds white noise:

.. math:: I = a\\, T_g \\mu_{c,m} + \\varepsilon, \\qquad \\varepsilon \\sim \\mathcal N(0, \\sigma^2 \\mathrm{Id})

with class ``c`` (prior ``pi_c``), sub-template ``m`` (uniform prior ``1/M``), position ``g`` on the
grid ``G`` (prior ``pi_g``), switch ``a`` (prior ``pi_on``). :class:`RMMParams` holds these
parameters together with the geometry that fixes ``G`` (image side, zero padding) and the nuisance
form (global translation, or translation inside one pooling window).

Decisions where SPEC is silent (also in ``docs/rmm.md``):

* The switch prior is stored per class, shape ``(K,)``: SPEC §4's inverse map needs per-class
  ``pi_on,c``; a scalar is accepted and broadcast. EM learns one shared ``pi_on`` (SPEC §1).
* ``0 < pi_on,c < 1`` strictly (``ln pi_off`` and ``ln(pi_on / pi_off)`` must be finite).
* ``pi_c > 0`` strictly. The nuisance prior may contain zeros (a position that is never used),
  but must give positive mass to every pooling window in the window form.
* The grid of positions is the conv output grid: with padding ``q`` it has side
  ``H + 2q - k + 1`` and a template drawn at a partly outside position is clipped to the image.
* Window form (``pool = p``): the nuisance of the model for window ``r`` ranges over the
  ``p x p`` positions of ``r`` with prior ``pi_{g | r} = pi_g / pi(r)``; inference returns one
  result per window. Sampling picks the window uniformly, then ``g`` from ``pi_{g | r}``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Optional

import numpy as np

from .._backend import device_of, get_namespace, to_numpy
from ..primitives._checks import int_at_least

__all__ = ["RMMParams", "PARAMS_VERSION"]

#: Version of the parameter layout, saved with the parameters.
PARAMS_VERSION = 1

#: How far from one a probability vector's sum may be before it is rejected (it is then renormalised).
_SUM_TOL = 1e-6


_as_int = int_at_least


def _finite_host(x: Any, name: str) -> np.ndarray:
    host = np.asarray(to_numpy(x), dtype=np.float64)
    if not np.all(np.isfinite(host)):
        raise ValueError(f"{name} contains NaN or inf; every entry must be finite")
    return host


@dataclasses.dataclass(frozen=True, eq=False)
class RMMParams:
    """Parameters of a shallow RMM (SPEC §1). Frozen; build a new one to change a field.

    Parameters
    ----------
    templates : array of shape (K, M, C, k, k)
        Template ``mu_{c,m}`` of class ``c``, sub-template ``m`` (square ``k x k`` patches with
        ``C`` channels). Real floating; it fixes the namespace, device and dtype of the model.
    class_prior : array of shape (K,)
        ``pi_c``, strictly positive, summing to one (within 1e-6; stored renormalised).
    switch_prior : float or array of shape (K,)
        ``pi_on`` (shared) or ``pi_on,c`` (per class), each strictly inside (0, 1).
    sigma2 : float
        Noise variance ``sigma^2 > 0``.
    image_shape : tuple of int
        ``(H, W)`` of the images the model describes (``D = C H W`` pixels).
    padding : int, default 0
        Zero padding ``q``: positions whose stamp sticks out of the image by up to ``q`` pixels
        are allowed, and the stamp is clipped (SPEC §1, "zero-padded positions").
    nuisance_prior : array of shape (Hg, Wg), optional
        ``pi_g`` over the grid of positions, non-negative, summing to one. ``None``: uniform.
    pool : int, optional
        ``None``: the nuisance is a translation over the whole grid (global form). ``p``: window
        form, one model per ``p x p`` pooling window of the grid (its sides must be divisible by ``p``).
    version : int
        Layout version (:data:`PARAMS_VERSION`).

    Raises
    ------
    ValueError
        Naming the argument: wrong rank or shape, NaN/inf, a probability outside its range or a
        vector that does not sum to one, ``sigma2 <= 0``, a grid smaller than one position, a pool
        size that does not divide the grid, a window with no nuisance mass.
    TypeError
        Non-floating templates, priors of another namespace or dtype.
    """

    templates: Any
    class_prior: Any
    switch_prior: Any
    sigma2: float
    image_shape: tuple
    padding: int = 0
    nuisance_prior: Optional[Any] = None
    pool: Optional[int] = None
    version: int = PARAMS_VERSION

    def __post_init__(self):
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 (frozen dataclass)
        t = self.templates
        xp = get_namespace(t, names=("templates",))
        if not (t.dtype == xp.float32 or t.dtype == xp.float64):
            raise TypeError(f"templates must be a real floating array (float32 or float64), got dtype {t.dtype}")
        if t.ndim != 5 or t.shape[3] != t.shape[4] or min(t.shape) < 1:
            raise ValueError(f"templates must have shape (K, M, C, k, k) with square patches, got {tuple(t.shape)}")
        _finite_host(t, "templates")
        K = t.shape[0]
        dev = device_of(t)
        to_xp = lambda host: xp.asarray(host, dtype=t.dtype, device=dev)  # noqa: E731

        # class prior
        get_namespace(t, self.class_prior, names=("templates", "class_prior"))
        cp = _finite_host(self.class_prior, "class_prior")
        if cp.shape != (K,):
            raise ValueError(f"class_prior must have shape (K,) = ({K},), got {cp.shape}")
        if np.any(cp <= 0):
            raise ValueError("class_prior must be strictly positive (ln pi_c must be finite)")
        if abs(cp.sum() - 1.0) > _SUM_TOL:
            raise ValueError(f"class_prior must sum to one, sums to {cp.sum():.8g}")
        set_("class_prior", to_xp(cp / cp.sum()))

        # switch prior: scalar or per class
        if isinstance(self.switch_prior, (int, float, np.floating, np.integer)):
            sp = np.full(K, float(self.switch_prior))
        else:
            get_namespace(t, self.switch_prior, names=("templates", "switch_prior"))
            sp = _finite_host(self.switch_prior, "switch_prior")
            if sp.shape == ():
                sp = np.full(K, float(sp))
        if not np.all(np.isfinite(sp)):
            raise ValueError("switch_prior contains NaN or inf")
        if sp.shape != (K,):
            raise ValueError(f"switch_prior must be a scalar or have shape (K,) = ({K},), got {sp.shape}")
        if np.any(sp <= 0) or np.any(sp >= 1):
            raise ValueError(f"switch_prior (pi_on) must lie strictly inside (0, 1), got {sp}")
        set_("switch_prior", to_xp(sp))

        # noise variance
        try:
            s2 = float(self.sigma2)
        except (TypeError, ValueError):
            s2 = float(_finite_host(self.sigma2, "sigma2"))
        if not math.isfinite(s2) or s2 <= 0:
            raise ValueError(f"sigma2 must be a finite number > 0, got {self.sigma2!r}")
        set_("sigma2", s2)

        # geometry
        shape = tuple(self.image_shape) if not isinstance(self.image_shape, int) else None
        if shape is None or len(shape) != 2:
            raise ValueError(f"image_shape must be (H, W), got {self.image_shape!r}")
        H, W = (_as_int(v, "image_shape", 1) for v in shape)
        set_("image_shape", (H, W))
        q = _as_int(self.padding, "padding", 0)
        set_("padding", q)
        k = t.shape[3]
        if q >= k:
            raise ValueError(f"padding must be < the template side k = {k} (a stamp must touch the image), got {q}")
        hg, wg = H + 2 * q - k + 1, W + 2 * q - k + 1
        if hg < 1 or wg < 1:
            raise ValueError(
                f"templates of side {k} do not fit images of shape {(H, W)} with padding {q}; "
                "increase image_shape or padding"
            )
        if self.pool is not None:
            p = _as_int(self.pool, "pool", 1)
            if hg % p or wg % p:
                raise ValueError(
                    f"pool {p} does not divide the grid of positions {hg}x{wg} (image {H}x{W}, k={k}, padding {q}); "
                    "change pool, padding or image_shape"
                )
            set_("pool", p)

        # nuisance prior
        if self.nuisance_prior is not None:
            get_namespace(t, self.nuisance_prior, names=("templates", "nuisance_prior"))
            npri = _finite_host(self.nuisance_prior, "nuisance_prior")
            if npri.shape != (hg, wg):
                raise ValueError(f"nuisance_prior must have the grid's shape (Hg, Wg) = {(hg, wg)}, got {npri.shape}")
            if np.any(npri < 0):
                raise ValueError("nuisance_prior must be non-negative")
            if abs(npri.sum() - 1.0) > _SUM_TOL:
                raise ValueError(f"nuisance_prior must sum to one, sums to {npri.sum():.8g}")
            if self.pool is not None:
                p = self.pool
                mass = npri.reshape(hg // p, p, wg // p, p).sum(axis=(1, 3))
                if np.any(mass <= 0):
                    raise ValueError("nuisance_prior gives zero mass to a pooling window; every window needs mass > 0")
            set_("nuisance_prior", to_xp(npri / npri.sum()))
        if self.version != PARAMS_VERSION:
            raise ValueError(f"version {self.version} is not supported (this library writes {PARAMS_VERSION})")

    # ---- derived quantities -------------------------------------------------------------
    @property
    def xp(self) -> Any:
        """The Array API namespace of the parameters."""
        return get_namespace(self.templates)

    @property
    def dtype(self) -> Any:
        return self.templates.dtype

    @property
    def num_classes(self) -> int:
        """``K``."""
        return int(self.templates.shape[0])

    @property
    def num_subtemplates(self) -> int:
        """``M``."""
        return int(self.templates.shape[1])

    @property
    def channels(self) -> int:
        """``C``."""
        return int(self.templates.shape[2])

    @property
    def kernel(self) -> int:
        """Template side ``k``."""
        return int(self.templates.shape[3])

    @property
    def grid_shape(self) -> tuple[int, int]:
        """``(Hg, Wg)``: the grid of positions, ``H + 2q - k + 1`` by ``W + 2q - k + 1``."""
        H, W = self.image_shape
        k, q = self.kernel, self.padding
        return H + 2 * q - k + 1, W + 2 * q - k + 1

    @property
    def num_pixels(self) -> int:
        """``D = C H W``."""
        return self.channels * self.image_shape[0] * self.image_shape[1]

    @property
    def windows_shape(self) -> tuple[int, int]:
        """Number of pooling windows ``(Hg/p, Wg/p)``; ``(1, 1)`` in the global form."""
        hg, wg = self.grid_shape
        return (1, 1) if self.pool is None else (hg // self.pool, wg // self.pool)

    @property
    def positions_per_model(self) -> int:
        """``|G|`` of one model: the whole grid (global form) or ``p^2`` (window form)."""
        hg, wg = self.grid_shape
        return hg * wg if self.pool is None else self.pool * self.pool

    def replace(self, **changes: Any) -> "RMMParams":
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def astype(self, dtype: Any) -> "RMMParams":
        """The same model with its arrays cast to ``dtype`` (``float32`` or ``float64`` of its namespace)."""
        xp = self.xp
        cast = lambda a: None if a is None else xp.astype(a, dtype)  # noqa: E731
        return dataclasses.replace(self, templates=cast(self.templates), class_prior=cast(self.class_prior),
                                   switch_prior=cast(self.switch_prior), nuisance_prior=cast(self.nuisance_prior))

    def to_host(self) -> dict:
        """Plain dictionary of NumPy arrays and numbers (for saving); includes ``version``."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for name in ("templates", "class_prior", "switch_prior", "nuisance_prior"):
            if out[name] is not None:
                out[name] = np.asarray(to_numpy(out[name]))
        return out
