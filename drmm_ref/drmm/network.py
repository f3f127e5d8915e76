"""The description of a DRMM / DCN: image shape, rendering layers, classes, and the presets.

SPEC §2 and §6 (Patel et al. 2016, §2.2). A network is pure structure (no arrays): the image is
``C_0 x H_0 x W_0``; rendering layer ``l = 1..L`` has ``C_l`` filters of side ``k_l`` (OIHW
``C_l x C_{l-1} x k_l x k_l``), zero padding ``q_l`` and a pool size ``p_l`` (1 = no pooling).
Its units live on the pooled grid ``C_l x H_l x W_l`` with

.. math:: H_l = (H_{l-1} + 2 q_l - k_l + 1) / p_l ,

which must be a positive integer: otherwise :class:`Network` raises an error naming the layer.

Indexing convention used throughout :mod:`drmm_ref.drmm`: Python tuples with one entry per
rendering layer hold layer ``l`` at index ``l - 1`` (``net.layers[0]`` is layer 1); tuples over
levels ``0..L`` (feature maps ``h^(l)``, renderings ``z^(l)``) hold level ``l`` at index ``l``.

Presets (SPEC §6): ``tiny`` (brute force), ``small2``, ``conv-small`` (our paddings) and
``conv-small-ladder`` (the Ladder / follow-up Conv-Small: paddings 4, 0, 2, 0 and spatially
constant class templates, i.e. global average pooling followed by a 1x1 convolution).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from ..primitives._checks import int_at_least

__all__ = ["Layer", "Network", "PRESETS", "preset"]


_int = int_at_least


@dataclasses.dataclass(frozen=True)
class Layer:
    """One rendering layer: ``channels`` filters of side ``kernel``, zero ``padding``, ``pool`` size.

    Parameters
    ----------
    channels : int
        ``C_l``, the number of filters (output channels of the convolution).
    kernel : int
        ``k_l``, the (square) filter side.
    padding : int, default 0
        ``q_l``, zeros added on every side before the convolution (SPEC §0).
    pool : int, default 1
        ``p_l``, side of the non-overlapping max-pooling windows; 1 means no pooling (then each
        unit's position latent has a single value).
    """

    channels: int
    kernel: int
    padding: int = 0
    pool: int = 1

    def __post_init__(self):
        object.__setattr__(self, "channels", _int(self.channels, "channels", 1))
        object.__setattr__(self, "kernel", _int(self.kernel, "kernel", 1))
        object.__setattr__(self, "padding", _int(self.padding, "padding", 0))
        object.__setattr__(self, "pool", _int(self.pool, "pool", 1))

    def to_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Network:
    """Structure of a DRMM: image shape, rendering layers, number of classes (SPEC §2).

    Sizes are checked on construction; an impossible layer raises ``ValueError`` naming it.

    Parameters
    ----------
    image_shape : tuple of int (C_0, H_0, W_0)
        Channels and spatial sides of the images.
    layers : sequence of Layer (or of dicts / tuples accepted by :class:`Layer`)
        Rendering layers ``1..L``, bottom (image side) first.
    n_classes : int
        ``K``.
    constant_templates : bool, default False
        Spatially constant class templates ``mu_c[k, h, w] = v_c[k]`` (the Ladder-style
        Conv-Small's global average pooling + 1x1 convolution): the parameter arrays hold
        ``K x C_L x 1 x 1`` templates, broadcast over the ``H_L x W_L`` grid. Then
        ``s_c = <mu_c, h^(L)> + b_c = H_L W_L * (GAP(h^(L)) . v_c) + b_c``.
    name : str, default "custom"
        Label used in messages and files.

    Attributes
    ----------
    L : int
        Number of rendering layers.
    shapes : tuple of (C_l, H_l, W_l), l = 0..L
        Shape of each level's pooled feature map (level 0 = the image).
    conv_shapes : tuple of (C_l, H_l p_l, W_l p_l), l = 1..L
        Shape of each layer's pre-pool map ``u^(l)``.
    """

    image_shape: tuple[int, int, int]
    layers: tuple[Layer, ...]
    n_classes: int
    constant_templates: bool = False
    name: str = "custom"

    def __post_init__(self):
        shape = tuple(self.image_shape)
        if len(shape) != 3:
            raise ValueError(f"image_shape must be (C_0, H_0, W_0), got {self.image_shape!r}")
        shape = tuple(_int(v, f"image_shape[{i}]", 1) for i, v in enumerate(shape))
        layers = []
        for i, layer in enumerate(self.layers):
            if isinstance(layer, Layer):
                layers.append(layer)
            elif isinstance(layer, dict):
                layers.append(Layer(**layer))
            else:
                layers.append(Layer(*layer))
        if not layers:
            raise ValueError("a network needs at least one rendering layer (layers is empty)")
        object.__setattr__(self, "image_shape", shape)
        object.__setattr__(self, "layers", tuple(layers))
        object.__setattr__(self, "n_classes", _int(self.n_classes, "n_classes", 1))
        object.__setattr__(self, "constant_templates", bool(self.constant_templates))
        shapes, conv_shapes = [shape], []
        c, h, w = shape
        for l, layer in enumerate(layers, start=1):
            k, q, p = layer.kernel, layer.padding, layer.pool
            ho, wo = h + 2 * q - k + 1, w + 2 * q - k + 1
            where = f"layer {l} (of {len(layers)}) of network {self.name!r}"
            if ho < 1 or wo < 1:
                raise ValueError(
                    f"{where}: kernel {k} with padding {q} does not fit its input of side {h}x{w} "
                    f"(convolution output {ho}x{wo}); use a smaller kernel or more padding"
                )
            if ho % p or wo % p:
                raise ValueError(
                    f"{where}: pool size {p} does not divide the convolution output side {ho}x{wo} "
                    f"(input {h}x{w}, kernel {k}, padding {q}); change the pool size or the padding"
                )
            conv_shapes.append((layer.channels, ho, wo))
            c, h, w = layer.channels, ho // p, wo // p
            shapes.append((c, h, w))
        object.__setattr__(self, "_shapes", tuple(shapes))
        object.__setattr__(self, "_conv_shapes", tuple(conv_shapes))

    # -- derived sizes ---------------------------------------------------------------------
    @property
    def L(self) -> int:
        return len(self.layers)

    @property
    def shapes(self) -> tuple[tuple[int, int, int], ...]:
        return self._shapes  # type: ignore[attr-defined]

    @property
    def conv_shapes(self) -> tuple[tuple[int, int, int], ...]:
        return self._conv_shapes  # type: ignore[attr-defined]

    @property
    def n_pixels(self) -> int:
        """``D = C_0 H_0 W_0``."""
        return math.prod(self.image_shape)

    @property
    def filter_shapes(self) -> tuple[tuple[int, int, int, int], ...]:
        """OIHW shape ``(C_l, C_{l-1}, k_l, k_l)`` of every layer's filters."""
        return tuple((ly.channels, self.shapes[l][0], ly.kernel, ly.kernel) for l, ly in enumerate(self.layers))

    @property
    def template_shape(self) -> tuple[int, int, int, int]:
        """Shape of the stored class templates: ``(K, C_L, H_L, W_L)``, or ``(K, C_L, 1, 1)`` if constant."""
        c, h, w = self.shapes[-1]
        return (self.n_classes, c, 1, 1) if self.constant_templates else (self.n_classes, c, h, w)

    def units(self, l: int) -> int:
        """Number of units ``C_l H_l W_l`` of layer ``l`` (1-based), each with its own (t, a)."""
        if not 1 <= l <= self.L:
            raise ValueError(f"layer index l must be in 1..{self.L}, got {l}")
        return math.prod(self.shapes[l])

    def latent_configurations(self, l: int | None = None) -> int:
        """``|G^(l)| = (2 p_l^2)^(C_l H_l W_l)``, or the product over layers when ``l`` is None (SPEC §2, D3)."""
        if l is None:
            return math.prod(self.latent_configurations(i) for i in range(1, self.L + 1))
        return (2 * self.layers[l - 1].pool ** 2) ** self.units(l)

    def log10_latent_configurations(self) -> float:
        """``log10 prod_l |G^(l)|`` without forming the (huge) integer."""
        return sum(self.units(l) * math.log10(2 * self.layers[l - 1].pool ** 2) for l in range(1, self.L + 1))

    def n_filter_template_parameters(self) -> int:
        """D3 formula: ``sum_l C_l C_{l-1} k_l^2 + K C_L H_L W_L`` (``K C_L`` for constant templates)."""
        return sum(math.prod(s) for s in self.filter_shapes) + math.prod(self.template_shape)

    # -- serialisation ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "image_shape": list(self.image_shape), "n_classes": self.n_classes,
                "constant_templates": self.constant_templates, "layers": [ly.to_dict() for ly in self.layers]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Network:
        return cls(image_shape=tuple(d["image_shape"]), layers=tuple(Layer(**ly) for ly in d["layers"]),
                   n_classes=d["n_classes"], constant_templates=d.get("constant_templates", False),
                   name=d.get("name", "custom"))

    def describe(self) -> str:
        """Multi-line summary: every level's shape, kernel, padding, pool."""
        lines = [f"network {self.name!r}: image {self.image_shape}, K = {self.n_classes}"]
        for l, ly in enumerate(self.layers, start=1):
            lines.append(f"  layer {l}: conv {ly.channels} {ly.kernel}x{ly.kernel} pad {ly.padding} "
                         f"-> {self.conv_shapes[l - 1]} -> pool {ly.pool} -> {self.shapes[l]}")
        kind = "spatially constant " if self.constant_templates else ""
        lines.append(f"  {kind}class templates {self.template_shape}")
        return "\n".join(lines)


def _tiny() -> Network:
    return Network((1, 6, 6), (Layer(1, 3, 0, 2), Layer(2, 2, 0, 1)), n_classes=2, name="tiny")


def _small2() -> Network:
    return Network((1, 28, 28), (Layer(32, 5, 0, 2), Layer(64, 5, 0, 2)), n_classes=10, name="small2")


def _conv_small() -> Network:
    return Network((1, 28, 28), (Layer(32, 5, 2, 2), Layer(64, 3, 0, 1), Layer(64, 3, 1, 2), Layer(128, 3, 0, 1)),
                   n_classes=10, name="conv-small")


def _conv_small_ladder() -> Network:
    return Network((1, 28, 28), (Layer(32, 5, 4, 2), Layer(64, 3, 0, 1), Layer(64, 3, 2, 2), Layer(128, 3, 0, 1)),
                   n_classes=10, constant_templates=True, name="conv-small-ladder")


#: Preset constructors by name (SPEC §6).
PRESETS = {"tiny": _tiny, "small2": _small2, "conv-small": _conv_small, "conv-small-ladder": _conv_small_ladder}


def preset(name: str, *, n_classes: int | None = None, image_shape: tuple[int, int, int] | None = None) -> Network:
    """A preset network of SPEC §6 by name, optionally with another class count or image shape.

    Parameters
    ----------
    name : {"tiny", "small2", "conv-small", "conv-small-ladder"}
    n_classes : int, optional
        Override ``K`` (default: 2 for ``tiny``, 10 otherwise).
    image_shape : tuple (C_0, H_0, W_0), optional
        Override the image shape (e.g. 3 x 32 x 32); the sizes are rechecked.
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    net = PRESETS[name]()
    if n_classes is None and image_shape is None:
        return net
    return Network(image_shape if image_shape is not None else net.image_shape, net.layers,
                   n_classes if n_classes is not None else net.n_classes, net.constant_templates, net.name)
