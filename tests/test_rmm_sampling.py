"""Sampling from the RMM (SPEC §1): frequencies match the priors; rendering and noise are right.

Statistical tests use a fixed seed and chi-square goodness of fit at ``ALPHA = 1e-3`` each: were the
seed drawn at random, each assertion would fail with probability 1e-3 on a correct sampler (about
0.5% for the whole file, 5 tests); with the fixed seed the outcome is deterministic.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from drmm_ref import rmm

from ._helpers import assert_identity_close, host

ALPHA = 1e-3
N = 20000


def _model(window: bool):
    rng = np.random.default_rng(123)
    K, M, k = 4, 3, 3
    hg = 6
    prior = rng.dirichlet(np.ones(hg * hg)).reshape(hg, hg)
    return rmm.RMMParams(templates=rng.standard_normal((K, M, 1, k, k)), class_prior=np.array([0.1, 0.2, 0.3, 0.4]),
                         switch_prior=np.array([0.2, 0.5, 0.7, 0.9]), sigma2=0.3, image_shape=(hg + k - 1, hg + k - 1),
                         nuisance_prior=prior, pool=3 if window else None)


@pytest.fixture(scope="module", params=[False, True], ids=["global", "window"])
def drawn(request):
    params = _model(request.param)
    return params, rmm.sample(params, N, 2024)


def _chi2_pvalue(counts, probs):
    return stats.chisquare(counts, np.asarray(probs) * counts.sum()).pvalue


def test_class_frequencies(drawn):
    params, (_, classes, _) = drawn
    counts = np.bincount(host(classes), minlength=params.num_classes)
    assert _chi2_pvalue(counts, host(params.class_prior)) > ALPHA


def test_subtemplate_frequencies_are_uniform(drawn):
    params, (_, _, lat) = drawn
    counts = np.bincount(host(lat.subtemplates), minlength=params.num_subtemplates)
    assert _chi2_pvalue(counts, np.full(params.num_subtemplates, 1 / params.num_subtemplates)) > ALPHA


def test_switch_frequencies_per_class(drawn):
    """One chi-square over the K x 2 table of (class, switch) against pi_c * pi(a | c)."""
    params, (_, classes, lat) = drawn
    c, a = host(classes), host(lat.switches)
    counts = np.bincount(2 * c + a, minlength=2 * params.num_classes)
    pc, pon = host(params.class_prior), host(params.switch_prior)
    probs = np.stack([pc * (1 - pon), pc * pon], axis=1).reshape(-1)
    assert _chi2_pvalue(counts, probs) > ALPHA


def test_position_frequencies(drawn):
    params, (_, _, lat) = drawn
    hg, wg = params.grid_shape
    cells = host(lat.positions[:, 0]) * wg + host(lat.positions[:, 1])
    prior = host(params.nuisance_prior)
    if params.pool is not None:  # uniform window, then pi_{g | r}
        p = params.pool
        b = prior.reshape(hg // p, p, wg // p, p)
        prior = (b / b.sum(axis=(1, 3), keepdims=True) / ((hg // p) * (wg // p))).reshape(hg, wg)
    counts = np.bincount(cells, minlength=hg * wg)
    assert _chi2_pvalue(counts, prior.reshape(-1)) > ALPHA


def test_images_are_rendering_plus_noise(drawn):
    """The residual I - a T_g mu is N(0, sigma^2): its variance within a 1e-3 chi-square interval."""
    params, (images, classes, lat) = drawn
    resid = host(images - rmm.render(params, classes, lat))
    dof = resid.size
    lo, hi = stats.chi2.ppf([ALPHA / 2, 1 - ALPHA / 2], dof) / dof * params.sigma2
    assert lo < np.mean(resid ** 2) < hi
    assert abs(np.mean(resid)) < 5 * np.sqrt(params.sigma2 / dof)


def test_render_places_the_template():
    """T_g clips the stamp at padded positions: compare with explicit placement."""
    rng = np.random.default_rng(0)
    t = rng.standard_normal((2, 1, 2, 3, 3))
    params = rmm.RMMParams(templates=t, class_prior=np.array([0.5, 0.5]), switch_prior=0.5, sigma2=1.0,
                           image_shape=(4, 5), padding=2)
    hg, wg = params.grid_shape
    rows, cols = np.meshgrid(np.arange(hg), np.arange(wg), indexing="ij")
    b = rows.size
    lat = rmm.Latents(np.zeros(b, dtype=np.int64), np.stack([rows.ravel(), cols.ravel()], 1).astype(np.int64),
                      np.ones(b, dtype=np.int64))
    classes = np.arange(b, dtype=np.int64) % 2
    out = host(rmm.render(params, classes, lat))
    for i in range(b):
        canvas = np.zeros((2, 4 + 4, 5 + 4))
        canvas[:, rows.ravel()[i]:rows.ravel()[i] + 3, cols.ravel()[i]:cols.ravel()[i] + 3] = t[classes[i], 0]
        assert_identity_close(out[i], canvas[:, 2:6, 2:7])


def test_sample_is_reproducible_and_checks_n():
    params = _model(False)
    a = rmm.sample(params, 5, 7)
    b = rmm.sample(params, 5, 7)
    np.testing.assert_array_equal(host(a[0]), host(b[0]))
    with pytest.raises(ValueError, match="n must be a positive integer"):
        rmm.sample(params, 0, 1)
