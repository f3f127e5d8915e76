"""The DRMM's claim, figure and benchmark scripts run and write what they promise (smoke tests)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from drmm_ref import drmm as D
from drmm_ref.io import save_params

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.validation
def test_param_count_claim_record(tmp_path):
    from validation import drmm_param_count

    record = drmm_param_count.main(["--quick", "--out", str(tmp_path)])
    assert record["status"] == "pass" and record["kind"] == "identity"
    on_disk = json.loads((tmp_path / "drmm-param-count.json").read_text())
    assert on_disk["measured"]["tiny_enumeration"]["enumerated_pairs"] == 32_768


def _figure_module():
    sys.path.insert(0, str(ROOT / "figures"))
    try:
        import fig_rendering
    finally:
        sys.path.pop(0)
    return fig_rendering


def test_figure_from_random_parameters(tmp_path):
    paths = _figure_module().main(["--quick", "--preset", "tiny", "--out", str(tmp_path)])
    assert [p.suffix for p in paths] == [".png", ".pdf"] and all(p.stat().st_size > 1000 for p in paths)


def test_figure_from_checkpoint(tmp_path):
    ckpt = save_params(tmp_path / "model.npz", D.init_params(D.preset("tiny"), 4, noise_variance=1e-3))
    paths = _figure_module().main(["--quick", "--checkpoint", str(ckpt), "--out", str(tmp_path / "fig")])
    assert all(p.exists() for p in paths)
