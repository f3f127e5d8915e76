"""2-D convolution (cross-correlation), its exact adjoint, and their vector-Jacobian products.

SPEC §0. Arrays are NCHW, filters OIHW (``W[out, in, i, j]``). ``conv2d`` is cross-correlation
(no kernel flip), stride 1, zero padding ``q`` on every side, so the output side is
``H + 2q - k + 1``. ``conv2d_transpose`` is its exact adjoint in the input:

.. math:: \\langle \\mathrm{conv2d}(x, W, q), y \\rangle = \\langle x, \\mathrm{conv2d\\_transpose}(y, W, q) \\rangle

for every ``q >= 0`` (including ``q >= k``, where the transpose crops instead of padding).

Implementation: the input is unfolded into its ``k*k`` shifted views ("im2col", built only from
slicing and ``stack``) and contracted with the filters in one matrix product, which keeps the code
inside the Array API standard so NumPy, CuPy and ``array_api_strict`` all run it. Large batches
are processed in chunks so the unfolded matrix stays below ``_CHUNK_ELEMENTS`` entries.
"""

from __future__ import annotations

from typing import Any

from .._backend import device_of
from . import _checks

__all__ = [
    "conv2d",
    "conv2d_transpose",
    "conv2d_vjp_input",
    "conv2d_vjp_weight",
    "conv2d_transpose_vjp_input",
    "conv2d_transpose_vjp_weight",
    "conv2d_output_side",
]

# Unfolded (k*k*C, n*Ho*Wo) matrices larger than this are built a batch chunk at a time.
_CHUNK_ELEMENTS = 1 << 25


def conv2d_output_side(side: int, kernel: int, padding: int) -> int:
    """Output side of a stride-1 convolution: ``side + 2 * padding - kernel + 1``."""
    return side + 2 * padding - kernel + 1


def _channels_first_padded(x: Any, q: int, xp: Any) -> Any:
    """``(C, N, H + 2q, W + 2q)`` contiguous copy of an NCHW array, zero-padded by ``q``.

    Channels-first (CNHW) makes every shifted view read whole rows, which keeps the unfolding
    below memory-friendly on every backend.
    """
    n, c, h, w = x.shape
    out = xp.zeros((c, n, h + 2 * q, w + 2 * q), dtype=x.dtype, device=device_of(x))
    out[:, :, q : q + h, q : q + w] = xp.permute_dims(x, (1, 0, 2, 3))
    return out


def _unfold(x: Any, k: int, q: int, xp: Any) -> tuple[Any, int, int]:
    """im2col: ``(k*k*C, N*Ho*Wo)`` matrix whose row ``(i*k + j)*C + c`` holds ``xpad[:, c, i:, j:]``."""
    n, c, h, w = x.shape
    ho, wo = conv2d_output_side(h, k, q), conv2d_output_side(w, k, q)
    xt = _channels_first_padded(x, q, xp)  # (C, N, Hp, Wp)
    views = [xt[:, :, i : i + ho, j : j + wo] for i in range(k) for j in range(k)]
    cols = xp.stack(views, axis=0)  # (k*k, C, N, Ho, Wo)
    return xp.reshape(cols, (k * k * c, n * ho * wo)), ho, wo


def _weight_matrix(weight: Any, xp: Any) -> Any:
    """OIHW filters as an ``(O, k*k*C)`` matrix matching :func:`_unfold`'s row order."""
    o, c, k, _ = weight.shape
    return xp.reshape(xp.permute_dims(weight, (0, 2, 3, 1)), (o, k * k * c))


