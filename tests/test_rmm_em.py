"""EM for the RMM (SPEC §1, R3): monotone steps, exact M-step maximiser, guards, clear errors."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from drmm_ref import rmm
from drmm_ref.rmm.em import ConvergenceWarning, EmptyComponentWarning, VarianceFloorWarning

from ._helpers import host
from .test_rmm_inference import make_model, oracle_table, rmm_models

seeds = st.integers(0, 2 ** 32 - 1)  # bulk data (samples, starting templates) from default_rng(seed)


def _data_and_start(truth, seed, n=12):
    """Data from the drawn model, and EM started from another (so steps have work to do)."""
    images, classes, _ = rmm.sample(truth, n, seed)
    rng = np.random.default_rng(seed)
    start = truth.replace(templates=rng.standard_normal(truth.templates.shape),
                          class_prior=np.full(truth.num_classes, 1 / truth.num_classes),
                          switch_prior=0.5, sigma2=truth.sigma2 * float(rng.uniform(0.5, 2)))
    return truth, images, classes, start


@pytest.mark.filterwarnings("ignore::drmm_ref.rmm.em.EmptyComponentWarning")
@given(data=st.data(), seed=seeds, supervised=st.booleans(), learn=st.booleans())
def test_soft_em_step_never_lowers_the_objective(data, seed, supervised, learn):
    model = data.draw(rmm_models(nonuniform=learn, window=False), label="truth")
    truth, images, classes, params = _data_and_start(model, seed)
    labels = classes if supervised else None
    obj = [rmm.e_step(params, images, labels).objective]
    for _ in range(3):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", VarianceFloorWarning)
            params, _ = rmm.m_step(params, images, rmm.e_step(params, images, labels), learn_nuisance=learn)
        obj.append(rmm.e_step(params, images, labels).objective)
    steps = np.diff(obj)
    assert np.all(steps >= -1e-10 * np.abs(np.asarray(obj[1:]))), obj


@pytest.mark.filterwarnings("ignore::drmm_ref.rmm.em.EmptyComponentWarning")
@given(model=rmm_models(nonuniform=False, window=False), seed=seeds, supervised=st.booleans())
def test_hard_em_half_steps_never_lower_the_complete_data_objective(model, seed, supervised):
    truth, images, classes, params = _data_and_start(model, seed)
    labels = classes if supervised else None
    values = []
    for _ in range(3):
        est = rmm.hard_e_step(params, images, labels)
        values.append(est.objective)
        # the E-step's objective is the log joint at its latents (max-sum == rendering)
        again = rmm.objective(params, images, classes=est.classes, latents=est.latents)
        assert abs(again - est.objective) <= 1e-10 * abs(again)
        params, _ = rmm.m_step(params, images, est)
        values.append(rmm.objective(params, images, classes=est.classes, latents=est.latents))
    steps = np.diff(values)
    assert np.all(steps >= -1e-10 * np.abs(np.asarray(values[1:]))), values


def _expected_complete_loglik(params, images, est):
    """Q(params) = sum r ln p(I, c, m, g, a; params) with the oracle's table."""
    table = oracle_table(params, images)
    r1 = host(est.responsibilities_on)
    r0 = host(est.responsibilities) - r1
    with np.errstate(invalid="ignore"):
        terms = np.where(r0 > 0, r0 * table[..., 0], 0) + np.where(r1 > 0, r1 * table[..., 1], 0)
    return float(terms.sum())


@pytest.mark.filterwarnings("ignore::drmm_ref.rmm.em.EmptyComponentWarning")
@given(model=rmm_models(nonuniform=False, window=False), seed=seeds, eps=st.floats(1e-4, 1e-2))
def test_m_step_maximises_the_expected_complete_log_likelihood(model, seed, eps):
    """Q(M-step) >= Q(old) and >= Q(M-step perturbed): templates, sigma^2, pi_c, pi_on."""
    truth, images, classes, params = _data_and_start(model, seed)
    est = rmm.e_step(params, images)
    new, _ = rmm.m_step(params, images, est)
    q_new = _expected_complete_loglik(new, images, est)
    assert q_new >= _expected_complete_loglik(params, images, est) - 1e-10 * abs(q_new)
    rng = np.random.default_rng(seed)
    pc = host(new.class_prior)
    d = rng.normal(size=pc.size)
    d -= d.mean()
    pon = float(host(new.switch_prior)[0])
    for cand in (new.replace(templates=host(new.templates) + eps * rng.standard_normal(new.templates.shape)),
                 new.replace(sigma2=new.sigma2 * (1 + eps)), new.replace(sigma2=new.sigma2 * (1 - eps)),
                 new.replace(class_prior=pc * np.exp(eps * d) / np.sum(pc * np.exp(eps * d))),
                 new.replace(switch_prior=min(max(pon + eps * (0.5 - pon), 1e-6), 1 - 1e-6))):
        assert _expected_complete_loglik(cand, images, est) <= q_new + 1e-10 * abs(q_new)


