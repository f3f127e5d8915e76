"""Bottom-up / top-down passes: an independent loop/einsum oracle, backends, latents semantics, bad input."""

from __future__ import annotations

import numpy as np
import pytest

import drmm_ref
from drmm_ref import drmm as D
from drmm_ref._backend import asarray

from ._helpers import assert_identity_close, assert_same_array_kind, host


# --- independent oracle (loops over kernel offsets and windows; no im2col, no primitives) -----------
def _conv_oracle(x, w, q):
    n, c, h, wd = x.shape
    o, _, k, _ = w.shape
    xp_ = np.pad(x, ((0, 0), (0, 0), (q, q), (q, q)))
    ho, wo = h + 2 * q - k + 1, wd + 2 * q - k + 1
    out = np.zeros((n, o, ho, wo))
    for i in range(k):
        for j in range(k):
            out += np.einsum("nchw,oc->nohw", xp_[:, :, i:i + ho, j:j + wo], w[:, :, i, j])
    return out


def _pool_oracle(r, p):
    n, c, h, w = r.shape
    vals = np.zeros((n, c, h // p, w // p))
    pos = np.zeros((n, c, h // p, w // p), dtype=np.int64)
    for a in range(h // p):
        for b in range(w // p):
            win = r[:, :, a * p:(a + 1) * p, b * p:(b + 1) * p].reshape(n, c, p * p)
            pos[:, :, a, b] = np.argmax(win, axis=-1)  # first maximum
            vals[:, :, a, b] = np.max(win, axis=-1)
    return vals, pos


def _bottom_up_oracle(params, images):
    h = images
    feats, pre, ts, as_ = [h], [], [], []
    for l, ly in enumerate(params.net.layers):
        u = _conv_oracle(h, params.filters[l], ly.padding) + params.biases[l][None, :, None, None]
        h, t = _pool_oracle(np.maximum(u, 0.0), ly.pool)
        n, c, hh, ww = t.shape
        at_t = np.take_along_axis(
            u.reshape(n, c, hh, ly.pool, ww, ly.pool).transpose(0, 1, 2, 4, 3, 5).reshape(n, c, hh, ww, -1),
            t[..., None], axis=-1)[..., 0]
        feats.append(h), pre.append(u), ts.append(t), as_.append(at_t > 0)
    mu = np.broadcast_to(params.class_templates, (params.net.n_classes,) + params.net.shapes[-1])
    scores = np.einsum("nchw,kchw->nk", h, mu) + params.class_biases
    return feats, pre, ts, as_, scores


@pytest.mark.parametrize("name", ["conv-small", "conv-small-ladder"])
def test_bottom_up_matches_oracle(name):
    params = D.init_params(D.preset(name), 3, bias_scale=0.1, class_bias_scale=0.2)
    images = np.random.default_rng(4).standard_normal((2, 1, 28, 28))
    images[1, :, :10, :] = 0.0  # exact zeros: windows where every u <= 0 or ties
    fw = D.bottom_up(params, images)
    feats, pre, ts, as_, scores = _bottom_up_oracle(params, images)
    for l in range(params.net.L):
        assert_identity_close(fw.preactivations[l], pre[l], err_msg=f"u^({l + 1})")
        assert_identity_close(fw.features[l + 1], feats[l + 1], err_msg=f"h^({l + 1})")
        np.testing.assert_array_equal(fw.latents.positions[l], ts[l], err_msg=f"t^({l + 1})")
        np.testing.assert_array_equal(fw.latents.switches[l], as_[l], err_msg=f"a^({l + 1})")
    assert_identity_close(fw.scores, scores)
    np.testing.assert_array_equal(fw.classes, np.argmax(scores, axis=1))


def test_positions_zero_and_switch_off_where_all_negative():
    net = D.preset("tiny")
    params = D.init_params(net, 0).replace(biases=(np.array([-100.0]), np.zeros(2)))
    fw = D.bottom_up(params, np.random.default_rng(0).standard_normal((3, 1, 6, 6)))
    assert not np.any(fw.latents.switches[0]) and not np.any(fw.latents.positions[0])
    assert np.all(host(fw.features[1]) == 0.0)


def test_backends_agree_with_numpy(xp):
    net = D.preset("tiny")
    ref = D.init_params(net, 5, bias_scale=0.3, class_bias_scale=0.3)
    params = ref.to(xp)
    s_ref = D.sample(ref, 7, seed=11)
    s = D.sample(params, 7, seed=11)
    assert_same_array_kind(s.images, params.class_templates, xp)
    assert_identity_close(s.images, s_ref.images)
    fw, fw_ref = D.bottom_up(params, s.images), D.bottom_up(ref, s_ref.images)
    assert_identity_close(fw.scores, fw_ref.scores)
    for t, t_ref in zip(fw.latents.positions, fw_ref.latents.positions):
        np.testing.assert_array_equal(host(t), t_ref)
    td, td_ref = D.top_down(params, fw), D.top_down(ref, fw_ref)
    assert_same_array_kind(td.reconstruction, params.class_templates, xp)
    assert_identity_close(td.reconstruction, td_ref.reconstruction)
    assert_identity_close(D.log_joint(params, s.images, s.classes, s.latents),
                          D.log_joint(ref, s_ref.images, s_ref.classes, s_ref.latents))


def test_params_to_other_dtype():
    params = D.init_params(D.preset("tiny"), 0)
    for dtype in ("float32", np.float32, np.dtype("float32")):
        assert params.to(np, dtype=dtype).dtype == np.float32


def test_float32_runs_in_float32():
    params = D.init_params(D.preset("small2"), 0, dtype="float32")
    x = np.zeros((2, 1, 28, 28), dtype=np.float32)
    fw = D.bottom_up(params, x)
    assert fw.scores.dtype == np.float32 and D.top_down(params, fw).image.dtype == np.float32


def test_top_level_exports():
    for name in ("render", "sample", "bottom_up", "top_down", "log_joint", "DRMMParams", "Network", "preset"):
        assert hasattr(drmm_ref, name)


# --- bad input ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny():
    return D.init_params(D.preset("tiny"), 0)


def test_wrong_image_shape(tiny):
    with pytest.raises(ValueError, match=r"shape \(N, 1, 6, 6\)"):
        D.bottom_up(tiny, np.zeros((2, 1, 7, 7)))
    with pytest.raises(ValueError, match="shape"):
        D.bottom_up(tiny, np.zeros((1, 6, 6)))


def test_nan_images(tiny):
    x = np.zeros((2, 1, 6, 6))
    x[1, 0, 2, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        D.bottom_up(tiny, x)
    with pytest.raises(ValueError, match="NaN"):
        D.log_joint(tiny, x, 0, D.bottom_up(tiny, np.zeros((2, 1, 6, 6))).latents)


def test_dtype_and_namespace_mismatch(tiny):
    with pytest.raises(TypeError, match="dtype"):
        D.bottom_up(tiny, np.zeros((1, 1, 6, 6), dtype=np.float32))
    with pytest.raises(TypeError, match="integer|floating"):
        D.bottom_up(tiny, np.zeros((1, 1, 6, 6), dtype=np.int64))
    strict = pytest.importorskip("array_api_strict")
    with pytest.raises(TypeError, match="array_api_strict|numpy"):
        D.bottom_up(tiny, asarray(np.zeros((1, 1, 6, 6)), xp=strict))


def test_classes_out_of_range(tiny):
    lat = D.sample(tiny, 3, 0).latents
    with pytest.raises(ValueError, match="out of range"):
        D.render(tiny, np.array([0, 2, 1]), lat)
    with pytest.raises(ValueError, match="out of range"):
        D.render(tiny, -1, lat)
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        D.render(tiny, np.array([0, 1]), lat)
    with pytest.raises(TypeError, match="integer"):
        D.render(tiny, np.array([0.0, 1.0, 1.0]), lat)


def test_latents_wrong_shape(tiny):
    lat = D.sample(tiny, 3, 0).latents
    bad = D.Latents((lat.positions[0], lat.positions[1][:, :1]), (lat.switches[0], lat.switches[1][:, :1]))
    with pytest.raises(ValueError, match=r"layer 2"):
        D.render(tiny, 0, bad)
    with pytest.raises(ValueError, match="layers"):
        D.render(tiny, 0, D.Latents(lat.positions[:1], lat.switches[:1]))
    with pytest.raises(ValueError, match=r"\[0, 3\]"):
        D.render(tiny, 0, D.Latents((lat.positions[0] + 4, lat.positions[1]), lat.switches))
    with pytest.raises(TypeError, match="bool"):
        D.render(tiny, 0, D.Latents(lat.positions, (lat.switches[0].astype(np.int64), lat.switches[1])))
    with pytest.raises(ValueError, match=r"\(2, 1, 2, 2\)"):
        D.log_joint(tiny, np.zeros((2, 1, 6, 6)), 0, lat)


def test_params_shape_errors_name_field(tiny):
    with pytest.raises(ValueError, match=r"filters\[1\] \(layer 2\)"):
        tiny.replace(filters=(tiny.filters[0], np.zeros((2, 1, 3, 3))))
    with pytest.raises(ValueError, match="class_prior"):
        tiny.replace(class_prior=np.array([0.2, 0.2]))
    with pytest.raises(ValueError, match="switch_prior"):
        tiny.replace(switch_prior=np.array([0.0, 0.5]))
    with pytest.raises(ValueError, match="noise_variance"):
        tiny.replace(noise_variance=0.0)
