"""Data-parallel steps (drmm_ref.learning.parallel): shards on threads equal the one-shard step to rounding."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drmm_ref.drmm import Layer, Network, bottom_up, init_params
from drmm_ref.learning import (SGD, EGConfig, LossWeights, backprop_step, eg_step, fused_objective_and_gradients,
                               trainable)
from drmm_ref.learning.closed_forms import prior_stats
from drmm_ref.learning.estep import e_step, rendered_classes
from drmm_ref.learning.parallel import shard_slices, sharded_objective_and_gradients

from ._helpers import host

NET = Network((1, 12, 12), (Layer(3, 3, 1, 2), Layer(2, 3, 1, 1), Layer(4, 1, 0, 3)), n_classes=4, name="par-net")
WEIGHTS = [LossWeights(), LossWeights(ce=1, rc=0.5, nn=0.3, h=0.2), LossWeights(ce=0, rc=1, nn=0.5, h=0),
           LossWeights(ce=1, rc=0, nn=0, h=0),
           LossWeights(ce=0.5, rc=1, nn=1, h=0.3, h_sign="kl_to_prior", balance=0.2)]


@given(n=st.integers(1, 300), shards=st.integers(1, 9))
def test_shards_cover_the_batch_in_order_with_sizes_within_one(n, shards):
    sl = shard_slices(n, shards)
    assert len(sl) == min(n, shards) and sl[0].start == 0 and sl[-1].stop == n
    assert all(a.stop == b.start for a, b in zip(sl, sl[1:]))
    sizes = [s.stop - s.start for s in sl]
    assert min(sizes) >= 1 and max(sizes) - min(sizes) <= 1


def _problem(n=11, seed=5):
    params = init_params(NET, seed, bias_scale=0.1)
    rng = np.random.default_rng(seed)
    images = rng.standard_normal((n,) + NET.image_shape)
    labels = rng.integers(-1, NET.n_classes, size=n).astype(np.int64)  # -1: unlabelled rows
    return params, images, labels


@pytest.mark.parametrize("threads", [2, 3, 5])
@pytest.mark.parametrize("weights", WEIGHTS, ids=["default", "all", "rc-nn", "ce", "kl-balance"])
def test_sharded_objective_equals_the_whole_batch(weights, threads):
    params, images, labels = _problem()
    fw = bottom_up(params, images)
    want_t, want, _ = fused_objective_and_gradients(params, fw, rendered_classes(fw, labels), labels, weights)
    got_t, got, stats, shards = sharded_objective_and_gradients(params, images, labels, weights, threads)
    assert len(shards) == threads
    assert got_t.to_dict() == pytest.approx(want_t.to_dict(), rel=1e-12, abs=1e-15)
    assert set(got) == set(want)
    for name in want:
        np.testing.assert_allclose(host(got[name]), host(want[name]), rtol=1e-11, atol=1e-14, err_msg=name)
    whole = prior_stats(e_step(params, images, labels, render_=weights.generative))
    np.testing.assert_array_equal(stats.class_counts, whole.class_counts)
    np.testing.assert_array_equal(stats.on_counts, whole.on_counts)
    assert stats.pixels == whole.pixels and stats.squared_residual == pytest.approx(whole.squared_residual, rel=1e-12)


@pytest.mark.parametrize("model", ["eg", "backprop"])
def test_threaded_step_equals_one_thread_and_repeats_bit_for_bit(model):
    params, images, labels = _problem(n=16, seed=9)
    opt = SGD(lr=0.05)
    runs = {}
    for key, threads in (("one", 1), ("two", 2), ("two-again", 2)):
        p, state = params, opt.init(trainable(params))
        for _ in range(3):
            if model == "eg":
                p, state, tr = eg_step(p, opt, state, images, labels, EGConfig(), threads=threads)
            else:
                p, state, tr = backprop_step(p, opt, state, images, np.maximum(labels, 0), threads=threads)
        runs[key] = (trainable(p), tr)
    for name, v in runs["one"][0].items():
        np.testing.assert_allclose(host(runs["two"][0][name]), host(v), rtol=1e-10, atol=1e-13, err_msg=name)
        np.testing.assert_array_equal(host(runs["two"][0][name]), host(runs["two-again"][0][name]))
    assert runs["two"][1].terms.objective == pytest.approx(runs["one"][1].terms.objective, rel=1e-11)



@st.composite
def _nets(draw):
    """Nets of 1-3 layers (pooling 1-3, kernels 1-3, paddings 0-2, 1-4 channels), 1-3 image channels, 2-4 classes,
    constant templates or not, built bottom-up so that every pool size divides its convolution's output."""
    side0 = side = draw(st.integers(3, 12))
    layers = []
    for _ in range(draw(st.integers(1, 3))):
        q = draw(st.integers(0, 2))
        k = draw(st.integers(1, min(3, side + 2 * q)))
        conv = side + 2 * q - k + 1
        pool = draw(st.sampled_from([p for p in (1, 2, 3) if conv % p == 0]))
        layers.append(Layer(draw(st.integers(1, 4)), k, q, pool))
        side = conv // pool
        if side < 2:
            break
    return Network((draw(st.integers(1, 3)), side0, side0), tuple(layers), n_classes=draw(st.integers(2, 4)),
                   constant_templates=draw(st.booleans()), name="drawn")


@settings(max_examples=30, deadline=None)
@given(net=_nets(), seed=st.integers(0, 2**16), n=st.integers(2, 9), threads=st.integers(2, 4),
       relu=st.booleans())
def test_fused_and_sharded_passes_equal_the_plain_ones_on_drawn_nets(net, seed, n, threads, relu):
    """SPEC §2 (the CE cotangent and the templates share the layer operators) on drawn nets: the fused downward pass
    equals backward + render, and the sharded objective equals the whole-batch one, with or without relu_topdown."""
    from drmm_ref.drmm import backward, backward_and_render, render

    params = init_params(net, seed, bias_scale=0.1)
    rng = np.random.default_rng(seed)
    images = rng.standard_normal((n,) + net.image_shape)
    labels = rng.integers(-1, net.n_classes, size=n).astype(np.int64)
    fw = bottom_up(params, images)
    classes = rendered_classes(fw, labels)
    sbar = rng.standard_normal((n, net.n_classes))
    grads, rendering = backward_and_render(params, fw, sbar, classes, relu_topdown=relu)
    want_g = backward(params, fw, sbar, input_gradient=False)
    want_r = render(params, classes, fw.latents, relu_topdown=relu)
    for a, b in zip(rendering.renderings, want_r.renderings):
        np.testing.assert_allclose(host(a), host(b), rtol=0, atol=1e-12)
    for a, b in zip(grads.filters + grads.biases + (grads.class_templates, grads.class_biases),
                    want_g.filters + want_g.biases + (want_g.class_templates, want_g.class_biases)):
        np.testing.assert_allclose(host(a), host(b), rtol=1e-12, atol=1e-12)
    weights = LossWeights(ce=1, rc=1, nn=0.5, h=0.2)
    want_t, want, _ = fused_objective_and_gradients(params, fw, classes, labels, weights, relu_topdown=relu)
    got_t, got, _, _ = sharded_objective_and_gradients(params, images, labels, weights, threads, relu_topdown=relu)
    assert got_t.objective == pytest.approx(want_t.objective, rel=1e-12, abs=1e-14)
    assert set(got) == set(want)
    for name in want:
        np.testing.assert_allclose(host(got[name]), host(want[name]), rtol=1e-10, atol=1e-13, err_msg=name)
