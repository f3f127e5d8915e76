"""A PyTorch port of the Deep Rendering Mixture Model (Patel, Nguyen & Baraniuk, NIPS 2016).

Written from drmm_ref's ``docs/porting.md`` and ``docs/SPEC.md`` with PyTorch's own operations
(``torch.nn.functional`` convolutions, ``max_pool2d(return_indices=True)``, ``max_unpool2d``,
autograd for every gradient, ``torch.optim`` for the G-step); it does not import drmm_ref.

* :mod:`.core`     -- positions <-> PyTorch indices, the DRMM's bottom-up pass, rendering, log joint;
* :mod:`.learning` -- the EG objective and its gradient (autograd), EG / backprop steps, the CGLS block step;
* :mod:`.rmm`      -- the shallow RMM: max-sum, DCN scores, MAP, posterior, E- and M-steps;
* :mod:`.adapter`  -- ``ADAPTER`` for ``python -m drmm_ref.conformance --adapter torch_drmm.adapter:ADAPTER``.

Everything runs in float64 on the CPU by default.
"""

from .core import (Net, Params, bottom_up, flat_to_window, log_joint, maxpool2d, render, select2d, unpool2d,
                   window_to_flat)

__all__ = ["Net", "Params", "bottom_up", "flat_to_window", "log_joint", "maxpool2d", "render", "select2d", "unpool2d",
           "window_to_flat"]
__version__ = "0.1.0"
