"""The verdict logic of the em-vs-backprop-mnist claim on hand-made learning curves (both outcomes)."""

from __future__ import annotations

import pytest

from validation.em_vs_backprop_mnist import analyse


def _curve(errors, seconds_per_epoch):
    return {"epoch": list(range(len(errors))), "test_error": errors,
            "train_seconds": [seconds_per_epoch * e for e in range(len(errors))],
            "train_cpu_seconds": [seconds_per_epoch * e for e in range(len(errors))]}


def test_faster_drmm_passes_and_slower_fails():
    dcn = _curve([0.9, 0.05, 0.03, 0.02, 0.015, 0.0100], 10.0)  # E* = 1.00%, threshold 1.20%
    fast = _curve([0.9, 0.02, 0.011, 0.010, 0.010, 0.010], 10.0)  # reaches 1.2% at epoch 2 (20 s) vs DCN epoch 5
    out = analyse({"small2": {0: {"dcn": dcn, "drmm": fast}}})["small2"]
    assert out["E_star"] == pytest.approx(0.01) and out["threshold"] == pytest.approx(0.012)
    assert out["dcn"]["T_epochs"] == 5 and out["drmm"]["T_epochs"] == 2
    assert out["PASS_epochs"] and out["PASS_seconds"] and out["PASS_cpu_seconds"]
    slow = _curve([0.9, 0.02, 0.011, 0.010, 0.010, 0.010], 40.0)  # same epochs, 4x the seconds per epoch
    out = analyse({"small2": {0: {"dcn": dcn, "drmm": slow}}})["small2"]
    assert out["PASS_epochs"] and not out["PASS_seconds"]
    never = _curve([0.9, 0.5, 0.4, 0.3, 0.2, 0.1], 1.0)
    out = analyse({"small2": {0: {"dcn": dcn, "drmm": never}}})["small2"]
    assert out["drmm"]["T_seconds"] is None and not out["PASS_seconds"] and not out["PASS_epochs"]


def test_medians_and_means_over_seeds():
    d1 = _curve([0.9, 0.02, 0.010], 10.0)
    d2 = _curve([0.9, 0.03, 0.014], 10.0)  # E* = mean(1.0%, 1.4%) = 1.2%, threshold 1.4%
    m = _curve([0.9, 0.012, 0.01], 5.0)
    out = analyse({"small2": {0: {"dcn": d1, "drmm": m}, 1: {"dcn": d2, "drmm": m}}})["small2"]
    assert out["E_star"] == pytest.approx(0.012)
    assert out["dcn"]["T_epochs_per_seed"] == [2, 2] and out["drmm"]["T_epochs_per_seed"] == [1, 1]
    assert out["drmm"]["T_seconds"] == 5.0 and out["dcn"]["T_seconds"] == 20.0
