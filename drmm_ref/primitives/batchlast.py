"""The primitives' kernels in the batch-last layout ``(C, ..., H, W, N)`` that the model passes use.

SPEC §0 conventions (cross-correlation, stride 1, zero padding ``q``, non-overlapping ``p x p``
pooling with the row-major position of the **first** maximum), on arrays whose channel axis comes
first and whose batch axis comes last: ``(C, H, W, N)``, or ``(C, S, H, W, N)`` when ``S`` signals
go through the same operator together (the fused EG pass renders the class template and carries
the cross-entropy cotangent down in one pass, SPEC §2 "two facts about cost").

Why this layout (the NCHW functions of :mod:`drmm_ref.primitives` are thin wrappers over it):

* a convolution is **one** matrix product ``(O, k*k*C) @ (k*k*C, H_o W_o N)`` whose result is
  already the next layer's input, with no permutation copy in between;
* every shifted window view used by im2col / col2im and every pooling window reads contiguous
  runs of ``W*N`` (resp. ``N``) numbers, so the memory-bound glue around the products is a few
  long vectorised passes instead of many short ones;
* channel slices ``x[c]`` and signal slices ``x[:, s]`` stay matrices with unit inner stride, so
  the products take them without copies.

Everything is Array API standard code (slicing, ``stack``, ``reshape``, ``matmul``, ``where``,
``max``, ``sum``); on NumPy and CuPy the col2im accumulation adds in place (``out=``), elsewhere it
adds functionally. No argument checks here: the NCHW functions and the model passes check at
their public boundary.

Row order of the unfolded matrix (shared with :func:`weight_matrix`): row ``(i*k + j)*C + c`` holds
``xpad[c, ..., i:i+H_o, j:j+W_o, :]``.
"""

from __future__ import annotations

import math
from typing import Any

from .._backend import device_of, namespace_name

__all__ = [
    "output_side",
    "weight_matrix",
    "unfold",
    "conv2d_bl",
    "conv2d_transpose_bl",
    "conv2d_weight_grad_bl",
    "maxpool_bl",
    "unpool_bl",
    "select_bl",
    "mask",
]

# Unfolded matrices larger than this many entries are built a batch chunk at a time.
CHUNK_ELEMENTS = 1 << 25


def output_side(side: int, kernel: int, padding: int) -> int:
    """Output side of a stride-1 convolution: ``side + 2 * padding - kernel + 1``."""
    return side + 2 * padding - kernel + 1


def weight_matrix(weight: Any, xp: Any) -> Any:
    """OIHW filters as the ``(O, k*k*C)`` matrix that matches :func:`unfold`'s row order."""
    o, c, k, _ = weight.shape
    return xp.reshape(xp.permute_dims(weight, (0, 2, 3, 1)), (o, k * k * c))


def _pad(x: Any, q: int, xp: Any) -> Any:
    """Zero-pad the spatial axes (-3, -2) by ``q`` on every side (a contiguous copy)."""
    if q == 0:
        return x
    shape = tuple(x.shape)
    h, w = shape[-3], shape[-2]
    out = xp.zeros(shape[:-3] + (h + 2 * q, w + 2 * q, shape[-1]), dtype=x.dtype, device=device_of(x))
    out[..., q : q + h, q : q + w, :] = x
    return out


def unfold(x: Any, k: int, q: int, xp: Any) -> Any:
    """im2col: ``(k*k*C, prod(rest))`` matrix of the ``k x k`` shifted views of ``x (C, ..., H, W, N)``.

    One copy (the ``stack``) after the padding; columns ordered like ``x[0]`` with the output grid
    ``(H_o, W_o)`` in place of ``(H, W)``.
    """
    shape = tuple(x.shape)
    ho, wo = output_side(shape[-3], k, q), output_side(shape[-2], k, q)
    xt = _pad(x, q, xp)
    views = [xt[..., i : i + ho, j : j + wo, :] for i in range(k) for j in range(k)]
    cols = xp.stack(views, axis=0)  # (k*k, C, ..., Ho, Wo, N)
    return xp.reshape(cols, (k * k * shape[0], math.prod(shape[1:-3]) * ho * wo * shape[-1]))


