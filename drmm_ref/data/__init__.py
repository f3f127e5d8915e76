"""Data sets: MNIST with checksums and an offline fallback (imports only the backend)."""

from .mnist import MNIST, MNISTUnavailable, Split, labelled_subset, load_mnist

__all__ = ["MNIST", "MNISTUnavailable", "Split", "labelled_subset", "load_mnist"]