def _batch_chunks(n: int, per_example: int) -> list[tuple[int, int]]:
    step = max(1, _CHUNK_ELEMENTS // max(per_example, 1))
    return [(s, min(s + step, n)) for s in range(0, n, step)]


def _check_conv_args(x, weight, padding, xp, x_name="x", w_name="weight"):
    _checks.float_array(x, x_name, xp, ndim=4)
    _checks.float_array(weight, w_name, xp, ndim=4)
    _checks.same_dtype(x, weight, x_name, w_name)
    q = _checks.nonneg_int(padding, "padding")
    o, c, kh, kw = weight.shape
    if kh != kw:
        raise ValueError(f"{w_name} must have square kernels (O, C, k, k), got shape {tuple(weight.shape)}")
    return q, o, c, kh


def conv2d(x: Any, weight: Any, padding: int = 0, *, xp: Any = None) -> Any:
    """Cross-correlate a batch of images with a bank of filters (stride 1, zero padding).

    .. math:: y[n, o, h, w] = \\sum_{c, i, j} W[o, c, i, j]\\, x_{\\mathrm{pad}}[n, c, h + i, w + j]

    Parameters
    ----------
    x : array of shape (N, C, H, W)
        Input images, real floating.
    weight : array of shape (O, C, k, k)
        Filters (OIHW), same dtype as ``x``.
    padding : int, default 0
        Zeros added on every side of both spatial axes (``q`` in SPEC §0).
    xp : namespace, optional
        Override of the namespace inferred from the arrays.

    Returns
    -------
    array of shape (N, O, H + 2q - k + 1, W + 2q - k + 1)
        Same namespace, device and dtype as ``x``.

    Raises
    ------
    ValueError
        Wrong rank, channel mismatch, non-square kernel, or an output side below 1.
    TypeError
        Integer arrays, dtype mismatch, mixed namespaces.
    """
    xp = _checks.namespace(x, weight, names=("x", "weight"), xp=xp)
    q, o, c, k = _check_conv_args(x, weight, padding, xp)
    n, cx, h, w = x.shape
    if cx != c:
        raise ValueError(f"x has {cx} channels but weight expects {c} (weight shape {tuple(weight.shape)})")
    ho, wo = conv2d_output_side(h, k, q), conv2d_output_side(w, k, q)
    if ho < 1 or wo < 1:
        raise ValueError(
            f"kernel {k} with padding {q} does not fit an input of side {h}x{w}; increase padding or the image size"
        )
    wmat = _weight_matrix(weight, xp)
    outs = []
    for s, e in _batch_chunks(n, k * k * c * ho * wo):
        cols, _, _ = _unfold(x[s:e, ...], k, q, xp)
        y = xp.matmul(wmat, cols)  # (O, n*Ho*Wo)
        outs.append(xp.permute_dims(xp.reshape(y, (o, e - s, ho, wo)), (1, 0, 2, 3)))
    return outs[0] if len(outs) == 1 else xp.concat(outs, axis=0)


def conv2d_transpose(y: Any, weight: Any, padding: int = 0, *, xp: Any = None) -> Any:
    """Exact adjoint of :func:`conv2d` in its input, for any padding.

    .. math:: x[n, c, h, w] = \\sum_{o, i, j} W[o, c, i, j]\\, y[n, o, h + q - i, w + q - j]

    (terms with an index outside ``y`` are zero). This is the "rendering" operator of the DRMM
    (SPEC §2): it stamps filter ``W[o]`` scaled by ``y[o, h, w]`` at every position.

    Parameters
    ----------
    y : array of shape (N, O, Ho, Wo)
        Values on the convolution's output grid.
    weight : array of shape (O, C, k, k)
        The filters of the forward convolution.
    padding : int, default 0
        The forward convolution's padding ``q``.

    Returns
    -------
    array of shape (N, C, Ho - 2q + k - 1, Wo - 2q + k - 1)
        The input-shaped result, same namespace, device and dtype as ``y``.
    """
    xp = _checks.namespace(y, weight, names=("y", "weight"), xp=xp)
    q, o, c, k = _check_conv_args(y, weight, padding, xp, x_name="y")
    n, oy, ho, wo = y.shape
    if oy != o:
        raise ValueError(f"y has {oy} channels but weight has {o} output channels (weight shape {tuple(weight.shape)})")
    h, w = ho - 2 * q + k - 1, wo - 2 * q + k - 1
    if h < 1 or w < 1:
        raise ValueError(f"padding {q} is too large for kernel {k} and y of side {ho}x{wo}: the input side would be {h}x{w}")
    # col2im: each output value spreads W[o] over a k x k patch of the padded input; the k*k
    # shifted patches are added into a zero canvas of side Ho + k - 1 = H + 2q, then the padding
    # is cropped. This is the transpose of _unfold, term by term, so the adjoint is exact for any q.
    wmat = _weight_matrix(weight, xp)  # (O, k*k*C)
    outs = []
    for s, e in _batch_chunks(n, k * k * c * ho * wo):
        g = xp.reshape(xp.permute_dims(y[s:e, ...], (1, 0, 2, 3)), (o, (e - s) * ho * wo))
        cols = xp.reshape(xp.matmul(xp.matrix_transpose(wmat), g), (k * k, c, e - s, ho, wo))
        canvas = xp.zeros((c, e - s, ho + k - 1, wo + k - 1), dtype=y.dtype, device=device_of(y))
        for i in range(k):
            for j in range(k):
                canvas[:, :, i : i + ho, j : j + wo] = canvas[:, :, i : i + ho, j : j + wo] + cols[i * k + j, ...]
        outs.append(xp.permute_dims(canvas[:, :, q : q + h, q : q + w], (1, 0, 2, 3)))
    return outs[0] if len(outs) == 1 else xp.concat(outs, axis=0)


def conv2d_vjp_input(grad_out: Any, weight: Any, padding: int = 0, *, xp: Any = None) -> Any:
    """VJP of :func:`conv2d` with respect to ``x``: ``conv2d_transpose(grad_out, weight, padding)``."""
    return conv2d_transpose(grad_out, weight, padding, xp=xp)


def conv2d_vjp_weight(grad_out: Any, x: Any, padding: int = 0, *, xp: Any = None) -> Any:
    """VJP of :func:`conv2d` with respect to ``weight`` (the weight gradient).

    .. math:: \\bar W[o, c, i, j] = \\sum_{n, h, w} \\bar y[n, o, h, w]\\, x_{\\mathrm{pad}}[n, c, h + i, w + j]

    Parameters
    ----------
    grad_out : array of shape (N, O, Ho, Wo)
        Cotangent of the convolution's output.
    x : array of shape (N, C, H, W)
        The convolution's input.
    padding : int, default 0
        The convolution's padding ``q``; the kernel side is ``H + 2q - Ho + 1``.

    Returns
    -------
    array of shape (O, C, k, k)
    """
    xp = _checks.namespace(grad_out, x, names=("grad_out", "x"), xp=xp)
    _checks.float_array(grad_out, "grad_out", xp, ndim=4)
    _checks.float_array(x, "x", xp, ndim=4)
    _checks.same_dtype(grad_out, x, "grad_out", "x")
    q = _checks.nonneg_int(padding, "padding")
    n, c, h, w = x.shape
    ng, o, ho, wo = grad_out.shape
    if ng != n:
        raise ValueError(f"grad_out has batch {ng} but x has batch {n}")
    k = h + 2 * q - ho + 1
    if k < 1 or w + 2 * q - wo + 1 != k:
        raise ValueError(
            f"grad_out of side {ho}x{wo} is not a stride-1 convolution output of x of side {h}x{w} with padding {q}"
        )
    total = None
    for s, e in _batch_chunks(n, k * k * c * ho * wo):
        cols, _, _ = _unfold(x[s:e, ...], k, q, xp)  # (k*k*C, n*Ho*Wo)
        g = xp.reshape(xp.permute_dims(grad_out[s:e, ...], (1, 0, 2, 3)), (o, (e - s) * ho * wo))
        part = xp.matmul(g, xp.matrix_transpose(cols))  # (O, k*k*C)
        total = part if total is None else total + part
    return xp.permute_dims(xp.reshape(total, (o, k, k, c)), (0, 3, 1, 2))


def conv2d_transpose_vjp_input(grad_out: Any, weight: Any, padding: int = 0, *, xp: Any = None) -> Any:
    """VJP of :func:`conv2d_transpose` with respect to ``y``: ``conv2d(grad_out, weight, padding)``."""
    return conv2d(grad_out, weight, padding, xp=xp)


def conv2d_transpose_vjp_weight(grad_out: Any, y: Any, padding: int = 0, *, xp: Any = None) -> Any:
    """VJP of :func:`conv2d_transpose` with respect to ``weight``.

    Since ``<conv2d_transpose(y, W), g> = <y, conv2d(g, W)>``, this is the weight gradient of a
    convolution of ``grad_out`` whose output cotangent is ``y``: ``conv2d_vjp_weight(y, grad_out, padding)``.

    Parameters
    ----------
    grad_out : array of shape (N, C, H, W)
        Cotangent of the transpose's (input-shaped) output.
    y : array of shape (N, O, Ho, Wo)
        The transpose's input.
    """
    return conv2d_vjp_weight(y, grad_out, padding, xp=xp)
