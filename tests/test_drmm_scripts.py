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


def test_figure_takes_every_kind_of_model_file(tmp_path):
    """--checkpoint takes what `drmm-ref train` writes (epoch and mid-epoch checkpoints, also of the former
    format) as well as a parameter file: a checkpoint is a parameter file plus the training state."""
    from drmm_ref.learning import TrainConfig, latest_checkpoint, synthetic_digits, train

    net = D.Network((1, 28, 28), (D.Layer(2, 5, 0, 2), D.Layer(3, 5, 0, 2)), n_classes=10, name="tiny28")
    cfg = TrainConfig(model="drmm", net=net, epochs=1, batch_size=20, n_train=40, n_eval=20, data="synthetic",
                      monitor_size=20)
    res = train(cfg, synthetic_digits(40, 20, 20, seed=0), tmp_path / "run", progress=False, threads=1)
    legacy = Path(__file__).resolve().parent / "data" / "legacy"
    files = [latest_checkpoint(tmp_path / "run"), save_params(tmp_path / "p.npz", res.params),
             legacy / "checkpoint-v2-mid-epoch.npz", legacy / "checkpoint-v1-epoch-001.npz"]
    for i, path in enumerate(files):
        paths = _figure_module().main(["--quick", "--checkpoint", str(path), "--out", str(tmp_path / f"fig{i}")])
        assert all(p.stat().st_size > 1000 for p in paths)
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(SystemExit, match="--checkpoint: .*junk.npz"):
        _figure_module().main(["--checkpoint", str(tmp_path / "junk.npz"), "--out", str(tmp_path / "x")])
