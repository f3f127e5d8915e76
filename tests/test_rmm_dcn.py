"""Generative <-> DCN (SPEC §4): the round trip where it exists, a clear error where it does not."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from drmm_ref import rmm
from drmm_ref.rmm._terms import clipped_norms

from ._helpers import assert_identity_close, host
from .test_rmm_inference import _images, oracle_regions, oracle_table, rmm_models

seeds = st.integers(0, 2 ** 32 - 1)  # bulk data (images, weights) from default_rng(seed)


@given(params=rmm_models(), seed=seeds)
def test_generative_dcn_generative_round_trip(params, seed):
    back = rmm.from_dcn(rmm.to_dcn(params), params.sigma2)
    for name in ("templates", "class_prior", "switch_prior"):
        assert_identity_close(host(getattr(back, name)), host(getattr(params, name)), err_msg=name)
    assert back.sigma2 == params.sigma2 and back.padding == params.padding and back.pool == params.pool
    uniform = np.full(params.grid_shape, 1 / np.prod(params.grid_shape))
    prior = lambda p: uniform if p.nuisance_prior is None else host(p.nuisance_prior)  # noqa: E731
    if params.pool is None:  # (window form: only the per-window conditionals are determined)
        assert_identity_close(prior(back), prior(params))
    images = _images(params, seed)
    assert_identity_close(host(rmm.max_sum_scores(back, images)), host(rmm.max_sum_scores(params, images)))


@given(params=rmm_models(multi=False, padded=False), log_s2=st.floats(-4, 0, allow_nan=False))
def test_dcn_generative_dcn_round_trip_for_any_sigma2(params, log_s2):
    """M = 1, valid positions: any sigma^2 inverts the DCN (class biases come back up to a common constant)."""
    dcn = rmm.to_dcn(params)
    try:
        back = rmm.from_dcn(dcn, float(np.exp(log_s2)))
    except ValueError as exc:  # a switch logit beyond float64's sigmoid: a legitimate refusal
        assume("too large in magnitude" not in str(exc))
        raise
    again = rmm.to_dcn(back)
    assert_identity_close(host(again.weights), host(dcn.weights))
    # the switch prior is stored as a probability: ln(pi_on / pi_off) comes back to eps / min(pi_on, pi_off)
    pon = host(back.switch_prior)
    conditioning = 1 / np.minimum(pon, 1 - pon).min() + np.abs(host(dcn.bias)).max()
    assert_identity_close(host(again.bias), host(dcn.bias), scale=conditioning)
    shift = host(again.class_bias) - host(dcn.class_bias)
    assert_identity_close(shift, np.full_like(shift, shift[0]))


@given(data=st.data(), padded=st.booleans(), factor=st.floats(1.5, 4))
def test_sigma2_is_pinned_by_padding_or_sub_templates(data, padded, factor):
    """With M > 1 or a padded bias map, only the generating sigma^2 inverts the DCN; others raise (SPEC §4)."""
    params = data.draw(rmm_models(multi=not padded, nonuniform=False, padded=padded, window=False), label="params")
    dcn = rmm.to_dcn(params)
    norms = host(clipped_norms(params)) if padded else host(params.templates ** 2).sum(axis=(2, 3, 4))
    spread = norms.reshape(norms.shape[0], -1).max(axis=1) - norms.reshape(norms.shape[0], -1).min(axis=1)
    assume(np.max(spread) > 1e-3)  # equal norms would leave sigma^2 free
    with pytest.raises(ValueError, match="clipped-norm|differs between sub-templates"):
        rmm.from_dcn(dcn, params.sigma2 * factor)


@given(seed=seeds, padded=st.booleans(), log_s2=st.floats(-2, 1, allow_nan=False))
def test_arbitrary_single_template_dcn_is_a_max_sum(seed, padded, log_s2):
    """M = 1: any weights and per-class biases are the max-sum of the RMM from_dcn builds (SPEC §4)."""
    rng = np.random.default_rng(seed)
    K, C, k = 3, 1, 3
    side = 5
    q = 1 if padded else 0
    grid = side + 2 * q - k + 1
    w = rng.standard_normal((K, 1, C, k, k))
    if padded:  # a bias map of the clipped-norm form plus an arbitrary constant per class
        s2 = float(np.exp(log_s2))
        probe = rmm.RMMParams(templates=s2 * w, class_prior=np.full(K, 1 / K), switch_prior=0.5, sigma2=s2,
                              image_shape=(side, side), padding=q)
        bias = rmm.to_dcn(probe).bias + rng.normal(size=(K, 1, 1, 1))
    else:
        bias = rng.normal(size=(K, 1)) * 3
    dcn = rmm.DCNParams(weights=w, bias=bias, class_bias=rng.normal(size=K), position_offset=np.zeros((grid, grid)),
                        image_shape=(side, side), padding=q)
    params = rmm.from_dcn(dcn, float(np.exp(log_s2)))
    images = rng.standard_normal((4, C, side, side))
    brute = oracle_regions(params, oracle_table(params, images)).max(axis=-1)[:, :, 0]
    dcn_s = host(rmm.dcn_scores(dcn, images)) + host(rmm.pinned_constant(params, images))[:, None]
    diff = brute - dcn_s
    pon = host(params.switch_prior)  # ln pi_off of a stored probability is good to eps / pi_off
    scale = np.max(np.abs(brute)) + 1 / np.minimum(pon, 1 - pon).min()
    assert_identity_close(diff, np.broadcast_to(diff[:, :1], diff.shape), scale=scale)


def _dcn(rng, K=3, M=2, padded=False, side=5, k=3):
    q = 1 if padded else 0
    grid = side + 2 * q - k + 1
    return rmm.DCNParams(weights=rng.standard_normal((K, M, 1, k, k)), bias=rng.normal(size=(K, M)),
                         class_bias=np.zeros(K), position_offset=np.zeros((grid, grid)), image_shape=(side, side),
                         padding=q)


def test_error_when_sub_templates_need_different_switch_priors():
    with pytest.raises(ValueError, match="differs between sub-templates"):
        rmm.from_dcn(_dcn(np.random.default_rng(0)), 1.0)


def test_error_when_a_shared_switch_prior_is_impossible():
    dcn = _dcn(np.random.default_rng(1), M=1)
    rmm.from_dcn(dcn, 1.0)  # per-class switch priors exist
    with pytest.raises(ValueError, match="shared_switch=True"):
        rmm.from_dcn(dcn, 1.0, shared_switch=True)


def test_error_when_a_padded_dcn_has_a_constant_bias():
    with pytest.raises(ValueError, match="clipped-norm"):
        rmm.from_dcn(_dcn(np.random.default_rng(2), M=1, padded=True), 1.0)


def test_error_on_bad_sigma2_and_bad_dcn():
    dcn = _dcn(np.random.default_rng(3), M=1)
    with pytest.raises(ValueError, match="sigma2"):
        rmm.from_dcn(dcn, 0.0)
    with pytest.raises(ValueError, match="bias must have shape"):
        rmm.DCNParams(weights=dcn.weights, bias=np.zeros(3), class_bias=dcn.class_bias,
                      position_offset=dcn.position_offset, image_shape=dcn.image_shape)
    with pytest.raises(ValueError, match="weights contains NaN"):
        rmm.DCNParams(weights=dcn.weights * np.nan, bias=dcn.bias, class_bias=dcn.class_bias,
                      position_offset=dcn.position_offset, image_shape=dcn.image_shape)
    with pytest.raises(TypeError, match="dcn must be a DCNParams"):
        rmm.dcn_scores("not a dcn", np.zeros((1, 1, 5, 5)))
