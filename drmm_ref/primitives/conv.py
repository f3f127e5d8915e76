"""2-D convolution (cross-correlation), its exact adjoint, and their vector-Jacobian products.

SPEC §0. Arrays are NCHW, filters OIHW (``W[out, in, i, j]``). ``conv2d`` is cross-correlation
(no kernel flip), stride 1, zero padding ``q`` on every side, so the output side is
``H + 2q - k + 1``. ``conv2d_transpose`` is its exact adjoint in the input:

.. math:: \\langle \\mathrm{conv2d}(x, W, q), y \\rangle = \\langle x, \\mathrm{conv2d\\_transpose}(y, W, q) \\rangle

for every ``q >= 0`` (including ``q >= k``, where the transpose crops instead of padding).

Implementation: these NCHW functions check their arguments and call the kernels of
:mod:`drmm_ref.primitives.batchlast` on a ``(C, H, W, N)`` view (no copy): the input is unfolded
into its ``k*k`` shifted views ("im2col", built only from slicing and ``stack``) and contracted
with the filters in one matrix product; the transpose adds the shifted planes back (col2im). All
Array API standard code, so NumPy, CuPy and ``array_api_strict`` run it. Large batches are
processed in chunks so the unfolded matrix stays below ``batchlast.CHUNK_ELEMENTS`` entries.
"""

from __future__ import annotations

from typing import Any

from . import _checks
from . import batchlast as BL

__all__ = [
    "conv2d",
    "conv2d_transpose",
    "conv2d_vjp_input",
    "conv2d_vjp_weight",
    "conv2d_transpose_vjp_input",
    "conv2d_transpose_vjp_weight",
    "conv2d_output_side",
]


def conv2d_output_side(side: int, kernel: int, padding: int) -> int:
    """Output side of a stride-1 convolution: ``side + 2 * padding - kernel + 1``."""
    return BL.output_side(side, kernel, padding)


def to_batch_last(x: Any, xp: Any) -> Any:
    """NCHW -> ``(C, H, W, N)`` view (no copy); the layout of :mod:`.batchlast`."""
    return xp.permute_dims(x, (1, 2, 3, 0))


def to_nchw(x: Any, xp: Any) -> Any:
    """``(C, H, W, N)`` -> NCHW view (no copy)."""
    return xp.permute_dims(x, (3, 0, 1, 2))


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
    return to_nchw(BL.conv2d_bl(to_batch_last(x, xp), weight, q, xp), xp)


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
        raise ValueError(f"padding {q} is too large for kernel {k} and y of side {ho}x{wo}: "
                         f"the input side would be {h}x{w}")
    return to_nchw(BL.conv2d_transpose_bl(to_batch_last(y, xp), weight, q, xp), xp)


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
    return BL.conv2d_weight_grad_bl(to_batch_last(grad_out, xp), to_batch_last(x, xp), k, q, xp)


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
