"""Positions, the bottom-up pass, rendering and the log joint of the DRMM in PyTorch (SPEC §0, §2).

**Positions.** drmm_ref's position of a pooled unit is the row-major index ``t = i * p + j`` of the
first maximum *inside* its ``p x p`` window. ``max_pool2d(return_indices=True)`` and
``max_unpool2d`` use the flat index ``row * W + col`` into the pre-pool plane (``W`` its width), so
:func:`flat_to_window` and :func:`window_to_flat` convert both ways. PyTorch's CPU max-pool keeps the
first maximum at ties, as SPEC §0 asks, and routes the gradient to it.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F

__all__ = ["Net", "Params", "flat_to_window", "window_to_flat", "maxpool2d", "unpool2d", "select2d", "bottom_up",
           "render", "log_joint", "template_maps"]


@dataclasses.dataclass(frozen=True)
class Net:
    """Image shape ``(C0, H0, W0)``, layers ``(channels, kernel, padding, pool)``, classes, constant templates."""

    image_shape: tuple
    layers: tuple
    n_classes: int
    constant_templates: bool = False

    @classmethod
    def from_dict(cls, d: dict) -> "Net":
        layers = tuple((ly["channels"], ly["kernel"], ly["padding"], ly["pool"]) for ly in d["layers"])
        return cls(tuple(d["image_shape"]), layers, int(d["n_classes"]), bool(d.get("constant_templates", False)))

    @property
    def L(self) -> int:
        return len(self.layers)

    @property
    def shapes(self) -> list:
        """``(C_l, H_l, W_l)`` for l = 0..L, with ``H_l = (H_{l-1} + 2 q_l - k_l + 1) / p_l``."""
        out = [tuple(self.image_shape)]
        c, h, w = self.image_shape
        for ch, k, q, p in self.layers:
            h, w = (h + 2 * q - k + 1) // p, (w + 2 * q - k + 1) // p
            out.append((ch, h, w))
        return out


@dataclasses.dataclass
class Params:
    """Filters, biases, class templates and biases (trainable), priors and the noise variance."""

    filters: list
    biases: list
    class_templates: torch.Tensor
    class_biases: torch.Tensor
    class_prior: torch.Tensor
    switch_prior: torch.Tensor
    noise_variance: float

    TRAINABLE = ("filters", "biases", "class_templates", "class_biases")

    @classmethod
    def from_dict(cls, net: Net, d: dict, dtype=torch.float64) -> "Params":
        t = lambda a: torch.as_tensor(a, dtype=dtype).clone()  # noqa: E731
        return cls([t(d[f"filters_{l}"]) for l in range(1, net.L + 1)],
                   [t(d[f"biases_{l}"]) for l in range(1, net.L + 1)],
                   t(d["class_templates"]), t(d["class_biases"]), t(d["class_prior"]), t(d["switch_prior"]),
                   float(d["noise_variance"]))

    def trainable(self) -> dict:
        """The gradient tree's names (drmm_ref's parameter-file names) -> tensors."""
        out = {f"filters_{l}": w for l, w in enumerate(self.filters, start=1)}
        out.update({f"biases_{l}": b for l, b in enumerate(self.biases, start=1)})
        out["class_templates"] = self.class_templates
        out["class_biases"] = self.class_biases
        return out

    def with_trainable(self, tree: dict) -> "Params":
        L = len(self.filters)
        return Params([tree.get(f"filters_{l}", self.filters[l - 1]) for l in range(1, L + 1)],
                      [tree.get(f"biases_{l}", self.biases[l - 1]) for l in range(1, L + 1)],
                      tree.get("class_templates", self.class_templates), tree.get("class_biases", self.class_biases),
                      self.class_prior, self.switch_prior, self.noise_variance)


# -- positions ---------------------------------------------------------------------------------
def flat_to_window(index: torch.Tensor, pool: int, width: int) -> torch.Tensor:
    """PyTorch's flat pre-pool index ``row * width + col`` -> row-major position inside the window."""
    row, col = index // width, index % width
    return (row % pool) * pool + (col % pool)


