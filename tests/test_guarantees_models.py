"""Bad input at the model boundary is a clear error, never a silent result (docs/guarantees.md).

Empty batches, float class indices, float16, NaN/inf parameters and results that overflow the
working dtype. Each case of a hostile-user review that passed silently is a named regression.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, strategies as st

from drmm_ref import drmm, io, primitives as P, rmm
from drmm_ref.drmm import Latents, init_params, preset
from drmm_ref.drmm._common import check_count, check_finite_output
from drmm_ref.drmm.params import NonFiniteParameters

from ._helpers import host

TINY = preset("tiny")


def _images(n, dtype="float64", scale=1.0, seed=0):
    return (np.random.default_rng(seed).standard_normal((n,) + TINY.image_shape) * scale).astype(dtype)


def _empty_latents(params):
    fw = drmm.bottom_up(params, _images(2))
    return Latents(tuple(t[:0] for t in fw.latents.positions), tuple(a[:0] for a in fw.latents.switches))


# ----------------------------------------------------------------------------------- parameters
@pytest.mark.parametrize("field", ["filters", "biases", "class_templates", "class_biases"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_params_refuse_nan_and_inf_naming_the_field_regression(field, bad):
    """Regression: NaN/inf filters, biases and templates were accepted and bottom_up returned NaN."""
    p = init_params(TINY, 0)
    if field in ("filters", "biases"):
        arrays = [np.array(a) for a in getattr(p, field)]
        arrays[-1].flat[0] = bad
        value = tuple(arrays)
    else:
        value = np.array(getattr(p, field))
        value.flat[0] = bad
    with pytest.raises(NonFiniteParameters, match=f"{field}.*NaN or inf") as info:
        p.replace(**{field: value})
    assert info.value.field.startswith(field)
    assert isinstance(info.value, ValueError)


def test_params_from_a_forged_file_with_nan_are_refused(tmp_path):
    """A file whose checksum matches but whose arrays hold NaN (written by another tool) does not load."""
    import json

    from drmm_ref._files import array_checksum

    path = tmp_path / "p.npz"
    io.save_params(path, init_params(TINY, 0))
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: np.array(z[k]) for k in z.files}
    meta = json.loads(str(arrays.pop("__meta__")))
    arrays["filters_1"].flat[0] = np.nan
    meta["checksum"] = array_checksum(arrays)
    with open(path, "wb") as fh:
        np.savez(fh, __meta__=np.asarray(json.dumps(meta)), **arrays)
    with pytest.raises(io.DRMMFileError, match="NaN or inf"):
        io.load_params(path)


def test_init_params_takes_a_preset_name_and_refuses_bad_settings_regression():
    """Regression: init_params("tiny") raised AttributeError."""
    a, b = init_params("tiny", 3), init_params(TINY, 3)
    np.testing.assert_array_equal(host(a.class_templates), host(b.class_templates))
    with pytest.raises(ValueError, match="unknown preset"):
        init_params("tiny2", 0)
    with pytest.raises(TypeError, match="net must be"):
        init_params(3, 0)
    with pytest.raises(ValueError, match="weight_gain"):
        init_params(TINY, 0, weight_gain=float("inf"))
    with pytest.raises(ValueError, match="float32 or float64"):
        init_params(TINY, 0, dtype="float16")


def test_save_params_onto_a_folder_is_a_clear_error_regression(tmp_path):
    """Regression: IsADirectoryError from the atomic rename."""
    with pytest.raises(ValueError, match="is a folder"):
        io.save_params(tmp_path, init_params(TINY, 0))
    with pytest.raises(io.DRMMFileError, match="is a folder"):
        io.load_params(tmp_path)
    assert list(tmp_path.iterdir()) == []  # nothing temporary left


# ----------------------------------------------------------------------------------- float16
def test_float16_is_refused_everywhere_regression():
    """Regression: float16 passed init_params, conv2d, maxpool2d and RMMParams although the messages
    said float32/float64."""
    x = np.zeros((1, 1, 4, 4), np.float16)
    for call in (lambda: P.conv2d(x, np.zeros((1, 1, 2, 2), np.float16), 0),
                 lambda: P.conv2d_transpose(x, np.zeros((1, 1, 2, 2), np.float16), 0),
                 lambda: P.maxpool2d(x, 2), lambda: P.relu(x), lambda: P.logsumexp(x, axis=1)):
        with pytest.raises(TypeError, match=r"float32 or float64\), got dtype float16"):
            call()
    t = np.ones((2, 1, 1, 3, 3), np.float16)
    with pytest.raises(TypeError, match="templates must be a real floating array .*float16"):
        rmm.RMMParams(t, np.array([0.5, 0.5], np.float16), 0.5, 0.1, (6, 6))
    p = init_params(TINY, 0)
    with pytest.raises((TypeError, ValueError), match="float32 or float64"):
        p.to("numpy", dtype="float16")
    with pytest.raises(TypeError, match="float32 or float64"):
        p.replace(**{f: np.asarray(getattr(p, f), np.float16) for f in ("class_templates", "class_biases",
                                                                          "class_prior", "switch_prior")},
                  filters=tuple(np.asarray(w, np.float16) for w in p.filters),
                  biases=tuple(np.asarray(b, np.float16) for b in p.biases))


# ----------------------------------------------------------------------------------- empty batches
def test_empty_batch_is_an_error_naming_the_argument_at_the_model_boundary():
    """The rule: the public model functions refuse N = 0 ('images must hold at least one image')."""
    p = init_params(TINY, 0)
    empty = _images(0)
    with pytest.raises(ValueError, match="images must hold at least one image"):
        drmm.bottom_up(p, empty)
    with pytest.raises(ValueError, match="images must hold at least one image"):
        drmm.log_joint(p, empty, np.zeros(0, np.int64), _empty_latents(p))
    for classes in (0, np.zeros(0, np.int64), []):
        with pytest.raises(ValueError, match="classes is empty"):
            drmm.render(p, classes, _empty_latents(p))
    with pytest.raises(ValueError, match="classes is empty"):
        drmm.top_down(p, _empty_latents(p), np.zeros(0, np.int64))


def test_empty_batch_in_the_rmm_is_an_error():
    rp = rmm.RMMParams(np.ones((2, 1, 1, 3, 3)), np.array([0.5, 0.5]), 0.5, 0.1, (6, 6))
    e = np.zeros(0, np.int64)
    with pytest.raises(ValueError, match="classes is empty"):
        rmm.render(rp, e, rmm.Latents(e, np.zeros((0, 2), np.int64), e))
    with pytest.raises(ValueError, match="images must hold at least one image"):
        rmm.dcn_scores(rmm.to_dcn(rp), np.zeros((0, 1, 6, 6)))
    for fn in (rmm.class_posterior, rmm.max_sum_scores, rmm.posterior):
        with pytest.raises(ValueError, match="at least one image"):
            fn(rp, np.zeros((0, 1, 6, 6)))


def test_logsumexp_over_an_empty_axis_is_minus_infinity(xp):
    """The sum of no terms is 0 and log 0 = -inf (as scipy.special.logsumexp); NumPy's max raised."""
    x = xp.zeros((3, 0), dtype=xp.float64)
    out = P.logsumexp(x, axis=1)
    assert tuple(out.shape) == (3,) and bool(xp.all(out == -float("inf")))
    assert tuple(P.logsumexp(x, axis=1, keepdims=True).shape) == (3, 1)
    assert tuple(P.softmax(x, axis=1).shape) == (3, 0)
    assert tuple(P.logsumexp(xp.zeros((0, 3), dtype=xp.float64), axis=1).shape) == (0,)


