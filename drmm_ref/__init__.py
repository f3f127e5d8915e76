"""drmm_ref: reference implementation of the Deep Rendering Mixture Model.

Patel, Nguyen & Baraniuk, "A Probabilistic Framework for Deep Learning", NIPS 2016
(arXiv:1612.01936). The mathematics implemented here is written out in docs/SPEC.md; code cites
its sections (e.g. "SPEC §2, D1").

Layers, each importing only those below it: ``drmm_ref._backend`` (namespaces, devices, host
copies, random numbers) -> ``drmm_ref.primitives`` (conv, pool, relu and their adjoints/VJPs) ->
models (``drmm_ref.rmm``, the shallow model; ``drmm_ref.drmm``, the deep model, whose operations
are also exported here) -> ``drmm_ref.learning`` (EG training, backprop baseline, trainer) ->
``drmm_ref.cli``. Beside them: ``drmm_ref.data`` (MNIST) and ``drmm_ref.io`` (save/load).
"""

from . import primitives
from . import rmm
from ._backend import get_namespace, namespace_name, random_integers, random_normal, random_uniform, to_numpy
from . import drmm
from .drmm import (PRESETS, BottomUp, DRMMParams, Latents, Layer, Network, Rendering, Sample, bottom_up, init_params,
                   log_joint, preset, render, sample, top_down)

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "BottomUp", "DRMMParams", "Latents", "Layer", "Network", "PRESETS", "Rendering", "Sample",
    "bottom_up", "drmm", "init_params", "log_joint", "preset", "render", "sample", "top_down",
    "get_namespace",
    "namespace_name",
    "primitives",
    "rmm",
    "random_integers",
    "random_normal",
    "random_uniform",
    "to_numpy",
]
