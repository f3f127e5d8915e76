"""RMMParams validation and the inference functions' argument checks: every error names its argument."""

from __future__ import annotations

import numpy as np
import pytest

from drmm_ref import rmm

from ._helpers import host


def _ok(**changes):
    rng = np.random.default_rng(0)
    kw = dict(templates=rng.standard_normal((2, 1, 1, 3, 3)), class_prior=np.array([0.4, 0.6]), switch_prior=0.7,
              sigma2=0.5, image_shape=(6, 6))
    kw.update(changes)
    return rmm.RMMParams(**kw)


@pytest.mark.parametrize("changes, error, match", [
    (dict(templates=np.zeros((2, 1, 3, 3))), ValueError, "templates must have shape"),
    (dict(templates=np.zeros((2, 1, 1, 3, 2))), ValueError, "templates must have shape"),
    (dict(templates=np.full((2, 1, 1, 3, 3), np.nan)), ValueError, "templates contains NaN"),
    (dict(templates=np.zeros((2, 1, 1, 3, 3), dtype=np.int64)), TypeError, "templates must be a real floating"),
    (dict(class_prior=np.array([0.5, 0.6])), ValueError, "class_prior must sum to one"),
    (dict(class_prior=np.array([1.0, 0.0])), ValueError, "class_prior must be strictly positive"),
    (dict(class_prior=np.array([1.0])), ValueError, r"class_prior must have shape \(K,\)"),
    (dict(class_prior=np.array([np.inf, 0.5])), ValueError, "class_prior contains NaN or inf"),
    (dict(switch_prior=1.0), ValueError, "switch_prior"),
    (dict(switch_prior=0.0), ValueError, "switch_prior"),
    (dict(switch_prior=np.array([0.5, 0.5, 0.5])), ValueError, "switch_prior must be a scalar or have shape"),
    (dict(sigma2=0.0), ValueError, "sigma2 must be a finite number > 0"),
    (dict(sigma2=float("nan")), ValueError, "sigma2 must be a finite number > 0"),
    (dict(image_shape=(2, 2)), ValueError, "do not fit images"),
    (dict(image_shape=6), ValueError, "image_shape must be"),
    (dict(padding=3), ValueError, "padding must be <"),
    (dict(padding=-1), ValueError, "padding must be >= 0"),
    (dict(pool=3), ValueError, "pool 3 does not divide"),
    (dict(nuisance_prior=np.full((3, 3), 1 / 9)), ValueError, "nuisance_prior must have the grid's shape"),
    (dict(nuisance_prior=np.full((4, 4), 1 / 8)), ValueError, "nuisance_prior must sum to one"),
    (dict(nuisance_prior=-np.full((4, 4), 1 / 16)), ValueError, "nuisance_prior must be non-negative"),
    (dict(nuisance_prior=np.pad(np.full((2, 4), 1 / 8), ((0, 2), (0, 0))), pool=2), ValueError,
     "zero mass to a pooling window"),
    (dict(version=99), ValueError, "version 99"),
])
def test_bad_parameters_raise_clear_errors(changes, error, match):
    with pytest.raises(error, match=match):
        _ok(**changes)


def test_valid_parameters_and_derived_sizes():
    p = _ok(padding=1, pool=2, nuisance_prior=np.full((6, 6), 1 / 36))
    assert p.grid_shape == (6, 6) and p.windows_shape == (3, 3) and p.positions_per_model == 4
    assert p.num_pixels == 36 and p.num_classes == 2 and p.num_subtemplates == 1
    np.testing.assert_allclose(host(p.switch_prior), [0.7, 0.7])
    saved = p.to_host()
    assert saved["version"] == rmm.PARAMS_VERSION and isinstance(saved["templates"], np.ndarray)


@pytest.mark.parametrize("fn", [rmm.max_sum_scores, rmm.class_posterior, rmm.posterior, rmm.map_estimate,
                                rmm.log_likelihood, rmm.pinned_constant])
def test_inference_rejects_bad_images(fn):
    p = _ok()
    good = np.zeros((2, 1, 6, 6))
    with pytest.raises(ValueError, match="images contains NaN or inf"):
        fn(p, np.where(np.arange(36).reshape(6, 6) == 3, np.inf, good))
    with pytest.raises(ValueError, match=r"images must have shape \(N, C, H, W\)"):
        fn(p, np.zeros((2, 1, 5, 6)))
    with pytest.raises(ValueError, match=r"images must have shape \(N, C, H, W\)"):
        fn(p, np.zeros((1, 6, 6)))
    with pytest.raises(TypeError, match="images has dtype float32"):
        fn(p, good.astype(np.float32))
    with pytest.raises(TypeError, match="params must be an RMMParams"):
        fn("params", good)


def test_mixed_namespaces_raise():
    import array_api_strict as strict

    p = _ok()
    with pytest.raises(TypeError, match="images is a array_api_strict array"):
        rmm.max_sum_scores(p, strict.asarray(np.zeros((1, 1, 6, 6))))


def test_latent_and_label_checks():
    p = _ok()
    images, classes, lat = rmm.sample(p, 3, 0)
    with pytest.raises(ValueError, match="classes must lie in"):
        rmm.log_joint(p, images, classes + 5, lat)
    with pytest.raises(ValueError, match="latents.positions must lie on the grid"):
        rmm.log_joint(p, images, classes, rmm.Latents(lat.subtemplates, lat.positions + 10, lat.switches))
    with pytest.raises(ValueError, match="latents.switches must lie in"):
        rmm.log_joint(p, images, classes, rmm.Latents(lat.subtemplates, lat.positions, lat.switches + 2))
    with pytest.raises(TypeError, match="classes must be an integer array"):
        rmm.posterior(p, images, host(classes).astype(float))
    with pytest.raises(ValueError, match="inverse_temperature"):
        rmm.tempered_class_scores(p, images, 0.0)
