"""A JAX port of the Deep Rendering Mixture Model (Patel, Nguyen & Baraniuk, NIPS 2016).

Written from drmm_ref's ``docs/porting.md`` and ``docs/SPEC.md`` with JAX's own operations
(``jax.lax.conv_general_dilated``, ``jax.linear_transpose`` for its adjoint, pooling by reshape with
``argmax`` + ``take_along_axis``, ``jax.grad`` / ``jax.vjp`` for every gradient); it does not
import drmm_ref. Importing it turns on float64 (``jax_enable_x64``).

* :mod:`.core`     -- primitives, the DRMM's bottom-up pass, rendering, log joint;
* :mod:`.learning` -- the EG objective and its gradient, EG / backprop steps, the CGLS block step;
* :mod:`.rmm`      -- the shallow RMM;
* :mod:`.adapter`  -- ``ADAPTER`` for ``python -m drmm_ref.conformance --adapter jax_drmm.adapter:ADAPTER``.
"""

import jax

jax.config.update("jax_enable_x64", True)

from .core import bottom_up, conv2d, conv2d_transpose, log_joint, maxpool2d, render, select2d, unpool2d  # noqa: E402

__all__ = ["bottom_up", "conv2d", "conv2d_transpose", "log_joint", "maxpool2d", "render", "select2d", "unpool2d"]
__version__ = "0.1.0"