def test_empty_component_keeps_its_template_or_is_reseeded():
    truth = make_model(1, multi=False, nonuniform=False, padded=False, window=False)
    images, classes, _ = rmm.sample(truth, 20, 1)
    K = truth.num_classes
    far = host(truth.templates).copy()
    far[K - 1] = 1e3  # a template no image is near: the hard E-step never picks it
    params = truth.replace(templates=far)
    est = rmm.hard_e_step(params, images)
    # (the class may still explain an image with its switch off; its template gets no mass)
    assert not np.any((host(est.classes) == K - 1) & (host(est.latents.switches) == 1))
    with pytest.warns(EmptyComponentWarning, match="kept unchanged"):
        new, info = rmm.m_step(params, images, est)
    assert (K - 1, 0) in info.empty_components
    np.testing.assert_array_equal(host(new.templates)[K - 1], far[K - 1])
    assert np.all(np.isfinite(host(new.class_prior))) and host(new.class_prior)[K - 1] >= 1e-6 * (1 - 1e-9)
    with pytest.warns(EmptyComponentWarning, match="re-seeded"):
        reseeded, info = rmm.m_step(params, images, est, reseed_empty=True)
    assert info.reseeded == ((K - 1, 0),)
    assert np.max(np.abs(host(reseeded.templates)[K - 1])) < 1e2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EmptyComponentWarning)
        _, trace = rmm.fit(images, init=params, method="hard", reseed_empty=True, max_iter=5, warn=False)
    assert trace.reseeded and trace.most_negative_relative_step(exclude_reseeded=True) >= -1e-10


@pytest.mark.filterwarnings("ignore::drmm_ref.rmm.em.EmptyComponentWarning")
def test_constant_images_hit_the_variance_floor_with_a_warning():
    """Constant images that a full-size template fits exactly: sigma^2 collapses to its floor."""
    images = np.full((10, 1, 6, 6), 0.7)
    with pytest.warns(VarianceFloorWarning):
        params, trace = rmm.fit(images, 2, kernel=6, method="soft", max_iter=5, seed=0, warn=False)
    for a in (params.templates, params.class_prior, params.switch_prior):
        assert np.all(np.isfinite(host(a)))
    assert np.isfinite(params.sigma2) and params.sigma2 > 0
    assert all(np.isfinite(trace.objective))


@pytest.mark.filterwarnings("ignore::drmm_ref.rmm.em.EmptyComponentWarning")
@pytest.mark.parametrize("method", ["soft", "hard"])
def test_all_zero_images_give_finite_parameters(method):
    with pytest.warns(VarianceFloorWarning):
        params, trace = rmm.fit(np.zeros((6, 1, 5, 5)), 2, kernel=3, method=method, max_iter=4, seed=0, warn=False)
    assert np.all(np.isfinite(host(params.templates))) and params.sigma2 > 0
    assert np.all(np.isfinite(trace.objective))


@pytest.mark.filterwarnings("ignore::drmm_ref.rmm.em.EmptyComponentWarning")
def test_fit_recovers_planted_templates_and_warns_when_not_converged():
    rng = np.random.default_rng(4)
    t = rng.standard_normal((2, 1, 1, 3, 3))
    truth = rmm.RMMParams(templates=t, class_prior=np.array([0.5, 0.5]), switch_prior=0.9, sigma2=0.01,
                          image_shape=(7, 7))
    images, classes, _ = rmm.sample(truth, 100, 5)
    params, trace = rmm.fit(images, 2, kernel=3, labels=classes, restarts=2, seed=1)
    assert trace.converged and len(trace.restart_objectives) == 2
    err = np.linalg.norm(host(params.templates) - t) / np.linalg.norm(t)
    assert err < 0.05
    with pytest.warns(ConvergenceWarning):
        rmm.fit(images, 2, kernel=3, max_iter=1, seed=1)


def test_em_errors_name_the_argument():
    truth = make_model(2, multi=False, nonuniform=False, padded=False, window=False)
    images, classes, _ = rmm.sample(truth, 5, 2)
    bad = host(images).copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="images contains NaN"):
        rmm.e_step(truth, bad)
    with pytest.raises(ValueError, match="images contains NaN"):
        rmm.fit(bad, 2, kernel=2)
    with pytest.raises(ValueError, match="labels must lie in"):
        rmm.e_step(truth, images, host(classes) + truth.num_classes)
    with pytest.raises(ValueError, match="labels must have shape"):
        rmm.e_step(truth, images, host(classes)[:3])
    with pytest.raises(ValueError, match=r"images must have shape \(N, C, H, W\)"):
        rmm.e_step(truth, host(images)[:, :, :-1])
    with pytest.raises(ValueError, match="method must be"):
        rmm.fit(images, 2, kernel=2, method="stochastic")
    window = make_model(2, multi=False, nonuniform=False, padded=False, window=True)
    with pytest.raises(ValueError, match="global nuisance form"):
        rmm.e_step(window, rmm.sample(window, 2, 0)[0])
