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
from ..drmm import BottomUp, DRMMParams, Rendering, bottom_up
from .objectives import UNLABELLED
from .rendering import render_cached

__all__ = ["EStep", "e_step"]


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
        Top-down rendering of ``c_n`` through the latents (None when ``render=False``).
    unpooled : tuple of L arrays or None
        The rendering's unpooled maps ``v^(l)`` (reused by the objective's gradient).
    """

    forward: BottomUp
    classes: Any
    posterior: Any
    rendering: Rendering | None
    unpooled: tuple[Any, ...] | None = None

    @property
    def latents(self):
        return self.forward.latents


def e_step(params: DRMMParams, images: Any, labels: Any = None, *, render_: bool = True) -> EStep:
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

    Returns
    -------
    EStep
    """
    fw = bottom_up(params, images)
    xp = _backend.get_namespace(fw.scores)
    if labels is None:
        classes = fw.classes
    else:
        if labels.ndim != 1 or labels.shape[0] != fw.scores.shape[0]:
            raise ValueError(f"labels must have shape ({fw.scores.shape[0]},), got {tuple(labels.shape)}")
        classes = xp.astype(labels, xp.int64)
        k = params.net.n_classes
        if classes.shape[0] and (bool(xp.any(classes < UNLABELLED)) or bool(xp.any(classes >= k))):
            raise ValueError(f"labels out of range: the network has K = {k} classes (0..{k - 1}; "
                             f"{UNLABELLED} = unlabelled)")
        unlabelled = classes == UNLABELLED
        if classes.shape[0] and bool(xp.any(unlabelled)):
            classes = xp.where(unlabelled, xp.astype(fw.classes, xp.int64), classes)
    q = P.softmax(fw.scores, axis=1, xp=xp)
    if not render_:
        return EStep(fw, classes, q, None, None)
    rendering, unpooled = render_cached(params, classes, fw.latents)
    return EStep(fw, classes, q, rendering, unpooled)
