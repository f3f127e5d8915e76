"""The DCN primitives of SPEC §0 and their vector-Jacobian products.

Everything here is Array API standard code: NumPy, CuPy and ``array_api_strict`` run it alike.
Conventions: NCHW arrays, OIHW filters, cross-correlation (no flip), stride 1, zero padding,
non-overlapping pooling with first-maximum positions, ``relu'(0) = 0``.

========================  ==================================================================
forward                   VJPs
========================  ==================================================================
``conv2d``                ``conv2d_vjp_input`` (= ``conv2d_transpose``), ``conv2d_vjp_weight``
``conv2d_transpose``      ``conv2d_transpose_vjp_input`` (= ``conv2d``), ``conv2d_transpose_vjp_weight``
``relu``                  ``relu_vjp``
``maxpool2d``             ``maxpool2d_vjp`` (= ``unpool2d``)
``unpool2d``              ``unpool2d_vjp_values`` (= ``select2d``)
``select2d``              ``select2d_vjp`` (= ``unpool2d``)
``logsumexp``             ``logsumexp_vjp``
``softmax``               ``softmax_vjp``
========================  ==================================================================
"""

from .conv import (
    conv2d,
    conv2d_output_side,
    conv2d_transpose,
    conv2d_transpose_vjp_input,
    conv2d_transpose_vjp_weight,
    conv2d_vjp_input,
    conv2d_vjp_weight,
)
from .pointwise import logsumexp, logsumexp_vjp, relu, relu_vjp, softmax, softmax_vjp
from .pool import maxpool2d, maxpool2d_vjp, select2d, select2d_vjp, unpool2d, unpool2d_vjp_values

__all__ = [
    "conv2d",
    "conv2d_output_side",
    "conv2d_transpose",
    "conv2d_transpose_vjp_input",
    "conv2d_transpose_vjp_weight",
    "conv2d_vjp_input",
    "conv2d_vjp_weight",
    "logsumexp",
    "logsumexp_vjp",
    "maxpool2d",
    "maxpool2d_vjp",
    "relu",
    "relu_vjp",
    "select2d",
    "select2d_vjp",
    "softmax",
    "softmax_vjp",
    "unpool2d",
    "unpool2d_vjp_values",
]
