"""Primitives, the bottom-up pass, rendering and the log joint of the DRMM in JAX (SPEC §0, §2).

Pooling is a reshape into ``(N, C, H/p, W/p, p*p)`` windows (row-major inside each window, which *is*
drmm_ref's position convention), ``argmax`` (the first maximum) and ``take_along_axis``. Not
``jnp.max``: its gradient splits a tied window's cotangent evenly between the maxima, where SPEC §0
routes it all to the first one; ``take_along_axis`` at the argmax routes it there.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax

__all__ = ["conv2d", "conv2d_transpose", "windows", "maxpool2d", "unpool2d", "select2d", "bottom_up", "render",
           "log_joint", "template_maps", "net_shapes"]

_DN = ("NCHW", "OIHW", "NCHW")


def conv2d(x, w, q: int):
    """Cross-correlation, stride 1, zero padding ``q`` (lax.conv_general_dilated does not flip the kernel)."""
    return lax.conv_general_dilated(x, w, (1, 1), [(q, q), (q, q)], dimension_numbers=_DN)


def conv2d_transpose(y, w, q: int):
    """The exact adjoint of :func:`conv2d` in ``x`` (``jax.linear_transpose`` of the linear map)."""
    n, _, ho, wo = y.shape
    k = w.shape[2]
    x_shape = jax.ShapeDtypeStruct((n, w.shape[1], ho - 2 * q + k - 1, wo - 2 * q + k - 1), y.dtype)
    (x,) = jax.linear_transpose(lambda a: conv2d(a, w, q), x_shape)(y)
    return x


def windows(x, p: int):
    """``(N, C, H, W) -> (N, C, H/p, W/p, p*p)``, each window row-major on the last axis."""
    n, c, h, w = x.shape
    return x.reshape(n, c, h // p, p, w // p, p).transpose(0, 1, 2, 4, 3, 5).reshape(n, c, h // p, w // p, p * p)


def maxpool2d(x, p: int):
    """Window maxima and the row-major position of the first maximum (gradient to that entry only)."""
    win = windows(x, p)
    t = jnp.argmax(win, axis=-1)
    return jnp.take_along_axis(win, t[..., None], axis=-1)[..., 0], t


def unpool2d(v, t, p: int):
    n, c, hp, wp = v.shape
    hot = jax.nn.one_hot(t, p * p, dtype=v.dtype) * v[..., None]  # (N, C, Hp, Wp, p*p)
    return hot.reshape(n, c, hp, wp, p, p).transpose(0, 1, 2, 4, 3, 5).reshape(n, c, hp * p, wp * p)


def select2d(x, t, p: int):
    return jnp.take_along_axis(windows(x, p), t[..., None], axis=-1)[..., 0]


# -- the DRMM ----------------------------------------------------------------------------------
def net_shapes(net: dict) -> list:
    c, h, w = net["image_shape"]
    out = [(c, h, w)]
    for ly in net["layers"]:
        h = (h + 2 * ly["padding"] - ly["kernel"] + 1) // ly["pool"]
        w = (w + 2 * ly["padding"] - ly["kernel"] + 1) // ly["pool"]
        out.append((ly["channels"], h, w))
    return out


def template_maps(net: dict, params: dict):
    """Class templates on the full top grid (constant ``(K, C_L, 1, 1)`` templates broadcast over ``H_L x W_L``)."""
    c, h, w = net_shapes(net)[-1]
    return jnp.broadcast_to(params["class_templates"], (net["n_classes"], c, h, w))


def bottom_up(net: dict, params: dict, images) -> dict:
    h, out = images, {}
    for l, ly in enumerate(net["layers"], start=1):
        u = conv2d(h, params[f"filters_{l}"], ly["padding"]) + params[f"biases_{l}"][None, :, None, None]
        r = jax.nn.relu(u)
        if ly["pool"] > 1:
            h, t = maxpool2d(r, ly["pool"])
        else:
            h, t = r, jnp.zeros(r.shape, dtype=jnp.int64)
        a = h > 0
        out[f"preactivations_{l}"], out[f"features_{l}"] = u, h
        out[f"positions_{l}"], out[f"switches_{l}"] = jnp.where(a, t, 0), a
    out["scores"] = jnp.einsum("nchw,kchw->nk", h, template_maps(net, params)) + params["class_biases"]
    return out


def render(net: dict, params: dict, classes, latents: dict) -> list:
    """``[z^(0), ..., z^(L)]``: ``z^(L) = mu_c``, ``z^(l-1) = conv2d_transpose(unpool(a z^(l), t), W^(l), q_l)``."""
    z = template_maps(net, params)[classes]
    zs = [z]
    for l in range(len(net["layers"]), 0, -1):
        ly = net["layers"][l - 1]
        v = jnp.where(latents[f"switches_{l}"], z, 0.0)
        if ly["pool"] > 1:
            v = unpool2d(v, latents[f"positions_{l}"], ly["pool"])
        z = conv2d_transpose(v, params[f"filters_{l}"], ly["padding"])
        zs.append(z)
    return zs[::-1]


def log_joint(net: dict, params: dict, images, classes, latents: dict):
    s2 = float(params["noise_variance"])
    d = math.prod(net["image_shape"])
    resid = jnp.sum((images - render(net, params, classes, latents)[0]) ** 2, axis=(1, 2, 3))
    out = -resid / (2 * s2) - 0.5 * d * math.log(2 * math.pi * s2) + jnp.log(params["class_prior"])[classes]
    for l, ly in enumerate(net["layers"], start=1):
        a = latents[f"switches_{l}"]
        units = math.prod(a.shape[1:])
        on = jnp.sum(a.reshape(a.shape[0], -1), axis=1).astype(images.dtype)
        pi = params["switch_prior"][l - 1]
        out = out + on * jnp.log(pi) + (units - on) * jnp.log1p(-pi) - units * math.log(ly["pool"] ** 2)
    return out
