"""The two independent ports (ports/torch_drmm, ports/jax_drmm) pass the conformance runner.

Each is skipped where its framework is not installed. The ports live beside the package (install
with ``pip install -e ports/torch_drmm`` / ``pip install -e ports/jax_drmm``); here they are imported
from the source tree. The PyTorch port runs every case; the JAX port, whose first call per shape pays
an XLA compilation (about 3 minutes for all 211 cases on 2 shared cores), runs a subset that covers
every convention: run ``python -m drmm_ref.conformance --adapter jax_drmm.adapter:ADAPTER`` for all of them.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

from drmm_ref.conformance import load_cases, run_cases

PORTS = Path(__file__).resolve().parent.parent / "ports"

JAX_SUBSET = ["tiny/bottom_up", "tiny/ties/*", "tiny/top_down/argmax", "tiny/objective/all", "tiny/eg_step/adam",
              "tiny/block_step/filters_1", "primitives/maxpool2d/ties_pool2", "primitives/maxpool2d_vjp/ties_pool2",
              "primitives/conv2d/q_ge_k", "odd-ladder/bottom_up", "odd-q-ge-k/render", "rmm/window-padded/map_estimate",
              "rmm/window-padded/posterior"]


def _adapter(package: str):
    path = str(PORTS / package)
    if path not in sys.path:
        sys.path.insert(0, path)
    return importlib.import_module(f"{package}.adapter").ADAPTER


def _check(results):
    assert results
    bad = [(r.name, r.status, r.message, r.diagnosis) for r in results if r.status != "PASS"]
    assert not bad


def test_torch_port_passes_every_case():
    pytest.importorskip("torch")
    results = run_cases(_adapter("torch_drmm"), load_cases())
    _check(results)
    assert len(results) == len(load_cases())


@pytest.mark.slow
def test_jax_port_passes():
    pytest.importorskip("jax")
    results = run_cases(_adapter("jax_drmm"), load_cases(), only=JAX_SUBSET)
    _check(results)
    ops = {r.op for r in results}
    assert {"bottom_up", "top_down", "render", "objective", "eg_step", "block_step", "maxpool2d", "backward",
            "rmm_map_estimate", "rmm_posterior"} <= ops


def test_torch_position_conversion_round_trips():
    torch = pytest.importorskip("torch")
    _adapter("torch_drmm")
    core = importlib.import_module("torch_drmm.core")
    for p, (h, w) in ((2, (6, 8)), (3, (9, 6))):
        x = torch.randn(2, 3, h, w, dtype=torch.float64)
        values, flat = torch.nn.functional.max_pool2d(x, p, return_indices=True)
        t = core.flat_to_window(flat, p, w)
        assert int(t.min()) >= 0 and int(t.max()) < p * p
        assert torch.equal(core.window_to_flat(t, p, w), flat)
        assert torch.equal(core.select2d(x, t, p), values)