# ----------------------------------------------------------------------------------- truncation
@pytest.mark.parametrize("classes", [[0.5, 1.2, 0, 1], [0.0, 1.0, 0.0, 1.0], [True, False, True, False]])
def test_float_class_indices_are_refused_not_truncated_regression(classes):
    """Regression: render(p, [0.5, 1.2, 0, 1]) rendered classes [0, 1, 0, 1]."""
    p = init_params(TINY, 0)
    lat = drmm.bottom_up(p, _images(4)).latents
    with pytest.raises(TypeError, match="classes must hold integer class indices"):
        drmm.render(p, classes, lat)
    drmm.render(p, [0, 1, 0, 1], lat)  # integers pass


@pytest.mark.parametrize("n", [2.7, "3", True, 0, -1, None])
def test_counts_must_be_integers(n):
    with pytest.raises((TypeError, ValueError), match=r"\bn\b"):
        check_count(n, "n")
    assert check_count(np.int64(3), "n") == 3


@pytest.mark.parametrize("n", [2.7, "3"])
def test_sample_refuses_non_integer_counts_regression(n):
    """Regression: sample(p, 2.7) gave 2 images and sample(p, "3") gave 3."""
    with pytest.raises((TypeError, ValueError), match=r"\bn\b"):
        drmm.sample(init_params(TINY, 0), n)


