"""The `drmm-ref train` and `drmm-ref evaluate` commands (synthetic data: no network, seconds)."""

from __future__ import annotations

import json

import pytest

from drmm_ref.cli import build_parser, main


def test_help_texts_explain_the_commands(capsys):
    for argv, words in ((["train", "--help"], ["EG", "backprop", "resumes", "--model", "--net", "--epochs", "--out"]),
                        (["evaluate", "--help"], ["checkpoint", "error"]),
                        (["--help"], ["train", "evaluate", "info"])):
        with pytest.raises(SystemExit) as exc:
            build_parser().parse_args(argv)
        assert exc.value.code == 0
        text = capsys.readouterr().out
        for w in words:
            assert w in text, (argv, w)


def test_train_requires_model_and_out(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--epochs", "1"])
    assert exc.value.code == 2
    assert "--model" in capsys.readouterr().err


def test_train_then_evaluate_then_resume(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--model", "drmm", "--net", "small2", "--epochs", "1", "--seed", "2", "--out", str(out),
            "--data", "synthetic", "--n-train", "64", "--n-eval", "40", "--batch-size", "32", "--no-progress"]
    assert main(args) == 0
    log = json.loads((out / "log.json").read_text())
    assert log["config"]["model"] == "drmm" and log["finished"] and len(log["epochs"]) == 2
    ckpt = out / "checkpoints" / "epoch-001.npz"
    assert ckpt.is_file()
    capsys.readouterr()
    assert main(["evaluate", str(ckpt), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["epoch"] == 1 and report["test"]["n"] == 40
    assert report["test"]["error"] == pytest.approx(log["epochs"][-1]["test_error"])
    # the same command with more epochs resumes from the checkpoint
    args[args.index("--epochs") + 1] = "2"
    assert main(args) == 0
    log2 = json.loads((out / "log.json").read_text())
    assert [e["epoch"] for e in log2["epochs"]] == [0, 1, 2]
    assert log2["epochs"][1] == log["epochs"][1]


def test_info_still_works(capsys):
    assert main(["info"]) == 0
    assert "drmm_ref" in capsys.readouterr().out