def _batch_slices(n: int, per_example: int) -> list[tuple[int, int]]:
    if n == 0:
        return [(0, 0)]
    step = max(1, CHUNK_ELEMENTS // max(per_example, 1))
    return [(s, min(s + step, n)) for s in range(0, n, step)]


def _accumulate(canvas: Any, index: tuple, part: Any, xp: Any) -> None:
    """``canvas[index] += part``: in place where the namespace has ``out=`` (NumPy, CuPy)."""
    if namespace_name(xp) in ("numpy", "cupy"):
        view = canvas[index]
        xp.add(view, part, out=view)
    else:
        canvas[index] = canvas[index] + part


def conv2d_bl(x: Any, weight: Any, padding: int, xp: Any, *, wmat: Any = None) -> Any:
    """Cross-correlation of ``x (C, ..., H, W, N)`` with OIHW ``weight``: ``(O, ..., H_o, W_o, N)``.

    .. math:: y[o, \\ldots, h, w, n] = \\sum_{c, i, j} W[o, c, i, j]\\, x_{\\mathrm{pad}}[c, \\ldots, h + i, w + j, n]
    """
    o, c, k, _ = weight.shape
    shape = tuple(x.shape)
    mid, n = shape[1:-3], shape[-1]
    ho, wo = output_side(shape[-3], k, padding), output_side(shape[-2], k, padding)
    wmat = weight_matrix(weight, xp) if wmat is None else wmat
    slices = _batch_slices(n, k * k * c * math.prod(mid) * ho * wo)
    if len(slices) == 1:
        return xp.reshape(xp.matmul(wmat, unfold(x, k, padding, xp)), (o,) + mid + (ho, wo, n))
    outs = [xp.reshape(xp.matmul(wmat, unfold(x[..., s:e], k, padding, xp)), (o,) + mid + (ho, wo, e - s))
            for s, e in slices]
    return xp.concat(outs, axis=-1)


def conv2d_transpose_bl(y: Any, weight: Any, padding: int, xp: Any, *, wmat: Any = None) -> Any:
    """Exact adjoint of :func:`conv2d_bl` in its input, by col2im: ``(O, ..., H_o, W_o, N) -> (C, ..., H, W, N)``.

    .. math:: x[c, \\ldots, h, w, n] = \\sum_{o, i, j} W[o, c, i, j]\\, y[o, \\ldots, h + q - i, w + q - j, n]

    Each output value spreads ``W[o]`` over a ``k x k`` patch: the ``k*k`` shifted planes of
    ``W^T y`` are added into a zero canvas of side ``H_o + k - 1 = H + 2q`` and the padding is
    cropped, term by term the transpose of :func:`unfold`, so the adjoint is exact for any ``q``.
    """
    o, c, k, _ = weight.shape
    shape = tuple(y.shape)
    mid, n = shape[1:-3], shape[-1]
    ho, wo = shape[-3], shape[-2]
    q = padding
    h, w = ho - 2 * q + k - 1, wo - 2 * q + k - 1
    wmat_t = xp.matrix_transpose(weight_matrix(weight, xp) if wmat is None else wmat)  # (k*k*C, O)
    outs = []
    for s, e in _batch_slices(n, k * k * c * math.prod(mid) * ho * wo):
        ys = y if (s, e) == (0, n) else y[..., s:e]
        cols = xp.matmul(wmat_t, xp.reshape(ys, (o, math.prod(mid) * ho * wo * (e - s))))
        cols = xp.reshape(cols, (k * k, c) + mid + (ho, wo, e - s))
        canvas = xp.zeros((c,) + mid + (ho + k - 1, wo + k - 1, e - s), dtype=y.dtype, device=device_of(y))
        for i in range(k):
            for j in range(k):
                _accumulate(canvas, (..., slice(i, i + ho), slice(j, j + wo), slice(None)), cols[i * k + j, ...], xp)
        outs.append(canvas if q == 0 else canvas[..., q : q + h, q : q + w, :])
    return outs[0] if len(outs) == 1 else xp.concat(outs, axis=-1)


def conv2d_weight_grad_bl(grad_out: Any, x: Any, kernel: int, padding: int, xp: Any, *, cols: Any = None) -> Any:
    """Weight gradient of :func:`conv2d_bl`: ``Wbar[o, c, i, j] = sum grad_out[o, ..] x_pad[c, .., h+i, w+j, ..]``.

    ``cols`` (optional) is ``unfold(x, kernel, padding)`` when the caller already has it.
    Returns OIHW ``(O, C, k, k)``.
    """
    k, q = kernel, padding
    o, c = grad_out.shape[0], x.shape[0]
    g = xp.reshape(grad_out, (o, math.prod(grad_out.shape[1:])))
    if cols is not None:
        total = xp.matmul(g, xp.matrix_transpose(cols))
    else:
        shape = tuple(x.shape)
        n = shape[-1]
        per = k * k * c * math.prod(grad_out.shape[1:-1])
        total = None
        for s, e in _batch_slices(n, per):
            xs, gs = (x, g) if (s, e) == (0, n) else (x[..., s:e], xp.reshape(grad_out[..., s:e], (o, -1)))
            part = xp.matmul(gs, xp.matrix_transpose(unfold(xs, k, q, xp)))
            total = part if total is None else total + part
    return xp.permute_dims(xp.reshape(total, (o, k, k, c)), (0, 3, 1, 2))


def _windows(x: Any, p: int, xp: Any) -> Any:
    """``(..., H, W, N) -> (..., H/p, p, W/p, p, N)`` (a view for contiguous arrays)."""
    shape = tuple(x.shape)
    h, w = shape[-3], shape[-2]
    return xp.reshape(x, shape[:-3] + (h // p, p, w // p, p, shape[-1]))


def _slot_grid(p: int, ndim_lead: int, dtype: Any, xp: Any, device: Any, reverse: bool = False) -> Any:
    """Row-major window slot ``i*p + j`` (or ``p*p - slot``) shaped to broadcast against :func:`_windows`."""
    slots = xp.arange(p * p, dtype=dtype, device=device)
    if reverse:
        slots = p * p - slots
    return xp.reshape(slots, (1,) * ndim_lead + (1, p, 1, p, 1))


def _expand_pooled(t: Any, xp: Any) -> Any:
    """``(..., Hp, Wp, N) -> (..., Hp, 1, Wp, 1, N)`` so that it broadcasts against window views."""
    shape = tuple(t.shape)
    return xp.reshape(t, shape[:-3] + (shape[-3], 1, shape[-2], 1, shape[-1]))


def _slot(win: Any, lead: int, i: int, j: int) -> Any:
    """The ``(i, j)`` entry of every window: ``win[..., :, i, :, j, :]``, shape ``(..., Hp, Wp, N)``."""
    return win[(slice(None),) * (lead + 1) + (i, slice(None), j, ...)]


def maxpool_bl(x: Any, p: int, xp: Any) -> tuple[Any, Any]:
    """Window maxima and first-maximum positions of ``x (..., H, W, N)`` over ``p x p`` windows.

    The maximum is one reduction over the window axes; the position is the smallest row-major
    slot whose entry equals it (first maximum at ties), found by walking the slots from last to
    first on the pooled grid with small-integer arithmetic (``pos -= [x_s == max] (pos - s)``),
    which is several times faster than a ``where`` on every backend tried. Positions are int64.
    """
    lead = x.ndim - 3
    win = _windows(x, p, xp)
    values = xp.max(win, axis=(lead + 1, lead + 3))
    small = xp.int8 if p * p < 127 else xp.int32
    positions = xp.full(tuple(values.shape), p * p - 1, dtype=small, device=device_of(x))
    for slot in range(p * p - 2, -1, -1):
        hit = xp.astype(_slot(win, lead, *divmod(slot, p)) == values, small)
        positions = positions - hit * (positions - slot)
    return values, xp.astype(positions, xp.int64)


def unpool_bl(values: Any, positions: Any, p: int, xp: Any) -> Any:
    """Each value at its window position, zeros elsewhere: ``(..., Hp, Wp, N) -> (..., Hp p, Wp p, N)``.

    ``positions`` may have size-1 leading axes where ``values`` has more (one set of positions for
    several signals). One broadcast comparison and one same-dtype product (``[t == slot] * v``).
    """
    if p * p < 127:  # compare in int8: a quarter of the bytes of int64 positions
        positions = xp.astype(positions, xp.int8)
    slots = _slot_grid(p, values.ndim - 3, positions.dtype, xp, device_of(values))
    mask = xp.astype(_expand_pooled(positions, xp) == slots, values.dtype)
    out = mask * _expand_pooled(values, xp)
    shape = tuple(out.shape)
    return xp.reshape(out, shape[:-5] + (shape[-5] * p, shape[-3] * p, shape[-1]))


def select_bl(x: Any, positions: Any, p: int, xp: Any) -> Any:
    """The entry at ``positions`` in every ``p x p`` window of ``x (..., H, W, N)`` (adjoint of :func:`unpool_bl`).

    ``sum_s [t == s] x_s`` over the window slots, on the pooled grid.
    """
    lead = x.ndim - 3
    win = _windows(x, p, xp)
    out = None
    for slot in range(p * p):
        part = xp.astype(positions == slot, x.dtype) * _slot(win, lead, *divmod(slot, p))
        out = part if out is None else out + part
    return out


def mask(values: Any, switches: Any, xp: Any) -> Any:
    """``where(switches, values, 0)`` as a same-dtype product ``values * [switches]`` (finite values)."""
    return values * xp.astype(switches, values.dtype)
