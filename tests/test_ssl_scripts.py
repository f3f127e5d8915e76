"""The ssl-mnist figure scripts run and write what they promise; the latent-variation helper varies one layer only."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from drmm_ref import drmm as D

ROOT = Path(__file__).resolve().parent.parent


def _figures(name):
    sys.path.insert(0, str(ROOT / "figures"))
    try:
        return __import__(name)
    finally:
        sys.path.pop(0)


def _record():
    table = {"100": {"dcn": {"mean": 0.2, "std": 0.02, "per_seed": [0.18, 0.2, 0.22], "n_seeds": 3},
                     "drmm-ce-rc-nn-h": {"mean": 0.1, "std": 0.01, "per_seed": [0.09, 0.1, 0.11], "n_seeds": 3}},
             "1000": {"dcn": {"mean": 0.05, "std": 0.0, "per_seed": [0.05], "n_seeds": 1}}}
    return {"mode": "full", "status": "fail",
            "measured": {"table": table, "paper_error_100": 0.0057,
                         "protocol": {"net": "conv-small", "epochs": 1, "seeds": [0, 1, 2]}}}


def test_fig_ssl_plots_a_record(tmp_path):
    paths = _figures("fig_ssl").plot(_record(), tmp_path)
    assert [p.suffix for p in paths] == [".png", ".pdf"] and all(p.stat().st_size > 1000 for p in paths)


def test_fig_ssl_adds_the_longer_budget_panel_when_the_record_has_one(tmp_path):
    record = _record()
    record["measured"]["longer_budget"] = [
        {"row": row, "n_labels": 100, "seed": 0, "epoch_numbers": [0, 1, 2, 3],
         "test_error_per_epoch": [0.9, 0.2 - d, 0.15 - d, 0.12 - d]} for row, d in (("dcn", 0.0), ("drmm-ce-rc", 0.05))]
    fig_ssl = _figures("fig_ssl")
    import matplotlib.pyplot as plt

    made = []
    real_subplots = plt.subplots
    try:
        plt.subplots = lambda *a, **k: made.append(real_subplots(*a, **k)) or made[-1]
        fig_ssl.plot(record, tmp_path)
    finally:
        plt.subplots = real_subplots
    (fig, axes), = made
    assert len(axes) == 2
    lines = {ln.get_label(): ln for ln in axes[1].get_lines()}
    assert list(lines[fig_ssl.STYLE["dcn"][2]].get_xdata()) == [1, 2, 3]  # the initial model (epoch 0) is left out
    np.testing.assert_allclose(lines[fig_ssl.STYLE["drmm-ce-rc"][2]].get_ydata(), [15.0, 10.0, 7.0])


def test_fig_rendered_latents_from_a_checkpoint_and_from_a_parameter_file(tmp_path):
    """The figure reads a training checkpoint or a save_params file with the run's config (the committed form)."""
    from drmm_ref.io import save_params
    from drmm_ref.learning import TrainConfig, latest_checkpoint, load_checkpoint, synthetic_digits, train

    fig = _figures("fig_rendered_latents")
    net = D.Network((1, 28, 28), (D.Layer(2, 5, 0, 2), D.Layer(3, 5, 0, 2)), n_classes=10, name="tiny28")
    cfg = TrainConfig(model="drmm", net=net, epochs=1, batch_size=20, n_train=40, n_eval=20, data="synthetic",
                      monitor_size=20)
    train(cfg, synthetic_digits(40, 20, 20, seed=0), tmp_path / "run", progress=False)
    ckpt_path = latest_checkpoint(tmp_path / "run")
    ckpt = load_checkpoint(ckpt_path)
    params_path = save_params(tmp_path / "params.npz", ckpt.params,
                              metadata={"run": "tiny", "epoch": ckpt.epoch, "config": ckpt.config})
    for i, path in enumerate((ckpt_path, params_path)):
        params, config, description = fig.load_model(path)
        np.testing.assert_array_equal(np.asarray(params.class_templates), np.asarray(ckpt.params.class_templates))
        assert config == ckpt.config and "epoch 1" in description
        out = tmp_path / f"out{i}"
        assert fig.main(["--checkpoint", str(path), "--out", str(out)]) == 0
        assert (out / "fig_rendered_latents.png").stat().st_size > 1000
    save_params(tmp_path / "bare.npz", ckpt.params)
    with pytest.raises(SystemExit, match="config"):
        fig.load_model(tmp_path / "bare.npz")


def test_vary_layer_redraws_one_layer_and_holds_the_others():
    fig = _figures("fig_rendered_latents")
    params = D.init_params(D.preset("small2"), 1)
    x = np.random.default_rng(0).random((1, 1, 28, 28))
    lat = D.bottom_up(params, x).latents
    for layer, kind in ((1, "positions"), (2, "switches")):
        varied = fig.vary_layer(params, lat, layer, kind, np.random.default_rng(3), 5)
        for l in range(2):
            for name in ("positions", "switches"):
                got, ref = getattr(varied, name)[l], np.repeat(getattr(lat, name)[l], 5, axis=0)
                if l == layer - 1 and name == kind:
                    assert not np.array_equal(got, ref)
                else:
                    np.testing.assert_array_equal(got, ref)
