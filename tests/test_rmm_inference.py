"""RMM inference (SPEC §1): brute force == max-sum == DCN, exact posteriors, float32 stability, backends.

The oracle here enumerates every ``(c, m, g, a)`` with Python loops and explicit canvas placement
(host NumPy, float64): slow, obviously correct, and independent of the library's convolutions.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from drmm_ref import _backend, rmm
from drmm_ref.numerics import identity_tolerance

from ._helpers import assert_identity_close, host


# ---------------------------------------------------------------------------------------------
# random small models and the brute-force oracle
# ---------------------------------------------------------------------------------------------
def _model(K, C, M, k, q, p, hg, wg, templates, class_prior, switch_prior, sigma2, nuisance, xp, dtype):
    """The RMMParams of one drawn structure (grid ``hg x wg`` of template positions, SPEC §1)."""
    put = lambda a: _backend.asarray(np.asarray(a, dtype=dtype), xp=xp)  # noqa: E731
    prior = None
    if nuisance is not None:
        prior = np.asarray(nuisance, dtype=np.float64).reshape(hg, wg)
        prior = put(prior / prior.sum())
    return rmm.RMMParams(templates=put(templates), class_prior=put(class_prior), switch_prior=put(switch_prior),
                         sigma2=float(sigma2), image_shape=(hg - 2 * q + k - 1, wg - 2 * q + k - 1),
                         padding=q, nuisance_prior=prior, pool=p)


def make_model(seed: int, *, multi: bool, nonuniform: bool, padded: bool, window: bool, xp=np, dtype="float64"):
    """A random small model from one seed: for the named (fixed) examples. Property tests use :func:`rmm_models`."""
    rng = np.random.default_rng(seed)
    K, C = int(rng.integers(2, 4)), int(rng.integers(1, 3))
    M = int(rng.integers(2, 4)) if multi else 1
    k = int(rng.integers(2, 4)) if padded else int(rng.integers(1, 4))
    q = int(rng.integers(1, k)) if padded else 0
    p = int(rng.integers(2, 4)) if window else None
    lo = max(1, 2 * q - k + 2)
    if p is None:
        hg, wg = (int(v) for v in rng.integers(lo, lo + 4, size=2))
    else:
        hg, wg = (p * int(v) for v in rng.integers(-(-lo // p), -(-lo // p) + 2, size=2))
    nuisance = rng.dirichlet(np.ones(hg * wg)) + 1e-3 if nonuniform else None
    return _model(K, C, M, k, q, p, hg, wg, rng.standard_normal((K, M, C, k, k)), rng.dirichlet(2 * np.ones(K)),
                  rng.uniform(0.1, 0.9, size=K), rng.uniform(0.2, 1.5), nuisance, xp, dtype)


def _flag(value):
    return st.booleans() if value is None else st.just(value)


@st.composite
def rmm_models(draw, multi=None, nonuniform=None, padded=None, window=None, xp=np, dtype="float64"):
    """Random small RMMs whose structure and priors are drawn (so failures shrink to the smallest model).

    ``K`` 2-3 classes, ``C`` 1-2 channels, ``M`` 2-3 sub-templates (``multi``) or 1, template side ``k``
    1-3 (2-3 with ``padded``, then padding ``q`` in 1..k-1), pooling windows ``p`` 2-3 (``window``) or
    one global nuisance, a grid of 1-4 positions a side beyond the smallest valid one (whole windows),
    class prior, switch priors, ``sigma^2`` and (``nonuniform``) the position prior as bounded floats;
    the templates (bulk data) come from a drawn seed. A flag left ``None`` is drawn too.
    """
    multi, nonuniform, padded, window = (draw(_flag(v)) for v in (multi, nonuniform, padded, window))
    K, C = draw(st.integers(2, 3)), draw(st.integers(1, 2))
    M = draw(st.integers(2, 3)) if multi else 1
    k = draw(st.integers(2, 3)) if padded else draw(st.integers(1, 3))
    q = draw(st.integers(1, k - 1)) if padded else 0
    p = draw(st.integers(2, 3)) if window else None
    lo = max(1, 2 * q - k + 2)
    if p is None:
        hg, wg = draw(st.integers(lo, lo + 3)), draw(st.integers(lo, lo + 3))
    else:
        hg, wg = (p * draw(st.integers(-(-lo // p), -(-lo // p) + 1)) for _ in range(2))
    weight = st.floats(0.05, 1.0, allow_nan=False, allow_subnormal=False)
    class_prior = np.asarray(draw(st.lists(weight, min_size=K, max_size=K)))
    switch_prior = draw(st.lists(st.floats(0.1, 0.9, allow_subnormal=False), min_size=K, max_size=K))
    sigma2 = draw(st.floats(0.2, 1.5, allow_subnormal=False))
    nuisance = None
    if nonuniform:
        nuisance = draw(st.lists(st.floats(1e-3, 1.0, allow_subnormal=False), min_size=hg * wg, max_size=hg * wg))
    templates = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1))).standard_normal((K, M, C, k, k))
    return _model(K, C, M, k, q, p, hg, wg, templates, class_prior / class_prior.sum(), switch_prior, sigma2,
                  nuisance, xp, dtype)


def oracle_table(params, images) -> np.ndarray:
    """ln p(I, c, m, g, a) for every configuration, shape (N, K, M, Hg, Wg, 2), by explicit loops."""
    t = host(params.templates).astype(np.float64)
    K, M, C, k, _ = t.shape
    H, W = params.image_shape
    q, s2 = params.padding, params.sigma2
    hg, wg = params.grid_shape
    imgs = host(images).astype(np.float64)
    pc, pon = host(params.class_prior).astype(np.float64), host(params.switch_prior).astype(np.float64)
    if params.nuisance_prior is None:
        pg = np.full((hg, wg), 1.0 / params.positions_per_model)
    else:
        pg = host(params.nuisance_prior).astype(np.float64)
        if params.pool is not None:
            p = params.pool
            for ry in range(hg // p):
                for rx in range(wg // p):
                    blk = pg[ry * p:(ry + 1) * p, rx * p:(rx + 1) * p]
                    pg[ry * p:(ry + 1) * p, rx * p:(rx + 1) * p] = blk / blk.sum()
    D = C * H * W
    out = np.empty((imgs.shape[0], K, M, hg, wg, 2))
    for c in range(K):
        for m in range(M):
            for gy in range(hg):
                for gx in range(wg):
                    canvas = np.zeros((C, H + 2 * q, W + 2 * q))
                    canvas[:, gy:gy + k, gx:gx + k] = t[c, m]
                    mean = canvas[:, q:q + H, q:q + W]
                    for a in (0, 1):
                        sq = np.sum((imgs - a * mean) ** 2, axis=(1, 2, 3))
                        out[:, c, m, gy, gx, a] = (-sq / (2 * s2) - D / 2 * math.log(2 * math.pi * s2) + math.log(pc[c])
                                                   - math.log(M) + math.log(pg[gy, gx])
                                                   + math.log(pon[c] if a else 1 - pon[c]))
    return out


def oracle_regions(params, table):
    """(N, K, R, M*S*2): the configurations of each model (window) on the last axis."""
    n, K, M, hg, wg, _ = table.shape
    if params.pool is None:
        return table.reshape(n, K, 1, -1)
    p = params.pool
    b = table.reshape(n, K, M, hg // p, p, wg // p, p, 2).transpose(0, 1, 3, 5, 2, 4, 6, 7)
    return b.reshape(n, K, (hg // p) * (wg // p), -1)


def _lse(x, axis):
    m = np.max(x, axis=axis, keepdims=True)
    return np.squeeze(m, axis=axis) + np.log(np.sum(np.exp(x - m), axis=axis))


def _flat_windows(params, x):
    """(N, K[, Rh, Rw]) -> (N, K, R)."""
    return x.reshape(x.shape[0], x.shape[1], -1)


seeds = st.integers(0, 2 ** 32 - 1)  # bulk data (images) from default_rng(seed)


def _images(params, seed, n=4):
    rng = np.random.default_rng(seed + 1)
    sampled, _, _ = rmm.sample(params, n, rng)
    noise = _backend.asarray(rng.standard_normal((2, params.channels, *params.image_shape)), xp=params.xp)
    return params.xp.concat([sampled, noise], axis=0)


# ---------------------------------------------------------------------------------------------
# R1: brute force == max-sum == DCN
# ---------------------------------------------------------------------------------------------
@given(params=rmm_models(), seed=seeds)
def test_brute_force_equals_max_sum_equals_dcn(params, seed):
    images = _images(params, seed)
    brute = oracle_regions(params, oracle_table(params, images)).max(axis=-1)  # (N, K, R)
    maxsum = _flat_windows(params, host(rmm.max_sum_scores(params, images)))
    kappa = host(rmm.pinned_constant(params, images)).reshape(-1, 1, 1)
    dcn = _flat_windows(params, host(rmm.dcn_scores(rmm.to_dcn(params), images))) + kappa
    assert_identity_close(maxsum, brute)
    assert_identity_close(dcn, brute)
    # the MAP configuration re-scored through the rendering reaches the brute-force maximum
    cls, lat, score = rmm.map_estimate(params, images)
    rescored = host(rmm.log_joint(params, images, cls, lat)).reshape(brute.shape[0], -1)
    assert_identity_close(rescored, brute.max(axis=1))
    assert_identity_close(host(score).reshape(rescored.shape), brute.max(axis=1))
    # classes agree wherever the margin is clear
    srt = np.sort(brute, axis=1)
    clear = srt[:, -1] - srt[:, -2] > 1e-9 * np.maximum(1, np.abs(srt[:, -1]))
    np.testing.assert_array_equal(host(cls).reshape(clear.shape)[clear], brute.argmax(axis=1)[clear])
    np.testing.assert_array_equal(host(rmm.dcn_classify(rmm.to_dcn(params), images)).reshape(clear.shape)[clear],
                                  brute.argmax(axis=1)[clear])


def test_constant_bias_is_wrong_at_padded_positions():
    """Regression (SPEC §1): with padding a constant bias -||mu||^2/(2 sigma^2) breaks the identity."""
    params = make_model(3, multi=False, nonuniform=False, padded=True, window=False)
    images = _images(params, 3)
    dcn = rmm.to_dcn(params)
    xp = params.xp
    full_norm = xp.sum(params.templates ** 2, axis=(2, 3, 4))  # (K, M): the unclipped norms
    log_odds = xp.log(params.switch_prior / (1 - params.switch_prior))[:, None]
    const = rmm.DCNParams(weights=dcn.weights, bias=-full_norm / (2 * params.sigma2) + log_odds,
                          class_bias=dcn.class_bias, position_offset=dcn.position_offset,
                          image_shape=dcn.image_shape, padding=dcn.padding)
    brute = oracle_regions(params, oracle_table(params, images)).max(axis=-1)[:, :, 0]
    wrong = host(rmm.dcn_scores(const, images)) + host(rmm.pinned_constant(params, images))[:, None]
    right = host(rmm.dcn_scores(dcn, images)) + host(rmm.pinned_constant(params, images))[:, None]
    assert_identity_close(right, brute)
    assert np.max(np.abs(wrong - brute)) > 1e-3


# ---------------------------------------------------------------------------------------------
# sum-product: posterior, class posterior, tempered scores
# ---------------------------------------------------------------------------------------------
@given(params=rmm_models(), seed=seeds)
def test_posterior_matches_brute_force_and_sums_to_one(params, seed):
    images = _images(params, seed)
    table = oracle_table(params, images)  # (N, K, M, Hg, Wg, 2)
    regions = oracle_regions(params, table)
    log_pc = _lse(regions, axis=-1)  # ln p(I, c) per window
    assert_identity_close(_flat_windows(params, host(rmm.class_log_marginal(params, images))), log_pc)
    post_c = host(rmm.class_posterior(params, images))
    np.testing.assert_allclose(post_c.sum(axis=1), 1.0, atol=1e-12)
    assert_identity_close(_flat_windows(params, post_c), np.exp(log_pc - _lse(log_pc, axis=1)[:, None]))
    post = rmm.posterior(params, images)
    resp, on = host(post.responsibilities), host(post.switch_on)
    np.testing.assert_allclose(host(post.responsibilities_on), resp * on, rtol=1e-12, atol=1e-300)
    if params.pool is None:
        np.testing.assert_allclose(resp.sum(axis=(1, 2, 3, 4)), 1.0, atol=1e-12)
        joint = np.exp(table - _lse(table.reshape(table.shape[0], -1), axis=1).reshape(-1, 1, 1, 1, 1, 1))
        assert_identity_close(resp, joint.sum(axis=-1))
        assert_identity_close(resp * on, joint[..., 1])
        assert_identity_close(host(post.log_evidence), _lse(log_pc[:, :, 0], axis=1))
    else:
        p = params.pool
        n, K, M, hg, wg = resp.shape
        sums = resp.reshape(n, K, M, hg // p, p, wg // p, p).sum(axis=(1, 2, 4, 6))
        np.testing.assert_allclose(sums, 1.0, atol=1e-12)
        # each window's model: p(c, m, g | I) normalised over c, m and the window's positions
        blocks = table.reshape(n, K, M, hg // p, p, wg // p, p, 2)
        norm = _lse(_lse(blocks, axis=-1).transpose(0, 3, 5, 1, 2, 4, 6).reshape(n, hg // p, wg // p, -1), axis=-1)
        joint = np.exp(blocks - norm[:, None, None, :, None, :, None, None])
        assert_identity_close(resp, joint.sum(axis=-1).reshape(resp.shape))
        assert_identity_close(resp * on, joint[..., 1].reshape(resp.shape))
        assert_identity_close(host(post.log_evidence), norm)


@given(params=rmm_models(window=False), seed=seeds)
def test_supervised_posterior_is_the_clamped_one(params, seed):
    images = _images(params, seed)
    labels = _backend.asarray(np.random.default_rng(seed).integers(0, params.num_classes, images.shape[0]), xp=np)
    table = oracle_table(params, images)
    post = rmm.posterior(params, images, labels)
    lab = host(labels)
    rows = np.arange(images.shape[0])
    sub = table[rows, lab]  # (N, M, Hg, Wg, 2)
    ln_py = _lse(sub.reshape(sub.shape[0], -1), axis=1)
    assert_identity_close(host(post.log_evidence), ln_py)
    resp = host(post.responsibilities)
    np.testing.assert_allclose(resp.sum(axis=(1, 2, 3, 4)), 1.0, atol=1e-12)
    mask = np.ones(resp.shape[:2], dtype=bool)
    mask[rows, lab] = False
    assert np.all(resp[mask] == 0)


@given(params=rmm_models(nonuniform=False), seed=seeds, log_tau=st.floats(-4, 10, allow_nan=False))
def test_tempered_scores_are_bounded_by_the_theorem(params, seed, log_tau):
    """0 <= tempered - max_sum <= ln(2 M |G|) / tau (SPEC §1, R2)."""
    images = _images(params, seed)
    tau = math.exp(log_tau)
    t = host(rmm.tempered_class_scores(params, images, tau))
    m = host(rmm.max_sum_scores(params, images))
    bound = math.log(2 * params.num_subtemplates * params.positions_per_model) / tau
    slack = 1e-12 * np.maximum(1, np.abs(m))
    assert np.all(t - m >= -slack)
    assert np.all(t - m <= bound + slack)


def test_float32_posterior_is_stable():
    """Large evidence (tiny sigma^2) in float32: no NaN, sums to one, close to the float64 answer."""
    p64 = make_model(11, multi=True, nonuniform=True, padded=True, window=False).replace(sigma2=1e-3)
    images = _images(p64.replace(sigma2=1e-3), 11)
    p32, i32 = p64.astype(np.float32), images.astype(np.float32)
    for fn in (rmm.class_posterior, rmm.log_likelihood):
        out = host(fn(p32, i32))
        assert out.dtype == np.float32 and np.all(np.isfinite(out))
    post32 = rmm.posterior(p32, i32)
    assert np.all(np.isfinite(host(post32.responsibilities)))
    np.testing.assert_allclose(host(post32.responsibilities).sum(axis=(1, 2, 3, 4)), 1.0, atol=1e-5)
    np.testing.assert_allclose(host(rmm.class_posterior(p32, i32)), host(rmm.class_posterior(p64, images)), atol=1e-3)
    ll32, ll64 = host(rmm.log_likelihood(p32, i32)), host(rmm.log_likelihood(p64, images))
    # ln p(I) is a difference of terms of size |kappa(I)|: float32 keeps it to ~1e-7 of that size
    scale = np.maximum(1.0, np.abs(host(rmm.pinned_constant(p64, images))))
    assert np.all(np.abs(ll32 - ll64) <= identity_tolerance("float32") * scale)


# ---------------------------------------------------------------------------------------------
# backends: the same numbers on NumPy, array_api_strict (and CuPy with a GPU)
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("window", [False, True])
def test_backends_agree(xp, window):
    ref = make_model(5, multi=True, nonuniform=True, padded=True, window=window)
    images = _images(ref, 5)
    params = make_model(5, multi=True, nonuniform=True, padded=True, window=window, xp=xp)
    imgs = _backend.asarray(host(images), xp=xp)
    for fn in (rmm.max_sum_scores, rmm.class_log_marginal, rmm.class_posterior):
        out = fn(params, imgs)
        assert _backend.get_namespace(out) is xp and out.dtype == imgs.dtype
        assert_identity_close(host(out), host(fn(ref, images)))
    out = rmm.dcn_scores(rmm.to_dcn(params), imgs)
    assert_identity_close(host(out), host(rmm.dcn_scores(rmm.to_dcn(ref), images)))
    cls, lat, score = rmm.map_estimate(params, imgs)
    cls0, lat0, score0 = rmm.map_estimate(ref, images)
    np.testing.assert_array_equal(host(cls), host(cls0))
    np.testing.assert_array_equal(host(lat.positions), host(lat0.positions))
    if not window:
        post, post0 = rmm.posterior(params, imgs), rmm.posterior(ref, images)
        assert_identity_close(host(post.responsibilities), host(post0.responsibilities))
    s_imgs, s_cls, s_lat = rmm.sample(params, 3, 9)
    r_imgs, r_cls, r_lat = rmm.sample(ref, 3, 9)
    assert _backend.get_namespace(s_imgs) is xp
    assert_identity_close(host(s_imgs), host(r_imgs))
    np.testing.assert_array_equal(host(s_cls), host(r_cls))

