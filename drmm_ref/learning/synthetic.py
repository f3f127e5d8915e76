"""A synthetic stand-in for MNIST: ten classes of seeded stroke prototypes, shifted and noisy.

Used by the tests, by ``--quick`` claim runs when the MNIST cache is absent, and by
``drmm-ref train --data synthetic``; it never touches the network. Every class ``c`` has a
prototype drawn once from ``default_rng(prototype_seed)``: three strokes, each a row of Gaussian
bumps (width 1.2 px) along a random segment inside the central 20 x 20 square. An example is its
class prototype scaled by ``U(0.8, 1.2)``, shifted by up to ``max_shift`` pixels in each direction,
plus ``N(0, noise^2)`` pixel noise, clipped to ``[0, 1]``. Images are float32, ``N x 1 x 28 x 28``
(like :func:`drmm_ref.data.load_mnist`), labels int64 and balanced in expectation.
"""

from __future__ import annotations

import dataclasses

import numpy as np

__all__ = ["SyntheticDigits", "synthetic_digits", "mnist_or_synthetic", "SYNTHETIC_DESCRIPTION"]

SYNTHETIC_DESCRIPTION = ("synthetic stand-in for MNIST (drmm_ref.learning.synthetic_digits): 10 classes of seeded "
                         "3-stroke prototypes, random shift <= 3 px, amplitude U(0.8, 1.2), pixel noise 0.1, 28x28")


@dataclasses.dataclass(frozen=True)
class _Split:
    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclasses.dataclass(frozen=True)
class SyntheticDigits:
    """Train / validation / test splits with the attributes of :class:`drmm_ref.data.mnist.MNIST`."""

    train: _Split
    validation: _Split
    test: _Split
    source: str


def _prototypes(rng: np.random.Generator, n_classes: int, side: int) -> np.ndarray:
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float64)
    protos = np.zeros((n_classes, side, side))
    for c in range(n_classes):
        img = np.zeros((side, side))
        for _ in range(3):
            (y0, x0), (y1, x1) = rng.uniform(4, side - 5, size=(2, 2))
            for s in np.linspace(0.0, 1.0, 12):
                cy, cx = y0 + s * (y1 - y0), x0 + s * (x1 - x0)
                img = np.maximum(img, np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 1.2 ** 2)))
        protos[c] = img
    return protos


def _draw(rng: np.random.Generator, protos: np.ndarray, n: int, max_shift: int, noise: float):
    k, side, _ = protos.shape
    labels = rng.integers(0, k, size=n).astype(np.int64)
    scale = rng.uniform(0.8, 1.2, size=n)
    shifts = rng.integers(-max_shift, max_shift + 1, size=(n, 2))
    images = np.zeros((n, side, side))
    for i in range(n):
        images[i] = np.roll(protos[labels[i]], tuple(shifts[i]), axis=(0, 1)) * scale[i]
    images += noise * rng.standard_normal(images.shape)
    return np.clip(images, 0.0, 1.0).astype(np.float32)[:, None, :, :], labels


def synthetic_digits(n_train: int = 1000, n_validation: int = 500, n_test: int = 500, *, seed: int = 0,
                     prototype_seed: int = 12345, max_shift: int = 3, noise: float = 0.1) -> SyntheticDigits:
    """Draw the three splits (host NumPy arrays; the same seeds give the same arrays).

    Parameters
    ----------
    n_train, n_validation, n_test : int
    seed : int
        Seeds the examples (shifts, amplitudes, noise, labels); splits use independent streams.
    prototype_seed : int
        Seeds the ten class prototypes (fixed by default, so different ``seed`` values share classes).
    """
    protos = _prototypes(np.random.default_rng(prototype_seed), 10, 28)
    streams = np.random.SeedSequence(seed).spawn(3)
    parts = [_Split(*_draw(np.random.default_rng(s), protos, n, max_shift, noise))
             for s, n in zip(streams, (n_train, n_validation, n_test))]
    return SyntheticDigits(*parts, source=f"{SYNTHETIC_DESCRIPTION}; seed {seed}")


def mnist_or_synthetic(n_train: int | None, n_eval: int | None, *, seed: int = 0, allow_download: bool = False):
    """MNIST when it can be had without the network (cache or ``$DRMM_REF_MNIST``), else the stand-in.

    For the ``--quick`` claim runs: never downloads unless ``allow_download``. Returns
    ``(data, is_mnist)``; ``data.source`` says which. The stand-in has ``n_train`` (default 1,000)
    training and ``n_eval`` (default 500) validation and test images.
    """
    from ..data import load_mnist
    from ..data.mnist import MNISTUnavailable

    try:
        return load_mnist(offline=not allow_download, progress=False), True
    except (MNISTUnavailable, ValueError, OSError):
        return synthetic_digits(n_train or 1000, n_eval or 500, n_eval or 500, seed=seed), False
