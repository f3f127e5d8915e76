"""The shallow Rendering Mixture Model (RMM) of Patel, Nguyen & Baraniuk 2016, §2.1 (SPEC §1, §4).

One template ``mu_{c,m}`` (class ``c``, sub-template ``m``) is rendered at a position ``g`` with a
switch ``a`` and white noise is added. This package holds:

* :mod:`~drmm_ref.rmm.params` -- :class:`RMMParams`, the validated parameters;
* :mod:`~drmm_ref.rmm.model` -- :func:`render`, :func:`sample`, :func:`log_joint`, exact inference
  (:func:`posterior`, :func:`class_posterior`, :func:`class_log_marginal` by sum-product) and the
  max-sum MAP (:func:`max_sum_scores`, :func:`map_estimate`);
* :mod:`~drmm_ref.rmm.dcn` -- the exact map to a conv -> ReLU -> max-pool classifier and back (SPEC §4);
* :mod:`~drmm_ref.rmm.em` -- soft and hard EM, supervised and unsupervised, with the SPEC §1 guards;
* :mod:`~drmm_ref.rmm.init` -- k-means++ initialisation on image patches.

Arrays are NCHW, templates ``(K, M, C, k, k)``; every function infers the Array API namespace of
its inputs (NumPy, CuPy, ``array_api_strict``).
"""

from .dcn import DCNParams, dcn_classify, dcn_scores, from_dcn, pinned_constant, to_dcn
from .em import EMTrace, EStep, e_step, fit, hard_e_step, m_step, objective
from .init import init_params, kmeans_pp_templates
from .model import (
    Latents,
    Posterior,
    class_log_marginal,
    class_posterior,
    log_joint,
    log_likelihood,
    map_estimate,
    max_sum_scores,
    posterior,
    render,
    sample,
    tempered_class_scores,
)
from .params import PARAMS_VERSION, RMMParams

__all__ = [
    "PARAMS_VERSION",
    "DCNParams",
    "EMTrace",
    "EStep",
    "Latents",
    "Posterior",
    "RMMParams",
    "class_log_marginal",
    "class_posterior",
    "dcn_classify",
    "dcn_scores",
    "e_step",
    "fit",
    "from_dcn",
    "hard_e_step",
    "init_params",
    "kmeans_pp_templates",
    "log_joint",
    "log_likelihood",
    "m_step",
    "map_estimate",
    "max_sum_scores",
    "objective",
    "pinned_constant",
    "posterior",
    "render",
    "sample",
    "tempered_class_scores",
    "to_dcn",
]
