"""DRMM parameters: a frozen dataclass of arrays, its checks, and seeded initialisation.

SPEC §2 (Patel et al. 2016, §2.2). The generative parameters are the filters ``W^(l)`` (the
rendering matrices' building blocks), the class templates ``mu_c``, the class prior ``pi_c``, the
per-layer switch prior ``pi_on^(l)`` and the noise variance ``sigma^2``. The DCN that runs
max-sum inference also has biases: one per channel and layer, ``b^(l)`` (added to ``u^(l)``), and
one per class, ``b_c`` (added to the score ``s_c``). The generative model does not use the
biases (SPEC §2, D1: equality needs them zero; SPEC §4: nonzero biases make the DCN compute a
lower bound); the learning code trains them in its G-steps.

Our choices where SPEC is silent:

* biases are per channel (the usual convolution bias), ``b^(l)`` of shape ``(C_l,)``;
* the noise variance is a Python float (a scalar, not an array), so it travels unchanged between
  namespaces and is saved bit-exactly;
* the initial filters are He-normal, ``N(0, 2 / (C_{l-1} k_l^2))``, the templates
  ``N(0, 1 / (C_L H_L W_L))`` (``N(0, 1 / C_L)`` when spatially constant); with
  ``d1_condition=True`` every filter above layer 1 and every template is replaced by its absolute
  value and every bias is zero, which satisfies D1's condition for every latent configuration
  (the partial renderings ``z^(l)``, ``l >= 1``, are then non-negative).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from .. import _backend
from ..numerics import dtype_name
from ._common import host_rng
from .network import Network

__all__ = ["DRMMParams", "NonFiniteParameters", "init_params", "template_maps"]


class NonFiniteParameters(ValueError):
    """A parameter array holds NaN or inf (e.g. after a diverging optimiser step).

    Attributes
    ----------
    field : str
        The offending field (``"filters[1] (layer 2)"``, ``"class_templates"``, ...).
    """

    def __init__(self, message: str, field: str):
        super().__init__(message)
        self.field = field


@dataclasses.dataclass(frozen=True, eq=False)
class DRMMParams:
    """Parameters of a DRMM and of the DCN that runs its max-sum inference (SPEC §2).

    All arrays share one namespace, device and floating dtype (float32 or float64); the
    constructor checks their shapes against ``net`` and their values (every entry finite) and
    raises ``ValueError`` naming the offending field and layer (:class:`NonFiniteParameters` for
    NaN or inf, so a diverged optimiser step cannot produce parameters that silently give NaN).
    Instances compare by identity (arrays have no single truth value); ``replace`` makes a
    checked copy.

    Parameters
    ----------
    net : Network
        The structure these parameters fill.
    filters : tuple of L arrays, ``filters[l-1]`` of shape (C_l, C_{l-1}, k_l, k_l)
        ``W^(l)`` in OIHW layout (cross-correlation, SPEC §0).
    biases : tuple of L arrays, ``biases[l-1]`` of shape (C_l,)
        ``b^(l)``, added per channel to ``u^(l) = conv2d(h^(l-1), W^(l), q_l) + b^(l)``.
    class_templates : array of shape (K, C_L, H_L, W_L), or (K, C_L, 1, 1) for constant templates
        ``mu_c``, the top-level renderings ``z^(L)``.
    class_biases : array of shape (K,)
        ``b_c`` in the scores ``s_c = <mu_c, h^(L)> + b_c``.
    class_prior : array of shape (K,)
        ``pi_c`` (positive, sums to one).
    switch_prior : array of shape (L,)
        ``pi_on^(l)`` in (0, 1): probability that a layer-l unit is on.
    noise_variance : float
        ``sigma^2 > 0`` of the pixel noise.
    """

    net: Network
    filters: tuple[Any, ...]
    biases: tuple[Any, ...]
    class_templates: Any
    class_biases: Any
    class_prior: Any
    switch_prior: Any
    noise_variance: float

    def __post_init__(self):
        net = self.net
        if not isinstance(net, Network):
            raise TypeError(f"net must be a drmm_ref Network, got {type(net).__name__}")
        filters, biases = tuple(self.filters), tuple(self.biases)
        object.__setattr__(self, "filters", filters)
        object.__setattr__(self, "biases", biases)
        if len(filters) != net.L or len(biases) != net.L:
            raise ValueError(f"net {net.name!r} has {net.L} layers but got {len(filters)} filter arrays "
                             f"and {len(biases)} bias arrays")
        arrays = list(filters) + list(biases) + [self.class_templates, self.class_biases, self.class_prior,
                                                 self.switch_prior]
        names = ([f"filters[{i}] (layer {i + 1})" for i in range(net.L)]
                 + [f"biases[{i}] (layer {i + 1})" for i in range(net.L)]
                 + ["class_templates", "class_biases", "class_prior", "switch_prior"])
        xp = _backend.get_namespace(*arrays, names=tuple(names))
        dtype = self.class_templates.dtype
        if not (dtype == xp.float32 or dtype == xp.float64):
            raise TypeError(f"class_templates must be float32 or float64, got dtype {dtype}")
        expected = ([net.filter_shapes[i] for i in range(net.L)] + [(ly.channels,) for ly in net.layers]
                    + [net.template_shape, (net.n_classes,), (net.n_classes,), (net.L,)])
        for name, a, shape in zip(names, arrays, expected):
            if a.dtype != dtype:
                raise TypeError(f"{name} has dtype {a.dtype} but class_templates has {dtype}; use one dtype")
            if tuple(a.shape) != tuple(shape):
                raise ValueError(f"{name} has shape {tuple(a.shape)} but network {net.name!r} needs {tuple(shape)}")
        finite = [xp.all(xp.isfinite(a)) for a in arrays]
        all_finite = finite[0]
        for f in finite[1:]:
            all_finite = xp.logical_and(all_finite, f)
        if not bool(all_finite):  # one host synchronisation; the culprit is looked for only on failure
            name = next(n for n, f in zip(names, finite) if not bool(f))
            raise NonFiniteParameters(f"{name} contains NaN or inf; every parameter must be finite "
                                      "(a diverged training step? lower the learning rate)", name)
        try:
            s2 = float(self.noise_variance)
        except (TypeError, ValueError):
            raise TypeError(f"noise_variance must be a real number, got {self.noise_variance!r}") from None
        if not (s2 > 0 and math.isfinite(s2)):
            raise ValueError(f"noise_variance must be positive and finite, got {s2}")
        object.__setattr__(self, "noise_variance", s2)
        prior = _backend.to_numpy(self.class_prior).astype(np.float64)
        if np.any(~np.isfinite(prior)) or np.any(prior <= 0) or abs(prior.sum() - 1.0) > 1e-6:
            raise ValueError(f"class_prior must be positive and sum to 1, got {prior}")
        on = _backend.to_numpy(self.switch_prior).astype(np.float64)
        if np.any(~np.isfinite(on)) or np.any(on <= 0) or np.any(on >= 1):
            raise ValueError(f"switch_prior must lie strictly between 0 and 1 (per layer), got {on}")

    @property
    def xp(self) -> Any:
        """The Array API namespace of the arrays."""
        return _backend.get_namespace(self.class_templates)

    @property
    def dtype(self) -> Any:
        return self.class_templates.dtype

    @property
    def device(self) -> Any:
        return _backend.device_of(self.class_templates)

    def replace(self, **changes: Any) -> DRMMParams:
        """A copy with some fields changed (checked again), e.g. ``params.replace(noise_variance=0.5)``."""
        return dataclasses.replace(self, **changes)

    def to(self, xp: Any, device: Any = None, dtype: Any = None) -> DRMMParams:
        """The same parameters on another namespace / device / dtype (host round trip)."""
        space = _backend.resolve_namespace(xp)

        def move(a):
            host = _backend.to_numpy(a)
            if dtype is not None:
                host = host.astype(dtype_name(dtype))
            return _backend.asarray(host, xp=space, device=device)

        return DRMMParams(self.net, tuple(move(w) for w in self.filters), tuple(move(b) for b in self.biases),
                          move(self.class_templates), move(self.class_biases), move(self.class_prior),
                          move(self.switch_prior), self.noise_variance)


def template_maps(params: DRMMParams) -> Any:
    """Class templates on the full top grid, shape ``(K, C_L, H_L, W_L)`` (constant ones broadcast)."""
    mu = params.class_templates
    if not params.net.constant_templates:
        return mu
    xp = params.xp
    k, c, h, w = (params.net.n_classes,) + params.net.shapes[-1]
    return mu * xp.ones((k, c, h, w), dtype=mu.dtype, device=_backend.device_of(mu))


def init_params(net: Network, seed: Any = 0, *, d1_condition: bool = False, bias_scale: float = 0.0,
                class_bias_scale: float = 0.0, switch_prior: Any = 0.5, class_prior: Any = None,
                noise_variance: float = 0.01, weight_gain: float = 1.0, dtype: str = "float64",
                xp: Any = "numpy", device: Any = None) -> DRMMParams:
    """Seeded random parameters for ``net`` (drawn on the host with ``default_rng(seed)``).

    Parameters
    ----------
    net : Network or str
        A network, or the name of a preset (:func:`~drmm_ref.drmm.preset`).
    seed : int, SeedSequence or Generator, default 0
    d1_condition : bool, default False
        Make every partial rendering non-negative (SPEC §2, D1): filters of layers ``2..L`` and the
        class templates are ``|N(0, s^2)|``, layer-1 filters keep their sign, all biases are zero
        (``bias_scale`` and ``class_bias_scale`` must then be 0).
    bias_scale, class_bias_scale : float, default 0
        Standard deviations of the normal layer biases ``b^(l)`` and class biases ``b_c``.
    switch_prior : float or sequence of L floats, default 0.5
        ``pi_on^(l)``.
    class_prior : sequence of K floats, optional
        ``pi_c``; uniform by default.
    noise_variance : float, default 0.01
    weight_gain : float, default 1
        Multiplies the He-normal filter scale ``sqrt(2 / (C_{l-1} k_l^2))``.
    dtype : {"float64", "float32"}
    xp, device :
        Target namespace (module or name) and device.

    Returns
    -------
    DRMMParams
    """
    if isinstance(net, str):
        from .network import preset

        net = preset(net)
    if not isinstance(net, Network):
        raise TypeError(f"net must be a drmm_ref Network or a preset name, got {type(net).__name__}")
    dtype = dtype_name(dtype)
    for name, v in (("bias_scale", bias_scale), ("class_bias_scale", class_bias_scale),
                    ("weight_gain", weight_gain)):
        if not (math.isfinite(float(v)) and float(v) >= 0):
            raise ValueError(f"{name} must be finite and >= 0, got {v}")
    if d1_condition and (bias_scale or class_bias_scale):
        raise ValueError("d1_condition=True needs zero biases: leave bias_scale and class_bias_scale at 0")
    rng = host_rng(seed)
    space = _backend.resolve_namespace(xp)

    def put(a):
        return _backend.asarray(np.asarray(a, dtype=np.float64).astype(dtype), xp=space, device=device)

    filters, biases = [], []
    for l, shape in enumerate(net.filter_shapes, start=1):
        _, cin, k, _ = shape
        w = rng.standard_normal(shape) * weight_gain * math.sqrt(2.0 / (cin * k * k))
        filters.append(put(np.abs(w) if d1_condition and l > 1 else w))
        biases.append(put(rng.standard_normal(shape[0]) * bias_scale))
    tshape = net.template_shape
    mu = rng.standard_normal(tshape) / math.sqrt(math.prod(tshape[1:]))
    if d1_condition:
        mu = np.abs(mu)
    class_biases = rng.standard_normal(net.n_classes) * class_bias_scale
    if class_prior is None:
        class_prior = np.full(net.n_classes, 1.0 / net.n_classes)
    on = np.broadcast_to(np.asarray(switch_prior, dtype=np.float64), (net.L,))
    return DRMMParams(net, tuple(filters), tuple(biases), put(mu), put(class_biases), put(class_prior), put(on),
                      float(noise_variance))
