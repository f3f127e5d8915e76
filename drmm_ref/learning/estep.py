"""The E-step of EG training: hard latents by the bottom-up pass, rendering by the top-down pass.

SPEC §3 (Patel et al. 2016, §3). For a batch of images:

1. bottom-up pass (the DCN forward, max-sum inference): latents ``g*_n`` (positions and
   switches of every unit) and scores ``s_n``; class posterior ``q(c | I_n) = softmax(s_n)``;
2. the class to render from, ``c_n``: the label when it is given, ``argmax_c q`` otherwise (no
   labels, or an example labelled :data:`~drmm_ref.learning.objectives.UNLABELLED` in a
   semi-supervised batch);
3. top-down pass from ``c_n`` through ``g*_n``: the reconstruction ``x_hat_n = z^(0)`` and every
   partial rendering ``z^(l)`` (needed by RC and NN).

The E-step is the DCN's max-sum, not the MAP of ``ln p(I, c, g)`` (the norm term couples the
stamps), so it can raise RC: nothing here is monotone (SPEC §3).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from .. import _backend
from .. import primitives as P
from ..drmm import BottomUp, DRMMParams, Rendering, bottom_up, render
from ._checks import check_labels
from .objectives import UNLABELLED

__all__ = ["EStep", "e_step", "rendered_classes"]


@dataclasses.dataclass(frozen=True)
class EStep:
    """What the E-step computes for one batch.

    Attributes
    ----------
    forward : BottomUp
        Features, pre-activations, latents and scores of the bottom-up pass.
    classes : int64 array of shape (N,)
        ``c_n``: the label where given, the DCN's decision otherwise.
    posterior : array of shape (N, K)
        ``q(c | I_n) = softmax(s_n)``.
    rendering : Rendering or None
        Top-down rendering of ``c_n`` through the latents (None when ``render_=False``); it keeps
        its unpooled maps, which :func:`drmm_ref.drmm.render_vjp` reuses.
    """

    forward: BottomUp
    classes: Any
    posterior: Any
    rendering: Rendering | None

    @property
    def latents(self):
        return self.forward.latents


def rendered_classes(forward: BottomUp, labels: Any) -> Any:
    """``c_n``: the label where given, the DCN decision ``argmax_c s_c`` where absent or :data:`UNLABELLED`.

    No checks and no host synchronisation (``labels``: int64 of shape (N,) or None).
    """
    if labels is None:
        return forward.classes
    xp = _backend.get_namespace(forward.scores)
    return xp.where(labels == UNLABELLED, forward.classes, labels)


def e_step(params: DRMMParams, images: Any, labels: Any = None, *, render_: bool = True,
           relu_topdown: bool = False) -> EStep:
    """Hard E-step on a batch (SPEC §3).

    Parameters
    ----------
    params : DRMMParams
    images : array of shape (N, C_0, H_0, W_0)
    labels : int array of shape (N,), optional
        Clamp the rendered class to the label (supervised); without labels, and for the examples
        whose label is ``UNLABELLED`` (-1), the DCN's ``argmax_c s_c`` is rendered.
    render_ : bool, default True
        Also run the top-down pass (needed by RC and NN; the backprop baseline skips it).
    relu_topdown : bool, default False
        Render with a ReLU on the partial renderings of levels 1..L-1 (SPEC §5).

    Returns
    -------
    EStep
    """
    fw = bottom_up(params, images)
    xp = _backend.get_namespace(fw.scores)
    if labels is not None:
        check_labels(labels, int(fw.scores.shape[0]), params.net.n_classes, xp=xp)
        labels = xp.astype(labels, xp.int64)
    classes = rendered_classes(fw, labels)
    q = P.softmax(fw.scores, axis=1, xp=xp)
    rendering = render(params, classes, fw.latents, check=False, relu_topdown=relu_topdown) if render_ else None
    return EStep(fw, classes, q, rendering)