# ----------------------------------------------------------------------------------- overflow
def _rmm_params(dtype):
    t = np.abs(np.random.default_rng(0).standard_normal((2, 1, 1, 3, 3))).astype(dtype)
    return rmm.RMMParams(t, np.array([0.5, 0.5], dtype), 0.5, 0.1, (6, 6))


@pytest.mark.parametrize("fn", ["class_posterior", "class_log_marginal", "log_likelihood", "max_sum_scores",
                                "posterior", "map_estimate", "dcn_scores", "log_joint"])
def test_rmm_results_that_overflow_float32_raise_regression(fn):
    """Regression: float32 images at 1e30 gave inf from log_joint and NaN from class_posterior."""
    rp = _rmm_params("float32")
    x = _images(3, "float32", scale=1e30)
    if fn == "dcn_scores":
        call = lambda: rmm.dcn_scores(rmm.to_dcn(rp), x * np.float32(1e8))  # noqa: E731
    elif fn == "log_joint":
        c, lat, _ = rmm.map_estimate(rp, _images(3, "float32"))
        call = lambda: rmm.log_joint(rp, x, c, lat)  # noqa: E731
    else:
        call = lambda: getattr(rmm, fn)(rp, x)  # noqa: E731
    with np.errstate(all="ignore"), pytest.raises(ValueError, match="overflowed float32"):
        call()
    same = _rmm_params("float64")  # the same images in float64 are fine
    if fn not in ("dcn_scores", "log_joint"):
        out = getattr(rmm, fn)(same, x.astype("float64"))
        first = out[0] if isinstance(out, tuple) else getattr(out, "log_evidence", out)
        assert np.all(np.isfinite(host(first)))


@given(st.floats(1.0, 1e6), st.integers(0, 2**16))
def test_rmm_results_are_finite_or_an_error(scale, seed):
    """Whatever the scale of finite float32 images, class_posterior returns finite probabilities or raises."""
    rp = _rmm_params("float32")
    x = _images(2, "float32", scale=scale, seed=seed)
    try:
        with np.errstate(all="ignore"):
            q = host(rmm.class_posterior(rp, x))
    except ValueError as exc:
        assert "overflowed" in str(exc)
    else:
        assert np.all(np.isfinite(q)) and np.allclose(q.sum(axis=1), 1, atol=1e-3)  # float32 softmax rounding


def test_check_finite_output_names_what_overflowed():
    with pytest.raises(ValueError, match="scores overflowed float32"):
        check_finite_output(np.array([1.0, np.inf], np.float32), "scores")
    ok = np.array([1.0, 2.0])
    assert check_finite_output(ok, "scores") is ok
    assert check_finite_output(np.zeros((0, 3)), "scores").shape == (0, 3)


def test_drmm_results_that_overflow_float32_raise_regression():
    """Regression: finite float32 images at 3e38 gave NaN scores; at 1e30 log_joint gave inf."""
    p = init_params(TINY, 0, dtype="float32")
    # Finite images whose first-layer pre-activations exceed float32: non-negative filters summing
    # nine pixels of 3e38 (whether a given random image overflows depends on the summation order).
    hot = p.replace(filters=(np.abs(p.filters[0]) + np.float32(0.5),) + tuple(p.filters[1:]))
    with np.errstate(all="ignore"), pytest.raises(ValueError, match="overflow"):
        drmm.bottom_up(hot, np.full((2,) + TINY.image_shape, 3e38, dtype=np.float32))
    x = _images(4, "float32", scale=1e30)
    fw = drmm.bottom_up(p, x)
    with np.errstate(all="ignore"), pytest.raises(ValueError, match="overflow"):
        drmm.log_joint(p, x, fw.classes, fw.latents)


def test_softmax_sums_to_one_for_huge_scores_regression(xp):
    """Regression (found by the property test above): float32 scores [1e12, 1e12 + 1] gave softmax [1, 1],
    since exp(x - logsumexp(x)) with logsumexp rounding to max(x)."""
    x = xp.asarray([[1e12, 1e12 + 1.0], [3e38, -3e38]], dtype=xp.float32)
    q = host(P.softmax(x, axis=1))
    np.testing.assert_allclose(q.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(q[1], [1.0, 0.0])
