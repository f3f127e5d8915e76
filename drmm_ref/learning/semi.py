"""Semi-supervised and unsupervised data handling: the label split, paired batches, cluster accuracy.

SPEC §5 (Nguyen, Patel & Baraniuk's semi-supervised DRMM; docs/ssl.md).

* :func:`label_split` -- a class-balanced labelled subset of the training split (N_L labels,
  recorded seed, :func:`drmm_ref.data.labelled_subset`) and every other training image as the
  unlabelled set. ``N_L = 0`` is unsupervised training: every image is unlabelled.
* :func:`paired_batches` -- one epoch's mini-batches. An epoch is one pass over the *unlabelled*
  set in a fresh random order; each unlabelled batch is paired with a labelled batch of the same
  size drawn from a stream of fresh permutations of the labelled set (the labelled set is
  oversampled: with 100 labels and 49,900 unlabelled images every label is seen 499 times an
  epoch, each time in another batch). All randomness comes from the ``rng`` passed in, at the start
  of the epoch, so a checkpointed generator state resumes the schedule exactly.
* :func:`align_classes` -- before labelled training starts from an unsupervised model, renumber its
  classes so that cluster ``c`` becomes the label most of its labelled examples carry (Hungarian
  matching on the labelled set's confusion matrix). Without it the labels must first undo an
  arbitrary permutation of the learnt clusters, against the entropy term (seen on planted data:
  a perfect clustering fine-tuned to 23% error).
* :func:`cluster_accuracy` -- the accuracy of a class latent learnt without labels, after the
  optimal one-to-one matching of clusters to labels (Hungarian algorithm on the confusion matrix),
  with the cluster sizes.

The trainer (:func:`drmm_ref.learning.train` with ``TrainConfig.n_labels``) concatenates a pair
into one batch ``[labelled; unlabelled]`` whose labels are the true labels followed by
:data:`~drmm_ref.learning.objectives.UNLABELLED`: the labels of the unlabelled images are never
read, so none can reach the objective.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from .. import _backend

__all__ = ["LabelSplit", "label_split", "paired_batches", "cluster_accuracy", "confusion_matrix", "align_classes"]


@dataclasses.dataclass(frozen=True)
class LabelSplit:
    """Indices (into the training split) of the labelled and the unlabelled examples.

    Attributes
    ----------
    labelled : int64 ndarray, sorted
    unlabelled : int64 ndarray, sorted (the complement of ``labelled``)
    n_labels : int
    seed : int
        Seed of the class-balanced draw (:func:`drmm_ref.data.labelled_subset`).
    """

    labelled: np.ndarray
    unlabelled: np.ndarray
    n_labels: int
    seed: int


def label_split(labels: Any, n_labels: int, seed: int, num_classes: int = 10) -> LabelSplit:
    """Split the training set into a class-balanced labelled subset and the unlabelled rest.

    Parameters
    ----------
    labels : int array of shape (N,)
        Labels of the training split (read only to balance the labelled subset).
    n_labels : int
        ``N_L``: 0 (unsupervised) or a positive multiple of ``num_classes``.
    seed : int
    num_classes : int, default 10

    Raises
    ------
    ValueError
        If ``n_labels`` is negative, not a multiple of ``num_classes``, or leaves no unlabelled image.
    """
    from ..data import labelled_subset

    y = np.asarray(_backend.to_numpy(labels))
    n = int(y.shape[0]) if y.ndim == 1 else -1
    if n < 0:
        raise ValueError(f"labels must be 1-D, got shape {y.shape}")
    if isinstance(n_labels, bool) or int(n_labels) != n_labels or n_labels < 0:
        raise ValueError(f"n_labels must be an integer >= 0, got {n_labels!r}")
    n_labels = int(n_labels)
    if n_labels >= n:
        raise ValueError(f"n_labels={n_labels} leaves no unlabelled image in a training split of {n}")
    if n_labels == 0:
        labelled = np.zeros(0, dtype=np.int64)
    else:
        labelled = labelled_subset(y, n_labels, seed, num_classes)
    mask = np.ones(n, dtype=bool)
    mask[labelled] = False
    return LabelSplit(labelled, np.flatnonzero(mask).astype(np.int64), n_labels, int(seed))


def paired_batches(split: LabelSplit, batch_size: int, rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    """One epoch of paired batches ``(labelled indices, unlabelled indices)`` of equal size.

    ``ceil(N_U / batch_size)`` pairs; the last may be smaller (both halves alike). With no labelled
    examples (``N_L = 0``) the labelled halves are empty.
    """
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    n_u, n_l = int(split.unlabelled.size), int(split.labelled.size)
    if n_u == 0:
        raise ValueError("the split has no unlabelled example")
    order_u = split.unlabelled[rng.permutation(n_u)]
    if n_l:
        reps = math.ceil(n_u / n_l)
        stream = np.concatenate([split.labelled[rng.permutation(n_l)] for _ in range(reps)])[:n_u]
    else:
        stream = np.zeros(n_u, dtype=np.int64)[:0]
    out = []
    for s in range(0, n_u, batch_size):
        out.append((stream[s:s + batch_size] if n_l else stream, order_u[s:s + batch_size]))
    return out


def confusion_matrix(predicted: Any, labels: Any, num_classes: int) -> np.ndarray:
    """``M[c, y]`` = how many examples of label ``y`` were put in class (cluster) ``c`` (host int64)."""
    p = np.asarray(_backend.to_numpy(predicted)).astype(np.int64).ravel()
    y = np.asarray(_backend.to_numpy(labels)).astype(np.int64).ravel()
    if p.shape != y.shape:
        raise ValueError(f"predicted and labels differ in length: {p.shape[0]} vs {y.shape[0]}")
    for name, v in (("predicted", p), ("labels", y)):
        if v.size and (v.min() < 0 or v.max() >= num_classes):
            raise ValueError(f"{name} must lie in 0..{num_classes - 1}")
    m = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(m, (p, y), 1)
    return m


def cluster_accuracy(confusion: Any) -> dict[str, Any]:
    """Accuracy after the best one-to-one matching of clusters (rows) to labels (columns).

    Returns ``{"accuracy", "mapping" (cluster -> label), "cluster_sizes", "empty_clusters"}``.
    """
    from scipy.optimize import linear_sum_assignment

    m = np.asarray(confusion, dtype=np.int64)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"confusion must be a square matrix, got shape {m.shape}")
    rows, cols = linear_sum_assignment(-m)
    total = int(m.sum())
    sizes = m.sum(axis=1)
    return {"accuracy": float(m[rows, cols].sum() / total) if total else 0.0,
            "mapping": [int(c) for c in cols[np.argsort(rows)]],
            "cluster_sizes": [int(s) for s in sizes], "empty_clusters": int(np.sum(sizes == 0))}


def align_classes(params: Any, images: Any, labels: Any) -> tuple[Any, list[int]]:
    """Renumber the classes of ``params`` to best match ``labels`` on ``images`` (the labelled set).

    Cluster ``c`` (the DCN decision ``argmax_c s_c``) becomes label ``mapping[c]``, the one-to-one
    assignment that maximises the number of labelled images classified correctly. Class templates,
    class biases and the class prior are permuted alike, so the renumbered model makes the same
    partition of any input.

    Returns
    -------
    params, mapping (list: cluster -> label)
    """
    from ..drmm import bottom_up

    xp, k = params.xp, params.net.n_classes
    x = _backend.asarray(np.asarray(_backend.to_numpy(images)).astype(_backend.to_numpy(params.class_templates).dtype),
                         xp=xp, device=params.device)
    pred = bottom_up(params, x).classes
    mapping = cluster_accuracy(confusion_matrix(pred, labels, k))["mapping"]
    inverse = np.empty(k, dtype=np.int64)
    inverse[np.asarray(mapping)] = np.arange(k)  # new class j <- old class inverse[j]
    idx = _backend.asarray(inverse, xp=xp, device=params.device)
    aligned = params.replace(class_templates=xp.take(params.class_templates, idx, axis=0),
                             class_biases=xp.take(params.class_biases, idx, axis=0),
                             class_prior=xp.take(params.class_prior, idx, axis=0))
    return aligned, [int(m) for m in mapping]
