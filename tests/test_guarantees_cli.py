"""The command lines: one line naming the flag or the file, exit status 2, no traceback; Ctrl-C says
where to resume (docs/guarantees.md)."""

from __future__ import annotations

import importlib.util
import json

import pytest

from drmm_ref import cli
from drmm_ref.cli import main

SYN = ["train", "--model", "dcn", "--data", "synthetic", "--n-train", "40", "--n-eval", "20", "--batch-size", "20",
       "--no-progress", "--epochs", "1"]
NO_CUPY = importlib.util.find_spec("cupy") is None


def _one_line_error(capsys, argv, *needles):
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse
        code = exc.code
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, (needle, err)
    return err


@pytest.mark.parametrize("flag,value,reason", [
    ("--epochs", "-1", "must be >= 0"), ("--seed", "-1", "must be >= 0"), ("--n-train", "-1", "must be >= 1"),
    ("--n-eval", "0", "must be >= 1"), ("--lr", "inf", "finite"), ("--lr", "0", "must be > 0"),
    ("--batch-size", "0", "must be >= 1"), ("--k-cg", "0", "must be >= 1"), ("--cg-eta", "1.5", "<= 1"),
    ("--momentum", "1", "< 1"), ("--a-rc", "nan", "finite"), ("--labels", "-3", "must be >= 0"),
    ("--out", "", "must name a folder"), ("--checkpoint-every-steps", "0", "must be >= 1"),
    ("--n-train", "2.5", "expected an integer"),
])
def test_bad_values_are_one_line_naming_the_flag_regression(capsys, tmp_path, flag, value, reason):
    """Regression: --epochs -1 and every other bad value printed a traceback; --seed -1 said only
    'expected non-negative integer', --n-train -1 on synthetic data 'negative dimensions'."""
    argv = [a for a in SYN]
    if flag in argv:
        i = argv.index(flag)
        del argv[i:i + 2]
    argv += [flag, value] + (["--out", str(tmp_path / "o")] if flag != "--out" else [])
    _one_line_error(capsys, argv, flag, reason)
    assert not (tmp_path / "o").exists()  # refused before anything was written


def test_out_that_is_a_file_is_refused_before_the_data_are_loaded(capsys, tmp_path, monkeypatch):
    f = tmp_path / "file"
    f.write_text("x")

    def no_data(*args, **kwargs):
        raise AssertionError("the data must not be loaded")

    monkeypatch.setattr("drmm_ref.learning.load_data", no_data)
    _one_line_error(capsys, SYN + ["--out", str(f)], "--out", "is a file")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "log.json").write_text("{}")
    _one_line_error(capsys, SYN + ["--out", str(tmp_path / "d")], "--out", "not a drmm_ref training log")


@pytest.mark.skipif(not NO_CUPY, reason="CuPy is installed here")
def test_backend_cupy_without_cupy_is_refused_before_the_data_are_loaded(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr("drmm_ref.learning.load_data", lambda *a, **k: pytest.fail("data loaded"))
    _one_line_error(capsys, SYN + ["--backend", "cupy", "--out", str(tmp_path / "o")], "--backend cupy",
                    "not installed")


def test_errors_found_later_name_the_flag_or_the_file(capsys, tmp_path):
    """--labels 15 with 10 training images; a damaged or missing checkpoint; another configuration."""
    _one_line_error(capsys, ["train", "--model", "drmm", "--data", "synthetic", "--n-train", "10", "--labels", "15",
                             "--epochs", "1", "--no-progress", "--out", str(tmp_path / "a")], "--labels", "n_labels=15")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 not a checkpoint")
    _one_line_error(capsys, ["evaluate", str(bad)], str(bad), "corrupted")
    _one_line_error(capsys, ["evaluate", str(tmp_path / "missing.npz")], "missing.npz", "no such checkpoint")
    out = tmp_path / "run"
    assert main(SYN + ["--out", str(out)]) == 0
    capsys.readouterr()
    _one_line_error(capsys, SYN + ["--out", str(out), "--lr", "0.5"], "--out", "another configuration", "['lr']")
    assert json.loads((out / "log.json").read_text())["config"]["lr"] == 0.001


def test_ctrl_c_is_one_line_saying_where_to_resume_regression(capsys, tmp_path, monkeypatch):
    """Regression: Ctrl-C printed a 35-line KeyboardInterrupt traceback."""
    out = tmp_path / "run"
    assert main(SYN + ["--out", str(out)]) == 0
    capsys.readouterr()

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("drmm_ref.learning.train", interrupted)
    code = main([a if a != "1" else "2" for a in SYN] + ["--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 130 and "Traceback" not in err and len(err.splitlines()) == 1
    assert "interrupted" in err and str(out / "checkpoints" / "epoch-001.npz") in err and "rerun" in err


def test_debug_variable_shows_the_traceback(tmp_path, monkeypatch):
    monkeypatch.setenv("DRMM_REF_DEBUG", "1")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"junk")
    from drmm_ref.learning import CheckpointError

    with pytest.raises(CheckpointError):
        main(["evaluate", str(bad)])


def test_flag_hint_maps_field_names_to_flags():
    assert cli._flag_hint("n_labels=15 leaves nothing") == "n_labels=15 leaves nothing (set by --labels)"
    assert cli._flag_hint("out of range") == "out of range"


@pytest.mark.skipif(not NO_CUPY, reason="CuPy is installed here")
def test_validation_with_an_unusable_backend_runs_nothing_and_writes_nothing_regression(tmp_path, capsys):
    """Regression: every claim was recorded as FAIL, results/quick/<id>.json overwritten, exit status 1."""
    from validation._runner import main as validation_main

    out = tmp_path / "results"
    assert validation_main(["--backend", "cupy", "--only", "adjoint-identities", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--backend cupy" in err and "no record was written" in err
    assert not out.exists()
    from validation import adjoint_identities

    with pytest.raises(SystemExit) as exc:
        adjoint_identities.main(["--backend", "cupy", "--out", str(out)])
    assert exc.value.code == 2 and not out.exists()


def test_a_closed_pipe_is_not_an_error():
    """`drmm-ref info | head -1`: the reader closing the pipe gives no error message and exit status 0."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "drmm_ref.cli", "info"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.read(1)
    proc.stdout.close()  # the reader goes away while info is still printing
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 0 and "Broken pipe" not in err and "error" not in err, err
