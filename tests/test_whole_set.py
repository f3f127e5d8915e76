"""The DRMM's whole-set EM (SPEC §3): the chunked CGLS equals the in-memory block step on the concatenated batch.

``whole_set_block_step`` runs CGLS with parameter-space recurrences and the operator applied chunk
by chunk; ``block_step`` runs the textbook CGLS on one batch. On data that fits both they must give
the same block (float64, to rounding) for every chunk size, and the normal equations checked with
``drmm.render_vjp`` (not the CGLS code) must hold at the converged whole-set solution.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drmm_ref.drmm import Layer, Network, init_params, render, render_vjp
from drmm_ref.learning import block_names, block_step, e_step, prior_stats, reconstruction, trainable
from drmm_ref.learning._tree import gradients_tree, with_trainable
from drmm_ref.learning.whole_set import (pack_latents, unpack_latents, whole_set_block_step, whole_set_e_step,
                                         whole_set_epoch, whole_set_m_step)

from ._helpers import host

NET = Network((1, 10, 10), (Layer(3, 3, 1, 2), Layer(4, 3, 0, 1), Layer(2, 2, 0, 1)), n_classes=3, name="cg-net")


def _setup(seed, n=9):
    params = init_params(NET, seed, bias_scale=0.05)
    rng = np.random.default_rng(seed)
    images = np.asarray(rng.random((n,) + NET.image_shape))
    labels = np.asarray(rng.integers(0, NET.n_classes, size=n))
    return params, images, labels


def _close(a, b, rel=1e-9):
    a, b = host(a), host(b)
    scale = max(float(np.max(np.abs(b))), 1e-300)
    assert float(np.max(np.abs(a - b))) <= rel * scale, (float(np.max(np.abs(a - b))), scale)


@settings(max_examples=15)
@given(seed=st.integers(0, 10_000), chunk=st.integers(1, 9), k_cg=st.integers(1, 8),
       block=st.sampled_from(block_names(NET.L)), damping=st.sampled_from([0.0, 0.1]),
       latents=st.sampled_from(["stored", "recompute"]), supervised=st.booleans())
def test_whole_set_block_step_equals_the_block_step_on_the_concatenated_batch(seed, chunk, k_cg, block, damping,
                                                                               latents, supervised):
    """Same RC to rounding; the same block up to its ill-determined directions.

    Once CGLS reaches the rounding level the two recurrences may stop an iterate or two apart (the
    batch form rejects a noisy iterate as ``no_descent``, the parameter-space form may accept it):
    RC then agrees to 1e-10 (measured 5e-16 over 300 random cases), the block to 1e-6 (measured
    1.2e-8: the extra noise-level steps move it along directions that barely change the rendering).
    """
    params, images, labels = _setup(seed)
    y = labels if supervised else None
    est = e_step(params, images, y)
    ref, ref_info = block_step(params, images, render(params, est.classes, est.latents), block, k_cg=k_cg,
                               damping=damping)
    lat = whole_set_e_step(params, images, y, chunk_size=chunk, latents=latents)
    np.testing.assert_array_equal(lat.classes, host(est.classes))
    theta, info = whole_set_block_step(params, images, lat, block, k_cg=k_cg, damping=damping, chunk_size=chunk)
    if info.iterations != ref_info.iterations:
        assert {ref_info.stopped, info.stopped} & {"no_descent", "converged"}, (ref_info, info)
    m = min(info.iterations, ref_info.iterations)
    assert info.rc_before == pytest.approx(ref_info.rc_before, rel=1e-12)
    np.testing.assert_allclose(info.rc_iterates[:m], ref_info.rc_iterates[:m], rtol=1e-8)
    assert info.rc_after == pytest.approx(ref_info.rc_after, rel=1e-10)
    # the returned block's RC, by render (not the CG code)
    rc = float(reconstruction(images, render(with_trainable(params, {block: theta}), est.classes,
                                             est.latents).image)[0])
    assert rc == pytest.approx(info.rc_after, rel=1e-10)
    _close(theta, ref, rel=1e-6 if info.iterations != ref_info.iterations or k_cg > 4 else 1e-9)


@pytest.mark.parametrize("block", block_names(NET.L))
def test_converged_whole_set_step_solves_the_normal_equations(block):
    """Enough CG iterations (3x the block size: filters_2 is ill-conditioned) reach the least-squares block:
    grad RC_B (by render_vjp) vanishes there."""
    params, images, labels = _setup(3, n=7)
    lat = whole_set_e_step(params, images, labels, chunk_size=3)
    size = trainable(params)[block].size
    theta, info = whole_set_block_step(params, images, lat, block, k_cg=3 * size, chunk_size=3, tol=1e-28)
    new = with_trainable(params, {block: theta})
    est = e_step(params, images, labels)
    rendering = render(new, est.classes, est.latents)
    rc, grad_image = reconstruction(images, rendering.image)
    g = gradients_tree(render_vjp(new, rendering, grad_image), NET.L)[block]
    g0 = gradients_tree(render_vjp(params, render(params, est.classes, est.latents),
                                   reconstruction(images, render(params, est.classes, est.latents).image)[1]),
                        NET.L)[block]
    assert np.linalg.norm(host(g)) <= 1e-6 * np.linalg.norm(host(g0))
    assert float(rc) == pytest.approx(info.rc_after, rel=1e-7)


@given(seed=st.integers(0, 10_000))
def test_packed_latents_render_the_same_images(seed):
    params, images, labels = _setup(seed, n=5)
    est = e_step(params, images, labels)
    pos, sw = pack_latents(est.latents, tuple(ly.pool for ly in NET.layers))
    back = unpack_latents(pos, sw, tuple(NET.shapes[1:]), params.xp)
    for a, b in zip(back.switches, est.latents.switches):
        np.testing.assert_array_equal(host(a), host(b))
    canon = est.latents.canonical()
    for a, b in zip(back.positions, canon.positions):
        np.testing.assert_array_equal(host(a), host(b))
    np.testing.assert_array_equal(host(render(params, est.classes, back).image),
                                  host(render(params, est.classes, est.latents).image))


def test_epoch_never_raises_rc_at_fixed_latents_and_matches_the_batch_closed_forms():
    params, images, labels = _setup(11, n=12)
    est = e_step(params, images, labels)
    stats = prior_stats(est)
    new, epoch = whole_set_epoch(params, images, labels, chunk_size=5, k_cg=3)
    assert epoch.rc_e_step == pytest.approx(stats.squared_residual / (2 * stats.pixels), rel=1e-12)
    rcs = [epoch.rc_e_step] + [b.rc_after for b in epoch.blocks]
    assert all(b <= a * (1 + 1e-12) for a, b in zip(rcs, rcs[1:])), rcs
    np.testing.assert_allclose(host(new.class_prior), stats.class_prior, rtol=1e-12)
    np.testing.assert_allclose(host(new.switch_prior), stats.switch_prior, rtol=1e-12)
    # RC of the new parameters at the E-step's latents (by render) is the last block's RC
    rc = float(reconstruction(images, render(new, est.classes, est.latents).image)[0])
    assert rc == pytest.approx(epoch.rc_m_step, rel=1e-8)
    # the chunk size changes nothing but rounding
    other, _ = whole_set_epoch(params, images, labels, chunk_size=12, k_cg=3, latents="recompute")
    for a, b in zip(trainable(new).values(), trainable(other).values()):
        _close(a, b)


def test_whole_set_errors_name_the_argument():
    params, images, labels = _setup(0, n=4)
    with pytest.raises(ValueError, match="latents must be one of"):
        whole_set_e_step(params, images, latents="disk")
    with pytest.raises(ValueError, match="chunk_size must be a positive integer"):
        whole_set_e_step(params, images, chunk_size=0)
    with pytest.raises(ValueError, match="N = 0"):
        whole_set_e_step(params, images[:0])
    lat = whole_set_e_step(params, images)
    with pytest.raises(ValueError, match="latents hold 4 images"):
        whole_set_block_step(params, images[:3], lat, "filters_1")
    with pytest.raises(ValueError, match="block must be one of"):
        whole_set_block_step(params, images, lat, "filters_9")
    with pytest.raises(ValueError, match="blocks entry"):
        whole_set_m_step(params, images, lat, blocks=("nope",))