def window_to_flat(t: torch.Tensor, pool: int, width: int) -> torch.Tensor:
    """Row-major position inside each window -> PyTorch's flat index into the pre-pool plane of ``width`` columns."""
    hp, wp = t.shape[-2:]
    rows = torch.arange(hp, device=t.device).view(hp, 1) * pool + t // pool
    cols = torch.arange(wp, device=t.device).view(1, wp) * pool + t % pool
    return rows * width + cols


def maxpool2d(x: torch.Tensor, pool: int):
    """Window maxima and row-major in-window positions of the first maximum."""
    values, index = F.max_pool2d(x, pool, return_indices=True)
    return values, flat_to_window(index, pool, x.shape[-1])


def unpool2d(values: torch.Tensor, positions: torch.Tensor, pool: int) -> torch.Tensor:
    h, w = values.shape[-2] * pool, values.shape[-1] * pool
    return F.max_unpool2d(values, window_to_flat(positions, pool, w), pool, output_size=(h, w))


def select2d(x: torch.Tensor, positions: torch.Tensor, pool: int) -> torch.Tensor:
    index = window_to_flat(positions, pool, x.shape[-1])
    return torch.gather(x.flatten(2), 2, index.flatten(2)).view(index.shape)


# -- the DRMM ----------------------------------------------------------------------------------
def template_maps(net: Net, p: Params) -> torch.Tensor:
    """Class templates on the full top grid: constant ones ``(K, C_L, 1, 1)`` broadcast over ``H_L x W_L``."""
    c, h, w = net.shapes[-1]
    return p.class_templates.expand(net.n_classes, c, h, w)


def bottom_up(net: Net, p: Params, images: torch.Tensor) -> dict:
    """``u = conv2d(h, W) + b``, ``h = maxpool(relu(u))``, positions (0 where off), switches ``h > 0``, scores."""
    h, out = images, {}
    for l, (_, _, q, pool) in enumerate(net.layers, start=1):
        u = F.conv2d(h, p.filters[l - 1], p.biases[l - 1], padding=q)
        r = torch.relu(u)
        if pool > 1:
            h, t = maxpool2d(r, pool)
        else:
            h, t = r, torch.zeros(r.shape, dtype=torch.int64)
        a = h > 0
        out[f"preactivations_{l}"], out[f"features_{l}"] = u, h
        out[f"positions_{l}"], out[f"switches_{l}"] = torch.where(a, t, torch.zeros_like(t)), a
    mu = template_maps(net, p)
    out["scores"] = torch.einsum("nchw,kchw->nk", h, mu) + p.class_biases
    return out


def render(net: Net, p: Params, classes: torch.Tensor, latents: dict) -> list:
    """``z^(L) = mu_c``, ``z^(l-1) = conv_transpose2d(unpool(a * z^(l), t), W^(l), q_l)``: [z^(0), ..., z^(L)]."""
    z = template_maps(net, p)[classes]
    zs = [z]
    for l in range(net.L, 0, -1):
        _, _, q, pool = net.layers[l - 1]
        v = torch.where(latents[f"switches_{l}"], z, torch.zeros_like(z))
        if pool > 1:
            v = unpool2d(v, latents[f"positions_{l}"], pool)
        z = F.conv_transpose2d(v, p.filters[l - 1], padding=q)
        zs.append(z)
    return zs[::-1]


def log_joint(net: Net, p: Params, images: torch.Tensor, classes: torch.Tensor, latents: dict) -> torch.Tensor:
    """``ln p(I, c, g)``: Gaussian pixels around the rendering, class prior, per-unit switch and position priors."""
    s2 = p.noise_variance
    d = math.prod(net.image_shape)
    resid = ((images - render(net, p, classes, latents)[0]) ** 2).sum(dim=(1, 2, 3))
    out = -resid / (2 * s2) - 0.5 * d * math.log(2 * math.pi * s2) + torch.log(p.class_prior)[classes]
    for l in range(1, net.L + 1):
        a = latents[f"switches_{l}"]
        units = a[0].numel()
        on = a.flatten(1).sum(dim=1).to(images.dtype)
        pi = p.switch_prior[l - 1]
        pool = net.layers[l - 1][3]
        out = out + on * torch.log(pi) + (units - on) * torch.log1p(-pi) - units * math.log(pool * pool)
    return out
