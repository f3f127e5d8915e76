"""The trainable parameters of a DRMM as a flat, ordered mapping of arrays ("a tree").

Optimisers, gradients and checkpoints all work on the same mapping, keyed by the names the
parameter files use (:mod:`drmm_ref.io`): ``filters_1 .. filters_L``, ``biases_1 .. biases_L``,
``class_templates``, ``class_biases``. The class prior, switch priors and noise variance are not
in it: they change only by their closed forms (SPEC §3), never by a gradient step.
"""

from __future__ import annotations

from typing import Any

from ..drmm import DRMMParams, Gradients

__all__ = ["trainable_names", "trainable", "with_trainable", "gradients_tree", "add_trees", "scale_tree"]


def trainable_names(L: int) -> tuple[str, ...]:
    """Names of the trainable arrays of a network with ``L`` rendering layers, in a fixed order."""
    return (tuple(f"filters_{l}" for l in range(1, L + 1)) + tuple(f"biases_{l}" for l in range(1, L + 1))
            + ("class_templates", "class_biases"))


def trainable(params: DRMMParams) -> dict[str, Any]:
    """The trainable arrays of ``params`` by name (the arrays themselves, not copies)."""
    tree = {f"filters_{l}": w for l, w in enumerate(params.filters, start=1)}
    tree.update({f"biases_{l}": b for l, b in enumerate(params.biases, start=1)})
    tree["class_templates"] = params.class_templates
    tree["class_biases"] = params.class_biases
    return tree


def with_trainable(params: DRMMParams, tree: dict[str, Any]) -> DRMMParams:
    """``params`` with the arrays of ``tree`` put in (missing names keep their value)."""
    L = params.net.L
    filters = tuple(tree.get(f"filters_{l}", params.filters[l - 1]) for l in range(1, L + 1))
    biases = tuple(tree.get(f"biases_{l}", params.biases[l - 1]) for l in range(1, L + 1))
    return params.replace(filters=filters, biases=biases,
                          class_templates=tree.get("class_templates", params.class_templates),
                          class_biases=tree.get("class_biases", params.class_biases))


def gradients_tree(grads: Gradients, L: int) -> dict[str, Any]:
    """A :class:`~drmm_ref.drmm.Gradients` as a tree (fields that are None are left out)."""
    tree = {}
    if grads.filters is not None:
        tree.update({f"filters_{l}": g for l, g in enumerate(grads.filters, start=1) if g is not None})
    if grads.biases is not None:
        tree.update({f"biases_{l}": g for l, g in enumerate(grads.biases, start=1) if g is not None})
    if grads.class_templates is not None:
        tree["class_templates"] = grads.class_templates
    if grads.class_biases is not None:
        tree["class_biases"] = grads.class_biases
    return tree


def add_trees(a: dict[str, Any], b: dict[str, Any], scale_b: float = 1.0) -> dict[str, Any]:
    """``a + scale_b * b`` over the union of names (a missing entry counts as zero)."""
    out = dict(a)
    for name, v in b.items():
        if scale_b != 1.0:
            v = scale_b * v
        out[name] = v if name not in out else out[name] + v
    return out


def scale_tree(a: dict[str, Any], s: float) -> dict[str, Any]:
    return {name: s * v for name, v in a.items()}
