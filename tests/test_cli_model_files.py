"""The command line with the learning-rate schedule and with either kind of model file: --lr-schedule is
validated at parse time and logged; evaluate and --init-from take a checkpoint or a parameter file."""

from __future__ import annotations

import json

import pytest

from drmm_ref.cli import main
from drmm_ref.io import load_checkpoint, save_params

SYN = ["train", "--model", "dcn", "--data", "synthetic", "--n-train", "40", "--n-eval", "20", "--batch-size", "20",
       "--no-progress"]


def _exit_code(argv):
    try:
        return main(argv)
    except SystemExit as exc:  # argparse
        return exc.code


@pytest.mark.parametrize("value,reason", [("linear", "must be 'constant'"), ("step:0:0.5", "EVERY"),
                                          ("step:1:2", "FACTOR"), ("linear-decay:-1", "START_EPOCH")])
def test_a_bad_schedule_is_one_line_naming_the_flag(capsys, tmp_path, value, reason):
    assert _exit_code(SYN + ["--epochs", "2", "--out", str(tmp_path), "--lr-schedule", value]) == 2
    err = capsys.readouterr().err.strip()
    assert "--lr-schedule" in err and reason in err and len(err.splitlines()) == 1
    assert not any(tmp_path.iterdir())


def test_a_decay_that_never_starts_names_both_flags(capsys, tmp_path):
    assert _exit_code(SYN + ["--epochs", "2", "--out", str(tmp_path / "r"), "--lr-schedule", "linear-decay:2"]) == 2
    err = capsys.readouterr().err
    assert "--epochs" in err and "--lr-schedule" in err and "START_EPOCH below epochs" in err


def test_schedule_is_logged_and_evaluate_and_init_from_take_a_parameter_file(capsys, tmp_path):
    out = tmp_path / "run"
    assert main(SYN + ["--epochs", "2", "--out", str(out), "--lr-schedule", "step:1:0.5", "--lr", "0.01"]) == 0
    log = json.loads((out / "log.json").read_text())
    assert log["config"]["lr_schedule"] == "step:1:0.5" and [e.get("lr") for e in log["epochs"]] == [None, 0.01, 0.005]
    ck = load_checkpoint(out / "checkpoints" / "epoch-002.npz")
    with_config = save_params(tmp_path / "p.npz", ck.params, metadata={"epoch": 2, "config": ck.config})
    capsys.readouterr()
    reports = []
    for path in (out / "checkpoints" / "epoch-002.npz", with_config):
        assert main(["evaluate", str(path), "--json"]) == 0
        reports.append(json.loads(capsys.readouterr().out))
    assert reports[0]["test"] == reports[1]["test"] and reports[0]["epoch"] == reports[1]["epoch"] == 2
    bare = save_params(tmp_path / "bare.npz", ck.params)
    assert _exit_code(["evaluate", str(bare)]) == 2
    assert "bare.npz: a parameter file without the training configuration" in capsys.readouterr().err
    assert main(SYN + ["--epochs", "0", "--out", str(tmp_path / "fine"), "--init-from", str(bare)]) == 0
    first = json.loads((tmp_path / "fine" / "log.json").read_text())["epochs"][0]
    assert first["test_error"] == reports[0]["test"]["error"]  # epoch 0 of the new run is the loaded model
