"""Network descriptions and presets (SPEC §2, §6): sizes, errors naming the layer, counts."""

from __future__ import annotations

import math

import pytest

from drmm_ref import drmm as D
from drmm_ref.drmm import Layer, Network


@pytest.mark.parametrize(
    "name, top, n_params",
    [("tiny", (2, 1, 1), 1 * 1 * 9 + 2 * 1 * 4 + 2 * 2),
     ("small2", (64, 4, 4), 32 * 25 + 64 * 32 * 25 + 10 * 64 * 16),
     ("conv-small", (128, 4, 4), 32 * 25 + 64 * 32 * 9 + 64 * 64 * 9 + 128 * 64 * 9 + 10 * 128 * 16),
     ("conv-small-ladder", (128, 6, 6), 32 * 25 + 64 * 32 * 9 + 64 * 64 * 9 + 128 * 64 * 9 + 10 * 128)],
)
def test_presets_sizes(name, top, n_params):
    net = D.preset(name)
    assert net.shapes[-1] == top
    assert net.n_filter_template_parameters() == n_params
    params = D.init_params(net, 0)
    assert sum(math.prod(w.shape) for w in params.filters) + math.prod(params.class_templates.shape) == n_params


def test_tiny_configuration_count_matches_spec():
    net = D.preset("tiny")
    assert [net.units(l) for l in (1, 2)] == [4, 2]
    assert net.latent_configurations() == 16_384  # SPEC §6
    assert net.latent_configurations(1) == 8 ** 4 and net.latent_configurations(2) == 2 ** 2


def test_conv_small_grid():
    net = D.preset("conv-small")
    assert net.shapes == ((1, 28, 28), (32, 14, 14), (64, 12, 12), (64, 6, 6), (128, 4, 4))
    assert net.conv_shapes[0] == (32, 28, 28)


def test_pool_not_dividing_names_layer():
    with pytest.raises(ValueError, match="layer 2"):
        Network((1, 8, 8), (Layer(2, 3, 1, 2), Layer(2, 2, 0, 2)), 2)  # layer 2 conv output 3x3, pool 2


def test_kernel_too_large_names_layer():
    with pytest.raises(ValueError, match="layer 1.*kernel 5"):
        Network((1, 3, 3), (Layer(2, 5, 0, 1),), 2)


@pytest.mark.parametrize("bad", [dict(channels=0, kernel=3), dict(channels=2, kernel=3, pool=0),
                                 dict(channels=2, kernel=3, padding=-1)])
def test_layer_rejects_bad_sizes(bad):
    with pytest.raises(ValueError):
        Layer(**bad)


def test_unknown_preset():
    with pytest.raises(ValueError, match="unknown preset"):
        D.preset("conv-large")


def test_dict_round_trip():
    for name in D.PRESETS:
        net = D.preset(name)
        assert Network.from_dict(net.to_dict()) == net


def test_preset_overrides():
    net = D.preset("conv-small", n_classes=3)
    assert net.n_classes == 3 and net.template_shape == (3, 128, 4, 4)
